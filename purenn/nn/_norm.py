"""Normalisation over features without state: `layer_norm`, `rms_norm`, `group_norm`."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from .._params import Params
from ._checks import check_dtype, input_error, non_negative_float, positive_int
from ._model import Model, take_params

__all__ = ["GroupNorm", "LayerNorm", "RMSNorm", "group_norm", "layer_norm", "rms_norm"]


def _normalized_shape(layer: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ValueError(
            f"{layer}: normalized_shape must be an int or a non-empty sequence of ints, got {value!r}"
        )
    return tuple(positive_int(layer, "normalized_shape", v) for v in value)


def _check_trailing(
    kind: str, shape: tuple[int, ...], x: Any, dtype: torch.dtype, path: str
) -> None:
    if (
        not isinstance(x, torch.Tensor)
        or x.dim() < len(shape)
        or tuple(x.shape[x.dim() - len(shape) :]) != shape
    ):
        dims = ", ".join(map(str, shape))
        raise input_error(kind, path, f"input (..., {dims}) (normalized_shape={shape})", x)
    check_dtype(x, dtype, kind, path)


@attrs.frozen
class LayerNorm(Model):
    """Normalise the trailing `normalized_shape` dims to mean 0, variance 1, then scale and shift.

    Params (with `elementwise_affine`): `weight` (ones) and `bias` (zeros, unless `bias=False`),
    both of shape `normalized_shape`, as torch.nn.LayerNorm.
    """

    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool
    bias: bool
    dtype: torch.dtype

    def _expected(self) -> dict[str, tuple[int, ...] | None]:
        affine = self.elementwise_affine
        return {
            "weight": self.normalized_shape if affine else None,
            "bias": self.normalized_shape if affine and self.bias else None,
        }

    def init(self, key: torch.Tensor) -> Params:
        fill = {"weight": torch.ones, "bias": torch.zeros}
        return Params(
            {
                name: fill[name](shape, dtype=self.dtype, device=key.device)
                for name, shape in self._expected().items()
                if shape is not None
            }
        )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        weight, bias = take_params(params, "layer_norm layer", path, self._expected())
        _check_trailing("layer_norm layer", self.normalized_shape, x, self.dtype, path)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps), state


def layer_norm(
    normalized_shape: int | Sequence[int],
    eps: float = 1e-5,
    elementwise_affine: bool = True,
    bias: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
) -> LayerNorm:
    """Layer normalisation over the trailing dims, as `torch.nn.LayerNorm` (same arguments).

    `y = (x - mean) / sqrt(var + eps) * weight + bias`, statistics over `normalized_shape`.

    Example:
        >>> norm = pn.nn.layer_norm(16)
        >>> norm.apply(norm.init(pn.random.key(0)), torch.randn(4, 10, 16)).shape
        torch.Size([4, 10, 16])
    """
    return LayerNorm(
        _normalized_shape("layer_norm", normalized_shape),
        non_negative_float("layer_norm", "eps", eps),
        bool(elementwise_affine),
        bool(bias),
        dtype,
    )


@attrs.frozen
class RMSNorm(Model):
    """Divide by the root mean square over the trailing `normalized_shape` dims, then scale.

    Param (with `elementwise_affine`): `weight` of shape `normalized_shape` (ones), as torch.nn.RMSNorm.
    """

    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool
    dtype: torch.dtype

    def init(self, key: torch.Tensor) -> Params:
        if not self.elementwise_affine:
            return Params()
        return Params(
            {"weight": torch.ones(self.normalized_shape, dtype=self.dtype, device=key.device)}
        )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        shape = self.normalized_shape if self.elementwise_affine else None
        (weight,) = take_params(params, "rms_norm layer", path, {"weight": shape})
        _check_trailing("rms_norm layer", self.normalized_shape, x, self.dtype, path)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps), state


def rms_norm(
    normalized_shape: int | Sequence[int],
    eps: float | None = None,
    elementwise_affine: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
) -> RMSNorm:
    """RMS normalisation over the trailing dims, as `torch.nn.RMSNorm` (same arguments).

    `y = x / sqrt(mean(x**2) + eps) * weight`; `eps=None` uses `torch.finfo(x.dtype).eps`.

    Example:
        >>> norm = pn.nn.rms_norm(16)
        >>> norm.apply(norm.init(pn.random.key(0)), torch.randn(4, 16)).shape
        torch.Size([4, 16])
    """
    return RMSNorm(
        _normalized_shape("rms_norm", normalized_shape),
        None if eps is None else non_negative_float("rms_norm", "eps", eps),
        bool(elementwise_affine),
        dtype,
    )


@attrs.frozen
class GroupNorm(Model):
    """Normalise `(N, C, *)` over groups of `C // num_groups` channels and the spatial dims.

    Params (with `affine`): `weight` (ones) and `bias` (zeros) of shape `(num_channels,)`,
    as torch.nn.GroupNorm.
    """

    num_groups: int
    num_channels: int
    eps: float
    affine: bool
    dtype: torch.dtype

    def __attrs_post_init__(self) -> None:
        if self.num_channels % self.num_groups != 0:
            raise ValueError(
                f"group_norm: num_channels must be divisible by num_groups, got num_channels="
                f"{self.num_channels} and num_groups={self.num_groups}"
            )

    def init(self, key: torch.Tensor) -> Params:
        if not self.affine:
            return Params()
        shape = (self.num_channels,)
        return Params(
            {
                "weight": torch.ones(shape, dtype=self.dtype, device=key.device),
                "bias": torch.zeros(shape, dtype=self.dtype, device=key.device),
            }
        )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        shape = (self.num_channels,) if self.affine else None
        weight, bias = take_params(
            params, "group_norm layer", path, {"weight": shape, "bias": shape}
        )
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[1] != self.num_channels:
            c = self.num_channels
            raise input_error("group_norm layer", path, f"input (N, {c}, *) (num_channels={c})", x)
        check_dtype(x, self.dtype, "group_norm layer", path)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps), state


def group_norm(
    num_groups: int,
    num_channels: int,
    eps: float = 1e-5,
    affine: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
) -> GroupNorm:
    """Group normalisation of `(N, C, *)`, as `torch.nn.GroupNorm` (same arguments).

    Needs no running statistics, so it is a stateless alternative to `batch_norm`.

    Example:
        >>> norm = pn.nn.group_norm(4, 16)
        >>> norm.apply(norm.init(pn.random.key(0)), torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """
    return GroupNorm(
        positive_int("group_norm", "num_groups", num_groups),
        positive_int("group_norm", "num_channels", num_channels),
        non_negative_float("group_norm", "eps", eps),
        bool(affine),
        dtype,
    )
