"""Shared pieces of the built-in rules: argument checks, learning rates, leaf bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import _treeutil
from .._errors import ShapeError, TreeMismatchError
from .._guard import debug_check
from .._packed import common_layout
from .._treeutil import PyTreeSpec

__all__ = [
    "check_nonnegative",
    "check_update_args",
    "float_leaves",
    "initial_lr",
    "lr_value",
    "require_params",
    "validate_lr",
]

LearningRate = float | torch.Tensor | Callable[[torch.Tensor], Any]


def validate_lr(lr: LearningRate) -> None:
    if callable(lr):
        return
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError(f"Tensor lr must be 1-element, got shape {tuple(lr.shape)}")
        lr = float(lr)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(
            f"lr must be a float, a 1-element tensor or a schedule count -> lr, got {type(lr).__name__}"
        )
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_nonnegative(name: str, value: float, label: str | None = None) -> None:
    if not 0.0 <= value:
        raise ValueError(f"Invalid {label or name} value: {value}")


def lr_value(lr: LearningRate, count: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """The learning rate for the update after `count` updates: the schedule's value, else the stored one.

    Returned as a float64 0-d tensor, so a schedule that returns a float, or a tensor
    of another dtype, gives the same numbers as torch.optim's Python floats.
    """
    if not callable(lr):
        return stored
    value = lr(count)
    return (
        value.to(torch.float64)
        if isinstance(value, torch.Tensor)
        else torch.tensor(float(value), dtype=torch.float64)
    )


def initial_lr(lr: LearningRate) -> float:
    """The learning rate recorded in a fresh state: the schedule's value at count 0."""
    if callable(lr):
        return float(lr(torch.zeros((), dtype=torch.int64)))
    return float(lr)


def float_leaves(
    rule: str, params: Any, *, no_complex: str | None = None
) -> tuple[list[str], list[torch.Tensor], PyTreeSpec]:
    """Paths, leaves and structure of `params`, rejecting non-tensor and non-float leaves.

    Complex leaves are floating-point (elementwise rules run them as real pairs, as
    torch.optim does); a rule that cannot passes `no_complex`, the reason it says.
    """
    paths, leaves, spec = _treeutil.flatten_with_paths(params)
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{rule}: param '{path}' is a {type(leaf).__name__}, not a tensor")
        if not _treeutil.is_inexact(leaf):
            raise TypeError(
                f"{rule}: param '{path}' has dtype {leaf.dtype}; update rules need floating-point "
                "params (leave integer tensors out of the trained tree)"
            )
        if no_complex is not None and leaf.is_complex():
            raise TypeError(
                f"{rule}: param '{path}' has dtype {leaf.dtype}; {rule} does not support "
                f"complex parameters ({no_complex})"
            )
    return paths, leaves, spec


def check_update_args(rule: str, grads: Any, state: Any, params: Any, like: Any) -> None:
    """Check `grads` (and `params` if given) against `like`, a params-shaped part of `state`.

    Raises TreeMismatchError or ShapeError naming the first offending path.
    """
    debug_check(grads=grads, state=state, params=params)
    if common_layout([grads, like, params]) is not None:
        return  # equal layouts: same structure, shapes, dtypes and devices, leaf for leaf
    paths, leaves, spec = _treeutil.flatten_with_paths(grads)
    like_spec = _treeutil.structure(like)
    if spec != like_spec:
        raise _treeutil.mismatch_error(
            like_spec, spec, "the optimizer state (from opt.init(params))", "grads"
        )
    for path, g, ref in zip(paths, leaves, _treeutil.flatten(like)[0], strict=True):
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"{rule}: grads '{path}' is a {type(g).__name__}, not a tensor")
        if g.shape != ref.shape:
            raise ShapeError(
                f"{rule}: grads '{path}' has shape {tuple(g.shape)} but the param has {tuple(ref.shape)}"
            )
        if g.device != ref.device:
            raise ShapeError(
                f"{rule}: grads '{path}' is on {g.device} but the param is on {ref.device}"
            )
        if g.dtype != ref.dtype:
            raise ShapeError(
                f"{rule}: grads '{path}' has dtype {g.dtype} but the param has {ref.dtype}"
            )
    if params is not None:
        params_spec = _treeutil.structure(params)
        if params_spec != spec:
            raise _treeutil.mismatch_error(spec, params_spec, "grads", "params")
        for path, p, ref in zip(
            paths, _treeutil.flatten(params)[0], _treeutil.flatten(like)[0], strict=True
        ):
            if not isinstance(p, torch.Tensor):
                continue
            # Elementwise rules would broadcast a (2, 1) param against (2,) moments.
            if p.shape != ref.shape:
                raise ShapeError(
                    f"{rule}: params '{path}' has shape {tuple(p.shape)} but its optimizer state "
                    f"has {tuple(ref.shape)}"
                )
            if p.device != ref.device:
                raise ShapeError(
                    f"{rule}: params '{path}' is on {p.device} but its optimizer state is on {ref.device}"
                )
            if p.dtype != ref.dtype:
                raise ShapeError(
                    f"{rule}: params '{path}' has dtype {p.dtype} but its optimizer state has "
                    f"{ref.dtype}"
                )


def require_params(rule: str, params: Any) -> None:
    if params is None:
        raise TreeMismatchError(
            f"{rule}: this rule needs params (for weight decay): call update(grads, state, params)"
        )
