"""Checks of properties 7-9: zero learning rate, exact SGD, gradient-scale invariance, bounded first step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import _treeutil
from .._step import step as pn_step
from ..optim import GradientTransformation, sgd
from ._compare import default_tolerance, describe_difference, first_element
from ._problem import Grads, grads_at

__all__ = [
    "check_first_step_bounded",
    "check_scale_invariance",
    "check_sgd_exact",
    "check_zero_lr_identity",
]


def check_zero_lr_identity(
    rule_factory: Callable[..., GradientTransformation],
    params: Any,
    grads: Grads,
    *,
    steps: int = 3,
    **hyperparams: Any,
) -> None:
    """Property 7: `rule_factory(lr=0, **hyperparams)` leaves the params unchanged, step after step.

    Runs `steps` steps of `pn.step` with the rule built with `lr=0.0` (any `lr` in
    `hyperparams` is replaced) and compares the params with the start after each step,
    by value (`-0.0 == 0.0`). The gradients must be finite (`0 * inf` is NaN).

    Raises:
        AssertionError: naming the step, the param path and element, and both values.

    Example:
        >>> pn.testing.check_zero_lr_identity(pn.optim.adamw, params, grads, weight_decay=0.1)
    """
    opt = rule_factory(**{**hyperparams, "lr": 0.0})
    current, state = params, opt.init(params)
    for step in range(steps):
        current, state = pn_step(opt, current, grads_at(grads, current, step), state)
        found = describe_difference(current, params, names=("the start", "after the step"))
        if found is not None:
            raise AssertionError(
                f"check_zero_lr_identity: step {step + 1}: with lr=0 the params moved, param {found}"
            )


def check_sgd_exact(
    params: Any,
    grads: Grads,
    lr: float,
    *,
    opt: GradientTransformation | None = None,
    steps: int = 1,
) -> None:
    """Property 8: SGD without momentum or decay gives `p - lr * g` exactly (bitwise).

    `p - lr * g` is computed with torch's own arithmetic on each leaf (a Python
    float `lr`), step by step from the previous params.

    Args:
        opt: the rule under test; default `pn.optim.sgd(lr)`.

    Raises:
        AssertionError: naming the step, the param path and element, and both values.

    Example:
        >>> pn.testing.check_sgd_exact(params, grads, lr=0.1)
    """
    opt = sgd(lr) if opt is None else opt
    current, state = params, opt.init(params)
    for step in range(steps):
        g = grads_at(grads, current, step)
        expected = _treeutil.tree_map(lambda p, g: p - lr * g, current, g)
        current, state = pn_step(opt, current, g, state)
        found = describe_difference(current, expected, bitwise=True, names=("p - lr * g", "got"))
        if found is not None:
            raise AssertionError(f"check_sgd_exact: step {step + 1}: param {found}")


def check_scale_invariance(
    opt: GradientTransformation,
    params: Any,
    grads: Grads,
    *,
    scales: Sequence[float] = (0.01, 0.5, 3.0, 100.0),
    steps: int = 3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Property 9: scaling every gradient by `c > 0` leaves the updates unchanged.

    For each `c` in `scales`, two runs of `steps` updates from `opt.init(params)` (the
    params fixed): one on the gradients, one on `c` times them; their updates must
    agree to `rtol`/`atol` (default by dtype, see `check_matches_torch`). Holds for
    Adam-like rules with `eps=0` (eps breaks it by about `eps / |g|`) and no coupled
    weight decay; keep gradients away from overflow once multiplied by `c`.

    Raises:
        AssertionError: naming the scale, the step, the update path and element, and both values.

    Example:
        >>> pn.testing.check_scale_invariance(pn.optim.adam(1e-3, eps=0.0), params, grads)
    """
    default_rtol, default_atol = default_tolerance(params)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    for c in scales:
        if not c > 0:
            raise ValueError(f"check_scale_invariance: scales must be > 0, got {c}")
        state = scaled_state = opt.init(params)
        for step in range(steps):
            g = grads_at(grads, params, step)
            updates, state = opt.update(g, state, params)
            scaled_g = _treeutil.tree_map(lambda x, c=c: x * c, g)
            scaled, scaled_state = opt.update(scaled_g, scaled_state, params)
            found = describe_difference(
                scaled, updates, rtol=rtol, atol=atol, names=("with g", f"with {c:g} * g")
            )
            if found is not None:
                raise AssertionError(
                    f"check_scale_invariance: gradients scaled by {c:g}, step {step + 1}: "
                    f"update {found}"
                )


def check_first_step_bounded(
    opt: GradientTransformation,
    params: Any,
    grads: Any,
    lr: float,
    *,
    factor: float = 1.0,
) -> None:
    """Property 9: the first update moves no element by more than `factor * lr`.

    Allows a relative slack of 4 units in the last place of each leaf's dtype. Holds
    for Adam, AdamW (without decoupled decay), Adamax, Adagrad, Lion, with finite grads.

    Raises:
        AssertionError: naming the path and element and the size of the step.

    Example:
        >>> pn.testing.check_first_step_bounded(pn.optim.adam(1e-3), params, grads, lr=1e-3)
    """
    updates, _ = opt.update(grads, opt.init(params), params)
    paths, leaves, _ = _treeutil.flatten_with_paths(updates)
    for path, u in zip(paths, leaves, strict=True):
        if u.numel() == 0:
            continue
        bound = factor * lr * (1 + 4 * torch.finfo(u.dtype).eps)
        size = u.detach().abs().to(torch.float64)
        too_far = ~(size <= bound)  # NaN fails too
        if bool(too_far.any()):
            index = first_element(too_far)
            shown = f" [{', '.join(map(str, index))}]" if index else ""
            raise AssertionError(
                f"check_first_step_bounded: the first update at '{path}'{shown} is "
                f"{u[index].item()!r}, larger in size than {factor:g} * lr = {factor * lr:g}"
            )
