"""Activations as plain functions of a tensor (usable directly or inside `sequential`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gelu", "log_softmax", "relu", "sigmoid", "silu", "softmax", "tanh"]


def relu(x: torch.Tensor) -> torch.Tensor:
    """`max(x, 0)` elementwise."""
    return F.relu(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Gaussian error linear unit, exact (erf) form, as `torch.nn.GELU()`."""
    return F.gelu(x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """`x * sigmoid(x)` elementwise."""
    return F.silu(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """Hyperbolic tangent elementwise."""
    return torch.tanh(x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """`1 / (1 + exp(-x))` elementwise."""
    return torch.sigmoid(x)


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """`exp(x) / sum(exp(x))` along `dim` (default: the last axis, the class axis of `(N, C)`)."""
    return torch.softmax(x, dim=dim)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """`log(softmax(x))` along `dim`, computed stably (default: the last axis)."""
    return torch.log_softmax(x, dim=dim)
