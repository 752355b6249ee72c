"""`pn.optim.clip` and `clip_by_global_norm`: bound each update element, or the updates' global norm."""

from __future__ import annotations

from typing import Any

import torch

from .. import _treeutil
from .._node import node
from .._params import Params
from ..tree import global_norm
from ._base import GradientTransformation
from ._checks import check_state
from ._kernel import hyperparams

__all__ = ["ClipByGlobalNormState", "ClipState", "clip", "clip_by_global_norm"]


@node
class ClipState:
    """State of `clip`: `hyperparams` (`max_delta`, a float64 0-d tensor)."""

    hyperparams: Params


@node
class ClipByGlobalNormState:
    """State of `clip_by_global_norm`: `hyperparams` (`max_norm`, a float64 0-d tensor)."""

    hyperparams: Params


def clip(value: float) -> GradientTransformation:
    """Clamp every update element to `[-value, value]`, as `optax.clip(max_delta=value)`.

    The same as `torch.nn.utils.clip_grad_value_(params, value)` on the gradients. The
    state keeps it as `hyperparams["max_delta"]` (Optax's name).

    Example:
        >>> opt = pn.optim.chain(pn.optim.clip(1.0), pn.optim.sgd(0.1))
    """
    if not 0.0 <= value:
        raise ValueError(f"clip: value must be >= 0, got {value}")

    def init(params: Any) -> ClipState:
        return ClipState(hyperparams=hyperparams(max_delta=value))

    def update(grads: Any, state: ClipState, params: Any = None) -> tuple[Any, ClipState]:
        check_state("clip", state, ClipState)
        bound = state.hyperparams["max_delta"]

        def clamp(g: torch.Tensor) -> torch.Tensor:
            b = bound.to(g.dtype)
            return torch.clamp(g, min=-b, max=b)

        return _treeutil.tree_map(clamp, grads), state

    return GradientTransformation(init, update)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale the updates so that their global L2 norm is at most `max_norm`, as `optax.clip_by_global_norm`.

    With `n = sqrt(sum_i ||u_i||^2)` over all leaves (each leaf's norm in its dtype):

        u <- u                      if n <= max_norm
        u <- u / n * max_norm       otherwise

    so a zero gradient stays zero even with `max_norm = 0` (no `0 / 0`).

    Unlike `torch.nn.utils.clip_grad_norm_` there is no `+ 1e-6` in the divisor, so the
    clipped norm is `max_norm` to rounding; branch-free (`torch.where`), so it compiles
    to one graph.

    Example:
        >>> opt = pn.optim.chain(pn.optim.clip_by_global_norm(1.0), pn.optim.adamw(1e-3))
    """
    if not 0.0 <= max_norm:
        raise ValueError(f"clip_by_global_norm: max_norm must be >= 0, got {max_norm}")

    def init(params: Any) -> ClipByGlobalNormState:
        return ClipByGlobalNormState(hyperparams=hyperparams(max_norm=max_norm))

    def update(
        grads: Any, state: ClipByGlobalNormState, params: Any = None
    ) -> tuple[Any, ClipByGlobalNormState]:
        check_state("clip_by_global_norm", state, ClipByGlobalNormState)
        limit = state.hyperparams["max_norm"]
        norm = global_norm(grads)
        keep = norm <= limit  # `<=`: n = max_norm = 0 must not divide 0 by 0

        def scale(g: torch.Tensor) -> torch.Tensor:
            return torch.where(keep, g, g / norm.to(g.dtype) * limit.to(g.dtype))

        return _treeutil.tree_map(scale, grads), state

    return GradientTransformation(init, update)
