"""Dropout variants with torch's semantics whose masks come from an explicit `pn.random` key.

They consume no global RNG, give the same mask for the same key, and work under
`torch.func.vmap` with one key per member. Each takes `p` already checked to be in [0, 1].
"""

from __future__ import annotations

import math

import torch

from .. import random as pnr
from .._errors import ShapeError

__all__ = ["alpha_dropout", "dropout", "feature_alpha_dropout", "feature_dropout"]

# SELU's alpha * scale: alpha dropout keeps SELU activations at mean 0, variance 1.
_ALPHA = 1.7580993408473766


def _keep(key: torch.Tensor, p: float, shape: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    return pnr.bernoulli(key, 1.0 - p, shape).to(dtype=x.dtype, device=x.device)


def _feature_shape(x: torch.Tensor, what: str) -> tuple[int, ...]:
    # One draw per (sample, channel), broadcast over the remaining (spatial) dims.
    if x.dim() < 2:
        raise ShapeError(
            f"{what} drops whole channels of (N, C, *) inputs and needs at least 2 dims, "
            f"got shape {tuple(x.shape)}"
        )
    return (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)


def dropout(x: torch.Tensor, p: float, key: torch.Tensor) -> torch.Tensor:
    """Zero each element with probability `p` and scale the rest by `1/(1-p)`."""
    if p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return x * _keep(key, p, tuple(x.shape), x) / (1.0 - p)


def feature_dropout(x: torch.Tensor, p: float, key: torch.Tensor) -> torch.Tensor:
    """Zero whole channels of `(N, C, *)` with probability `p` (torch's `feature_dropout`)."""
    if p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return x * _keep(key, p, _feature_shape(x, "feature dropout"), x) / (1.0 - p)


def _alpha(x: torch.Tensor, p: float, keep: torch.Tensor) -> torch.Tensor:
    a = 1.0 / math.sqrt((_ALPHA * _ALPHA * p + 1.0) * (1.0 - p))
    # Dropped elements become -alpha * a + alpha * a * p, kept ones x * a + alpha * a * p.
    shift = (keep - 1.0) * (_ALPHA * a) + _ALPHA * a * p
    return x * (keep * a) + shift


def alpha_dropout(x: torch.Tensor, p: float, key: torch.Tensor) -> torch.Tensor:
    """Alpha dropout (for SELU networks), as `torch.nn.functional.alpha_dropout`."""
    if p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return _alpha(x, p, _keep(key, p, tuple(x.shape), x))


def feature_alpha_dropout(x: torch.Tensor, p: float, key: torch.Tensor) -> torch.Tensor:
    """Alpha dropout of whole channels, as `torch.nn.functional.feature_alpha_dropout`."""
    if p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return _alpha(x, p, _keep(key, p, _feature_shape(x, "feature alpha dropout"), x))
