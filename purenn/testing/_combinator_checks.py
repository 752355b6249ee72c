"""Checks of properties 10-12: clipping by global norm, gradient accumulation, skipping non-finite gradients."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import _treeutil
from .._step import step as pn_step
from ..optim import GradientTransformation, accumulate, apply_if_finite, clip_by_global_norm
from ._compare import default_tolerance, describe_difference

__all__ = ["check_accumulate", "check_apply_if_finite", "check_clip_by_global_norm"]


def _norm(tree: Any) -> float:
    leaves = _treeutil.tensor_leaves(tree)
    return math.sqrt(sum(float(leaf.to(torch.float64).pow(2).sum()) for leaf in leaves))


def check_clip_by_global_norm(
    max_norm: float,
    grads: Any,
    *,
    rule: GradientTransformation | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Property 10: clipping gives global norm `min(norm, max_norm)` and keeps the direction.

    With `n` the global L2 norm of `grads` (in float64), the output must be
    `grads * min(1, max_norm / n)`, leaf by leaf, to `rtol`/`atol` (default: 16 units
    in the last place of the least precise dtype, relative; the smallest normal
    number of that dtype, absolute), and its global norm `min(n, max_norm)` to `rtol`.
    Keep `n` representable in the grads' dtype (large float16 grads overflow it).

    Args:
        rule: the rule under test; default `pn.optim.clip_by_global_norm(max_norm)`.

    Raises:
        AssertionError: naming the norms, or the path and element where the direction changed.

    Example:
        >>> pn.testing.check_clip_by_global_norm(1.0, grads)
    """
    rule = clip_by_global_norm(max_norm) if rule is None else rule
    dtypes = [leaf.dtype for leaf in _treeutil.tensor_leaves(grads)] or [torch.float64]
    worst = max(dtypes, key=lambda d: torch.finfo(d).eps)
    rtol = 16 * torch.finfo(worst).eps if rtol is None else rtol
    atol = torch.finfo(worst).tiny if atol is None else atol
    out, _ = rule.update(grads, rule.init(grads), None)
    n, got = _norm(grads), _norm(out)
    want = min(n, max_norm)
    if not abs(got - want) <= atol + rtol * want:
        raise AssertionError(
            f"check_clip_by_global_norm: the output's global norm is {got!r}, expected "
            f"min(norm, max_norm) = min({n!r}, {max_norm!r}) = {want!r}"
        )
    factor = 1.0 if n <= max_norm else max_norm / n
    expected = _treeutil.tree_map(lambda g: (g.to(torch.float64) * factor).to(g.dtype), grads)
    found = describe_difference(
        out, expected, rtol=rtol, atol=atol, names=(f"grads * {factor!r}", "got")
    )
    if found is not None:
        raise AssertionError(
            f"check_clip_by_global_norm: the output is not the gradient scaled by "
            f"min(1, max_norm / norm) = {factor!r}: {found}"
        )


def check_accumulate(
    rule: GradientTransformation,
    k: int,
    params: Any,
    grads_seq: Sequence[Any],
    *,
    accumulate: Callable[[GradientTransformation, int], GradientTransformation] = accumulate,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Property 11: `accumulate(rule, k)` over k micro-steps equals one step of `rule` on their mean.

    Steps through `grads_seq` (a multiple of `k` gradient trees) with
    `accumulate(rule, k)`. After micro-steps that are not a multiple of `k` the
    params must be unchanged; after every k-th they must equal (to `rtol`/`atol`,
    default by dtype) those of `rule` stepped once per group on
    `(g_1 + ... + g_k) / k`.

    Args:
        accumulate: the combinator under test (default `pn.optim.accumulate`).

    Raises:
        AssertionError: naming the micro-step, the param path and element, and both values.

    Example:
        >>> pn.testing.check_accumulate(pn.optim.adam(1e-3), 3, params, [g1, g2, g3])
    """
    if not grads_seq or len(grads_seq) % k:
        raise ValueError(
            f"check_accumulate: grads_seq must hold a positive multiple of k={k} trees, "
            f"got {len(grads_seq)}"
        )
    default_rtol, default_atol = default_tolerance(params)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    acc = accumulate(rule, k)
    p, state = params, acc.init(params)
    p_ref, ref_state = params, rule.init(params)
    total = _treeutil.tree_map(torch.zeros_like, params)
    for i, g in enumerate(grads_seq, start=1):
        before = p
        p, state = pn_step(acc, p, g, state)
        total = _treeutil.tree_map(torch.add, total, g)
        if i % k:
            found = describe_difference(p, before, names=("before", "after"))
            if found is not None:
                raise AssertionError(
                    f"check_accumulate: micro-step {i} (not a multiple of k={k}) moved param {found}"
                )
            continue
        mean = _treeutil.tree_map(lambda s: s / k, total)
        p_ref, ref_state = pn_step(rule, p_ref, mean, ref_state)
        total = _treeutil.tree_map(torch.zeros_like, params)
        found = describe_difference(
            p, p_ref, rtol=rtol, atol=atol, names=("one step on the mean", "accumulated")
        )
        if found is not None:
            raise AssertionError(
                f"check_accumulate: after micro-step {i} (update {i // k}, k={k}) the params "
                f"differ from one step of the rule on the mean gradient, param {found}"
            )


def _plant(grads: Any, value: float) -> tuple[Any, str]:
    """`grads` with `value` at the first element of the first non-empty leaf, and where it went."""
    paths, leaves, spec = _treeutil.flatten_with_paths(grads)
    for i, (path, leaf) in enumerate(zip(paths, leaves, strict=True)):
        if isinstance(leaf, torch.Tensor) and leaf.numel() > 0:
            bad = leaf.detach().clone()
            bad.view(-1)[0] = value
            new = list(leaves)
            new[i] = bad
            return _treeutil.unflatten(spec, new), f"{value} at '{path}'"
    raise ValueError("check_apply_if_finite: grads have no element to make non-finite")


def check_apply_if_finite(
    rule: GradientTransformation,
    params: Any,
    grads: Any,
    *,
    bad_values: Sequence[float] = (math.nan, math.inf, -math.inf),
    apply_if_finite: Callable[[GradientTransformation, int], GradientTransformation] = (
        apply_if_finite
    ),
) -> None:
    """Property 12: a non-finite gradient leaves params and inner state unchanged and is counted.

    With `wrapped = apply_if_finite(rule, len(bad_values))`: one step on the finite
    `grads` (which must equal `rule`'s own step); then, for each value in
    `bad_values`, a step on `grads` with that value put in its first element, which
    must leave the params (by value) and `state.inner` (bitwise) unchanged and add 1
    to `state.notfinite_count` and `state.total_notfinite`, with `state.last_finite`
    False; then a finite step again, applied as `rule` would, resetting
    `notfinite_count` to 0. (Field names as `pn.optim.ApplyIfFiniteState`.)

    Args:
        apply_if_finite: the combinator under test (default `pn.optim.apply_if_finite`).

    Raises:
        AssertionError: naming the planted value, what changed or which count is wrong.

    Example:
        >>> pn.testing.check_apply_if_finite(pn.optim.adam(1e-3), params, grads)
    """
    wrapped = apply_if_finite(rule, len(bad_values))
    rtol, atol = default_tolerance(params)
    p, state = pn_step(wrapped, params, grads, wrapped.init(params))
    p_ref, inner_ref = pn_step(rule, params, grads, rule.init(params))
    _expect_rule_step(p, p_ref, "the first, finite gradient", rtol, atol)
    for j, value in enumerate(bad_values, start=1):
        bad, where = _plant(grads, value)
        new_p, new_state = pn_step(wrapped, p, bad, state)
        found = describe_difference(new_p, p, names=("before", "after"))
        if found is not None:
            raise AssertionError(
                f"check_apply_if_finite: a gradient with {where} moved param {found}"
            )
        found = describe_difference(
            new_state.inner, state.inner, bitwise=True, names=("before", "after")
        )
        if found is not None:
            raise AssertionError(
                f"check_apply_if_finite: a gradient with {where} changed the inner state {found}"
            )
        counts = (int(new_state.notfinite_count), int(new_state.total_notfinite))
        if counts != (j, j) or bool(new_state.last_finite):
            raise AssertionError(
                f"check_apply_if_finite: after {j} non-finite gradient(s) in a row (the last with "
                f"{where}), expected notfinite_count={j}, total_notfinite={j}, last_finite=False; "
                f"got {counts[0]}, {counts[1]}, {bool(new_state.last_finite)}"
            )
        p, state = new_p, new_state
    p, state = pn_step(wrapped, p, grads, state)
    p_ref, _ = pn_step(rule, p_ref, grads, inner_ref)
    _expect_rule_step(p, p_ref, "a finite gradient after the non-finite ones", rtol, atol)
    if int(state.notfinite_count) != 0 or int(state.total_notfinite) != len(bad_values):
        raise AssertionError(
            "check_apply_if_finite: a finite gradient must reset notfinite_count to 0 and keep "
            f"total_notfinite={len(bad_values)}; got {int(state.notfinite_count)}, "
            f"{int(state.total_notfinite)}"
        )


def _expect_rule_step(p: Any, p_ref: Any, what: str, rtol: float, atol: float) -> None:
    found = describe_difference(p, p_ref, rtol=rtol, atol=atol, names=("the rule alone", "wrapped"))
    if found is not None:
        raise AssertionError(
            f"check_apply_if_finite: {what} was not applied as the rule would, param {found}"
        )
