"""The default problem the checks run on: a small params tree and a state-dependent gradient."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import torch

from .. import _treeutil
from .._params import Params

__all__ = ["GradFn", "Grads", "default_gradient", "default_params", "grads_at"]

GradFn: TypeAlias = Callable[[Any, int], Any]
# A gradient tree used at every step, or `grad_fn(params, step) -> gradient tree`.
Grads: TypeAlias = Any


def default_params(dtype: torch.dtype = torch.float64, seed: int = 0) -> Params:
    """Four leaves, nested, with a matrix, a vector, a 3-d tensor and a 0-d scalar; N(0, 1) values."""
    g = torch.Generator().manual_seed(seed)
    return Params(
        {
            "0": {
                "weight": torch.randn(4, 3, generator=g, dtype=torch.float64).to(dtype),
                "bias": torch.randn(4, generator=g, dtype=torch.float64).to(dtype),
            },
            "1": {"weight": torch.randn(2, 2, 2, generator=g, dtype=torch.float64).to(dtype)},
            "scale": torch.randn((), generator=g, dtype=torch.float64).to(dtype),
        }
    )


def default_gradient(params: Any, step: int) -> Any:
    """`sin(3 p) + 0.3 p + 0.1 cos(step)` per leaf: it depends on the params, so errors feed back."""
    return _treeutil.tree_map(lambda p: torch.sin(3.0 * p) + 0.3 * p + 0.1 * math.cos(step), params)


def grads_at(grads: Grads, params: Any, step: int) -> Any:
    """The gradient for `step` (from 0): `grads(params, step)` if callable, else `grads` itself."""
    return grads(params, step) if callable(grads) else grads
