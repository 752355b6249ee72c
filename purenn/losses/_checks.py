"""Argument validation shared by the losses: shapes and dtypes only, never tensor values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from purenn._errors import ShapeError

Reduction = Literal["mean", "sum", "none"]


def fmt_shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def check_reduction(fn: str, reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def check_positive(fn: str, name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{fn}: {name} must be > 0; got {value!r}")


def check_unit_interval(fn: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{fn}: {name} must be in [0, 1]; got {value!r}")


def check_tensor(fn: str, name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor; got {type(x).__name__}")


def check_float(fn: str, name: str, x: Tensor) -> None:
    check_tensor(fn, name, x)
    if not x.is_floating_point():
        raise ShapeError(f"{fn}: {name} must have a floating-point dtype; got {x.dtype}")


def is_integer(x: Tensor) -> bool:
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def check_same_shape(fn: str, input: Tensor, target: Tensor) -> None:
    """Regression losses: torch broadcasts mismatched shapes with only a warning; refuse instead."""
    check_float(fn, "input", input)
    check_float(fn, "target", target)
    if target.shape == input.shape:
        return
    try:
        broadcast = torch.broadcast_shapes(input.shape, target.shape)
        note = f" (torch would broadcast both to {fmt_shape(broadcast)})"
    except RuntimeError:
        note = ""
    raise ShapeError(
        f"{fn}: target has shape {fmt_shape(target.shape)} but input has shape "
        f"{fmt_shape(input.shape)}; they must be equal{note}"
    )


def check_broadcasts_to(fn: str, name: str, x: Tensor | None, input: Tensor) -> None:
    """`x` may broadcast against `input` only if the result keeps `input`'s shape."""
    if x is None:
        return
    check_float(fn, name, x)
    try:
        ok = torch.broadcast_shapes(x.shape, input.shape) == input.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ShapeError(
            f"{fn}: {name} has shape {fmt_shape(x.shape)}, which does not broadcast to "
            f"input's shape {fmt_shape(input.shape)}"
        )


def layout(ndim: int) -> str:
    if ndim == 1:
        return "[C]"
    return "[" + ", ".join(["N", "C", *(f"d{i}" for i in range(1, ndim - 1))]) + "]"


def check_class_input(fn: str, input: Tensor, weight: Tensor | None) -> tuple[int, ...]:
    """Validate `input` of layout [C] or [N, C, d1, ...] and `weight` of shape (C,).

    Returns the shape a tensor of class indices must have.
    """
    check_float(fn, "input", input)
    if input.ndim == 0:
        raise ShapeError(
            f"{fn}: input must have shape [C], [N, C] or [N, C, d1, ...]; got a 0-dimensional tensor"
        )
    classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    if weight is not None:
        check_float(fn, "weight", weight)
        if weight.shape != (classes,):
            raise ShapeError(
                f"{fn}: weight has shape {fmt_shape(weight.shape)} but input has shape "
                f"{fmt_shape(input.shape)} ({layout(input.ndim)}) with C={classes}; "
                f"expected weight shape ({classes},)"
            )
    return () if input.ndim == 1 else (input.shape[0], *input.shape[2:])
