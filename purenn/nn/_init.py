"""torch.nn.init's distributions, drawn from an explicit `pn.random` key instead of the global RNG."""

from __future__ import annotations

import math

import torch

from .. import random as pnr

__all__ = ["fan_in_and_out", "fan_in_uniform", "xavier_normal", "xavier_uniform"]


def fan_in_and_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fans as `torch.nn.init._calculate_fan_in_and_fan_out`: dims 1 and 0 times the receptive field."""
    if len(shape) < 2:
        raise ValueError(f"fans need a tensor of at least 2 dims, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def fan_in_uniform(
    key: torch.Tensor, shape: tuple[int, ...], fan_in: int, dtype: torch.dtype
) -> torch.Tensor:
    """`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`: torch's Linear and Conv init of weight and bias.

    `kaiming_uniform_(w, a=sqrt(5))` has bound `sqrt(6 / (1 + 5)) * sqrt(3 / fan_in) / sqrt(3)`,
    which is `1/sqrt(fan_in)`; torch's bias bound is the same. Zero fan-in gives zeros.
    """
    if fan_in == 0:
        return torch.zeros(shape, dtype=dtype, device=key.device)
    bound = 1.0 / math.sqrt(fan_in)
    return pnr.uniform(key, shape, dtype=dtype, low=-bound, high=bound)


def xavier_uniform(key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """`U(-b, b)` with `b = sqrt(6 / (fan_in + fan_out))`, as `torch.nn.init.xavier_uniform_`."""
    fan_in, fan_out = fan_in_and_out(shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return pnr.uniform(key, shape, dtype=dtype, low=-bound, high=bound)


def xavier_normal(key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """`N(0, 2 / (fan_in + fan_out))`, as `torch.nn.init.xavier_normal_`."""
    fan_in, fan_out = fan_in_and_out(shape)
    return pnr.normal(key, shape, dtype=dtype, std=math.sqrt(2.0 / (fan_in + fan_out)))
