"""Pooling layers without params: `max_pool1d/2d`, `avg_pool1d/2d`, `adaptive_avg_pool1d/2d`."""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.nn.functional as F

from .._errors import ShapeError, TreeMismatchError
from .._params import Params
from ._checks import as_tuple, input_error
from ._model import EMPTY, Model, layer_name

__all__ = [
    "AdaptiveAvgPool",
    "AvgPool",
    "MaxPool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "max_pool1d",
    "max_pool2d",
]

_SPATIAL = {1: "L", 2: "H, W"}


def _check_rank(kind: str, n: int, x: Any, path: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() not in (n + 1, n + 2):
        raise input_error(kind, path, f"input (N, C, {_SPATIAL[n]}) or (C, {_SPATIAL[n]})", x)


def _output_size(size: int, k: int, pad: int, stride: int, dilation: int, ceil: bool) -> int:
    """One spatial output size, by torch's `pooling_output_shape` (a ceil-mode window must start inside)."""
    span = size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil else 0)
    out = span // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _check_window(pool: MaxPool | AvgPool, kind: str, x: torch.Tensor, path: str) -> None:
    n = len(pool.kernel_size)
    dilation = getattr(pool, "dilation", (1,) * n)
    sizes = [
        _output_size(size, k, p, s, d, pool.ceil_mode)
        for size, k, p, s, d in zip(
            x.shape[-n:], pool.kernel_size, pool.padding, pool.stride, dilation, strict=True
        )
    ]
    if min(sizes) < 1:
        raise ShapeError(
            f"the {layer_name(kind, path)} gets input {tuple(x.shape)}, too small for its window "
            f"(kernel_size={pool.kernel_size}, stride={pool.stride}, padding={pool.padding}): "
            f"the output would have spatial size {tuple(sizes)}"
        )


class _Pool(Model):
    """Shared by the pooling layers: no params, no state."""

    def init(self, key: torch.Tensor) -> Params:
        return EMPTY

    def _no_params(self, params: Params, kind: str, path: str) -> None:
        if len(params):
            raise TreeMismatchError(
                f"the {layer_name(kind, path)} takes no params, got {list(params)}. "
                "Were these params made by another model?"
            )


@attrs.frozen
class MaxPool(_Pool):
    """Max pooling over `len(kernel_size)` spatial dims, built by `max_pool1d` or `max_pool2d`."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    return_indices: bool
    ceil_mode: bool

    def __attrs_post_init__(self) -> None:
        for k, p, d in zip(self.kernel_size, self.padding, self.dilation, strict=True):
            if p > (d * (k - 1) + 1) // 2:
                raise ValueError(
                    f"max_pool{len(self.kernel_size)}d: pad should be at most half of effective "
                    f"kernel size, but got pad={p}, kernel_size={k} and dilation={d}"
                )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        n = len(self.kernel_size)
        kind = f"max_pool{n}d layer"
        self._no_params(params, kind, path)
        _check_rank(kind, n, x, path)
        _check_window(self, kind, x, path)
        pool = F.max_pool1d if n == 1 else F.max_pool2d
        y = pool(  # type: ignore[call-overload]  # torch overloads on a literal return_indices
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )
        return y, state


@attrs.frozen
class AvgPool(_Pool):
    """Average pooling over `len(kernel_size)` spatial dims, built by `avg_pool1d` or `avg_pool2d`."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None

    def __attrs_post_init__(self) -> None:
        for k, p in zip(self.kernel_size, self.padding, strict=True):
            if p > k // 2:
                raise ValueError(
                    f"avg_pool{len(self.kernel_size)}d: pad should be at most half of effective "
                    f"kernel size, but got pad={p}, kernel_size={k} and dilation=1"
                )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        n = len(self.kernel_size)
        kind = f"avg_pool{n}d layer"
        self._no_params(params, kind, path)
        _check_rank(kind, n, x, path)
        _check_window(self, kind, x, path)
        if n == 1:
            y = F.avg_pool1d(
                x,
                self.kernel_size,
                self.stride,
                self.padding,
                self.ceil_mode,
                self.count_include_pad,
            )
        else:
            y = F.avg_pool2d(
                x,
                self.kernel_size,
                self.stride,
                self.padding,
                self.ceil_mode,
                self.count_include_pad,
                self.divisor_override,
            )
        return y, state


@attrs.frozen
class AdaptiveAvgPool(_Pool):
    """Average pooling to a fixed output size, built by `adaptive_avg_pool1d` or `adaptive_avg_pool2d`."""

    output_size: tuple[int | None, ...]

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        n = len(self.output_size)
        kind = f"adaptive_avg_pool{n}d layer"
        self._no_params(params, kind, path)
        _check_rank(kind, n, x, path)
        size: Any = self.output_size  # torch's stubs disagree on None entries
        if n == 1:
            return F.adaptive_avg_pool1d(x, size), state
        return F.adaptive_avg_pool2d(x, size), state


def _stride(kind: str, stride: Any, kernel_size: tuple[int, ...]) -> tuple[int, ...]:
    # torch: stride=None (or an empty list) means stride = kernel_size.
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel_size
    return as_tuple(kind, "stride", stride, len(kernel_size), minimum=1)


def _max_pool(
    n: int,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    return_indices: bool,
    ceil_mode: bool,
) -> MaxPool:
    kind = f"max_pool{n}d"
    kernel = as_tuple(kind, "kernel_size", kernel_size, n, minimum=1)
    return MaxPool(
        kernel_size=kernel,
        stride=_stride(kind, stride, kernel),
        padding=as_tuple(kind, "padding", padding, n, minimum=0),
        dilation=as_tuple(kind, "dilation", dilation, n, minimum=1),
        return_indices=bool(return_indices),
        ceil_mode=bool(ceil_mode),
    )


def max_pool1d(
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    dilation: int | tuple[int] = 1,
    return_indices: bool = False,
    ceil_mode: bool = False,
) -> MaxPool:
    """Max pooling over `(N, C, L)` or `(C, L)`, as `torch.nn.MaxPool1d` (stride defaults to kernel_size).

    Example:
        >>> pn.nn.max_pool1d(2).apply(pn.Params(), torch.ones(1, 3, 8)).shape
        torch.Size([1, 3, 4])
    """
    return _max_pool(1, kernel_size, stride, padding, dilation, return_indices, ceil_mode)


def max_pool2d(
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    return_indices: bool = False,
    ceil_mode: bool = False,
) -> MaxPool:
    """Max pooling over `(N, C, H, W)` or `(C, H, W)`, as `torch.nn.MaxPool2d`.

    With `return_indices=True` the output is `(values, indices)`, as torch's.

    Example:
        >>> pn.nn.max_pool2d(3, stride=2, padding=1).apply(pn.Params(), torch.ones(1, 3, 8, 8)).shape
        torch.Size([1, 3, 4, 4])
    """
    return _max_pool(2, kernel_size, stride, padding, dilation, return_indices, ceil_mode)


def avg_pool1d(
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> AvgPool:
    """Average pooling over `(N, C, L)` or `(C, L)`, as `torch.nn.AvgPool1d`.

    Example:
        >>> pn.nn.avg_pool1d(2).apply(pn.Params(), torch.ones(1, 3, 8)).shape
        torch.Size([1, 3, 4])
    """
    kernel = as_tuple("avg_pool1d", "kernel_size", kernel_size, 1, minimum=1)
    return AvgPool(
        kernel_size=kernel,
        stride=_stride("avg_pool1d", stride, kernel),
        padding=as_tuple("avg_pool1d", "padding", padding, 1, minimum=0),
        ceil_mode=bool(ceil_mode),
        count_include_pad=bool(count_include_pad),
        divisor_override=None,
    )


def avg_pool2d(
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> AvgPool:
    """Average pooling over `(N, C, H, W)` or `(C, H, W)`, as `torch.nn.AvgPool2d`.

    Example:
        >>> pn.nn.avg_pool2d(2).apply(pn.Params(), torch.ones(1, 3, 8, 8)).shape
        torch.Size([1, 3, 4, 4])
    """
    kernel = as_tuple("avg_pool2d", "kernel_size", kernel_size, 2, minimum=1)
    return AvgPool(
        kernel_size=kernel,
        stride=_stride("avg_pool2d", stride, kernel),
        padding=as_tuple("avg_pool2d", "padding", padding, 2, minimum=0),
        ceil_mode=bool(ceil_mode),
        count_include_pad=bool(count_include_pad),
        divisor_override=None
        if divisor_override is None
        else as_tuple("avg_pool2d", "divisor_override", divisor_override, 1, minimum=1)[0],
    )


def _output_size_arg(kind: str, output_size: Any, n: int) -> tuple[int | None, ...]:
    sizes = tuple(output_size) if isinstance(output_size, (list, tuple)) else (output_size,) * n
    if len(sizes) != n:
        raise ValueError(f"{kind}: output_size must be an int or {n} ints, got {output_size!r}")
    return tuple(
        None if s is None else as_tuple(kind, "output_size", s, 1, minimum=1)[0] for s in sizes
    )


def adaptive_avg_pool1d(output_size: int) -> AdaptiveAvgPool:
    """Average pooling of `(N, C, L)` to `(N, C, output_size)`, as `torch.nn.AdaptiveAvgPool1d`."""
    return AdaptiveAvgPool(_output_size_arg("adaptive_avg_pool1d", output_size, 1))


def adaptive_avg_pool2d(output_size: int | tuple[int | None, int | None]) -> AdaptiveAvgPool:
    """Average pooling of `(N, C, H, W)` to `(N, C, *output_size)`, as `torch.nn.AdaptiveAvgPool2d`.

    `None` in `output_size` keeps that input size. `adaptive_avg_pool2d(1)` is global average pooling.

    Example:
        >>> pn.nn.adaptive_avg_pool2d(1).apply(pn.Params(), torch.ones(2, 8, 5, 5)).shape
        torch.Size([2, 8, 1, 1])
    """
    return AdaptiveAvgPool(_output_size_arg("adaptive_avg_pool2d", output_size, 2))
