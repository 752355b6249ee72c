"""`pn.nn.conv1d/conv2d/conv3d`: convolutions with torch.nn.ConvNd's arguments, shapes and init."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from .. import random as pnr
from .._errors import ShapeError
from .._params import Params
from ._checks import as_tuple, check_dtype, input_error, positive_int
from ._init import fan_in_uniform
from ._model import Model, layer_name, take_params

__all__ = ["Conv", "conv1d", "conv2d", "conv3d"]

_PADDING_MODES = ("circular", "reflect", "replicate", "zeros")
_SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@attrs.frozen
class Conv(Model):
    """An N-d convolution (N = len(kernel_size)), built by `conv1d`, `conv2d` or `conv3d`.

    Params: `weight` `(out_channels, in_channels // groups, *kernel_size)` and `bias`
    `(out_channels,)`, both `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` with
    `fan_in = in_channels // groups * prod(kernel_size)`, as torch.nn.ConvNd.
    Input `(N, in_channels, *spatial)` or unbatched `(in_channels, *spatial)`.
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    padding_mode: str
    dtype: torch.dtype

    def __attrs_post_init__(self) -> None:
        kind = self._kind
        if self.in_channels % self.groups != 0:
            raise ValueError(
                f"{kind}: in_channels must be divisible by groups, got in_channels="
                f"{self.in_channels} and groups={self.groups}"
            )
        if self.out_channels % self.groups != 0:
            raise ValueError(
                f"{kind}: out_channels must be divisible by groups, got out_channels="
                f"{self.out_channels} and groups={self.groups}"
            )
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ValueError(
                    f"{kind}: Invalid padding string {self.padding!r}, should be one of "
                    "['same', 'valid'] (or an int or a tuple of ints)"
                )
            if self.padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    f"{kind}: padding='same' is not supported for strided convolutions, "
                    f"got stride={self.stride}"
                )
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{kind}: padding_mode must be one of {list(_PADDING_MODES)}, "
                f"but got padding_mode={self.padding_mode!r}"
            )

    @property
    def _kind(self) -> str:
        return f"conv{len(self.kernel_size)}d"

    @property
    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def init(self, key: torch.Tensor) -> Params:
        k_weight, k_bias = pnr.split(key)
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        params = {"weight": fan_in_uniform(k_weight, self._weight_shape, fan_in, self.dtype)}
        if self.bias:
            params["bias"] = fan_in_uniform(k_bias, (self.out_channels,), fan_in, self.dtype)
        return Params(params)

    def _pads(self) -> list[tuple[int, int]]:
        """(before, after) padding per spatial dim; 'same' puts the odd element after, as torch."""
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            return [(t // 2, t - t // 2) for t in totals]
        if isinstance(self.padding, str):  # "valid"
            return [(0, 0)] * len(self.kernel_size)
        return [(p, p) for p in self.padding]

    def _check_input(self, x: Any, path: str) -> None:
        n = len(self.kernel_size)
        spatial = ", ".join(_SPATIAL_NAMES[n])
        expected = (
            f"input (N, {self.in_channels}, {spatial}) or ({self.in_channels}, {spatial}) "
            f"(in_channels={self.in_channels})"
        )
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() not in (n + 1, n + 2)
            or x.shape[-n - 1] != self.in_channels
        ):
            raise input_error(f"{self._kind} layer", path, expected, x)
        check_dtype(x, self.dtype, f"{self._kind} layer", path)
        pads = self._pads()
        for size, (before, after), k, d in zip(
            x.shape[-n:], pads, self.kernel_size, self.dilation, strict=True
        ):
            if size + before + after < d * (k - 1) + 1:
                raise ShapeError(
                    f"the {layer_name(self._kind + ' layer', path)} needs each spatial size, after padding, "
                    f"to be at least the dilated kernel size {_dilated(self)} "
                    f"(kernel_size={self.kernel_size}, dilation={self.dilation}, "
                    f"padding={self.padding}), got input {tuple(x.shape)}"
                )
            limit = size if self.padding_mode == "circular" else size - 1
            if self.padding_mode in ("reflect", "circular") and max(before, after) > limit:
                raise ShapeError(
                    f"the {layer_name(self._kind + ' layer', path)} pads with mode {self.padding_mode!r}, "
                    f"which needs padding {'<=' if self.padding_mode == 'circular' else '<'} "
                    f"each spatial size; got padding {self.padding} and input {tuple(x.shape)}"
                )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        weight, bias = take_params(
            params,
            f"{self._kind} layer",
            path,
            {"weight": self._weight_shape, "bias": (self.out_channels,) if self.bias else None},
        )
        self._check_input(x, path)
        conv = _CONV[len(self.kernel_size)]
        pads = self._pads()
        if self.padding_mode == "zeros" and all(before == after for before, after in pads):
            padding = tuple(before for before, _ in pads)
            return conv(x, weight, bias, self.stride, padding, self.dilation, self.groups), state
        # Other modes, and 'same' with uneven padding (which torch pads with a warning), pad
        # explicitly first; F.pad takes the last dim's (before, after) first.
        flat = [p for pair in reversed(pads) for p in pair]
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        padded = F.pad(x, flat, mode=mode)
        return conv(padded, weight, bias, self.stride, 0, self.dilation, self.groups), state


def _dilated(conv: Conv) -> tuple[int, ...]:
    return tuple(d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size, strict=True))


def _make(
    n: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...],
    padding: int | tuple[int, ...] | str,
    dilation: int | tuple[int, ...],
    groups: int,
    bias: bool,
    padding_mode: str,
    dtype: torch.dtype,
) -> Conv:
    kind = f"conv{n}d"
    return Conv(
        in_channels=positive_int(kind, "in_channels", in_channels),
        out_channels=positive_int(kind, "out_channels", out_channels),
        kernel_size=as_tuple(kind, "kernel_size", kernel_size, n, minimum=1),
        stride=as_tuple(kind, "stride", stride, n, minimum=1),
        padding=padding
        if isinstance(padding, str)
        else as_tuple(kind, "padding", padding, n, minimum=0),
        dilation=as_tuple(kind, "dilation", dilation, n, minimum=1),
        groups=positive_int(kind, "groups", groups),
        bias=bool(bias),
        padding_mode=padding_mode,
        dtype=dtype,
    )


def conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    *,
    dtype: torch.dtype = torch.float32,
) -> Conv:
    """A 1-d convolution over `(N, C_in, L)` or `(C_in, L)`, as `torch.nn.Conv1d` (same arguments).

    Example:
        >>> conv = pn.nn.conv1d(4, 8, 3, padding=1)
        >>> conv.apply(conv.init(pn.random.key(0)), torch.ones(2, 4, 10)).shape
        torch.Size([2, 8, 10])
    """
    return _make(
        1,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
        dtype,
    )


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    *,
    dtype: torch.dtype = torch.float32,
) -> Conv:
    """A 2-d convolution over `(N, C_in, H, W)` or `(C_in, H, W)`, as `torch.nn.Conv2d`.

    `padding` is an int, a pair, `"valid"` or `"same"` (stride 1 only); `padding_mode` is
    `"zeros"`, `"reflect"`, `"replicate"` or `"circular"`.

    Example:
        >>> conv = pn.nn.conv2d(3, 16, 3, stride=2, padding=1)
        >>> conv.apply(conv.init(pn.random.key(0)), torch.ones(8, 3, 32, 32)).shape
        torch.Size([8, 16, 16, 16])
    """
    return _make(
        2,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
        dtype,
    )


def conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int, int],
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] | str = 0,
    dilation: int | tuple[int, int, int] = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
    *,
    dtype: torch.dtype = torch.float32,
) -> Conv:
    """A 3-d convolution over `(N, C_in, D, H, W)` or `(C_in, D, H, W)`, as `torch.nn.Conv3d`.

    Example:
        >>> conv = pn.nn.conv3d(1, 2, 3)
        >>> conv.apply(conv.init(pn.random.key(0)), torch.ones(1, 1, 5, 5, 5)).shape
        torch.Size([1, 2, 3, 3, 3])
    """
    return _make(
        3,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
        dtype,
    )
