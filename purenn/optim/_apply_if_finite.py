"""`pn.optim.apply_if_finite`: skip updates whose gradients hold NaN or inf, and count them."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import _treeutil
from .._node import node
from ._base import GradientTransformation
from ._checks import check_rule, check_state

__all__ = ["ApplyIfFiniteState", "apply_if_finite"]


@node
class ApplyIfFiniteState:
    """State of `apply_if_finite`.

    Fields: `notfinite_count` (consecutive updates with a non-finite gradient, int64
    0-d); `last_finite` (whether the last gradient was finite, bool 0-d);
    `total_notfinite` (all non-finite gradients so far, int64 0-d); `inner` (the inner
    rule's state).
    """

    notfinite_count: torch.Tensor
    last_finite: torch.Tensor
    total_notfinite: torch.Tensor
    inner: Any


def _all_finite(tree: Any) -> torch.Tensor:
    """Whether every element of every leaf is finite, as a CPU bool 0-d tensor (one device sync)."""
    leaves = _treeutil.tensor_leaves(tree)
    if not leaves:
        return torch.ones((), dtype=torch.bool)
    device = leaves[0].device
    flags = torch.stack([torch.isfinite(leaf).all().to(device) for leaf in leaves])
    return flags.all().cpu()


def _where(cond: torch.Tensor, new: Any, old: Any) -> Any:
    return _treeutil.tree_map(lambda n, o: torch.where(cond.to(n.device), n, o), new, old)


def apply_if_finite(
    rule: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """Run `rule` only on finite gradients, as `optax.apply_if_finite`.

    If any gradient element is NaN or infinite, the update is zero and the inner state
    stays as it was (so params and moments are untouched), and the error is counted.
    After more than `max_consecutive_errors` non-finite gradients in a row, the update
    is applied anyway (and may well be NaN): a run that only ever produces NaN should
    fail visibly, not stall silently. Branch-free (`torch.where`), so it compiles to
    one graph; the inner rule runs every time and its result is discarded when
    rejected.

    Args:
        rule: the rule to protect.
        max_consecutive_errors: how many non-finite gradients in a row to skip (int >= 0).

    Example:
        >>> opt = pn.optim.apply_if_finite(pn.optim.adam(1e-3), max_consecutive_errors=5)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
        >>> int(state.total_notfinite)  # how many updates were skipped so far
        0
    """
    check_rule("apply_if_finite", rule)
    if (
        isinstance(max_consecutive_errors, bool)
        or not isinstance(max_consecutive_errors, int)
        or max_consecutive_errors < 0
    ):
        raise ValueError(
            "apply_if_finite: max_consecutive_errors must be an int >= 0, "
            f"got {max_consecutive_errors!r}"
        )

    def init(params: Any) -> ApplyIfFiniteState:
        return ApplyIfFiniteState(
            notfinite_count=torch.zeros((), dtype=torch.int64),
            last_finite=torch.ones((), dtype=torch.bool),
            total_notfinite=torch.zeros((), dtype=torch.int64),
            inner=rule.init(params),
        )

    def update(
        grads: Any, state: ApplyIfFiniteState, params: Any = None
    ) -> tuple[Any, ApplyIfFiniteState]:
        check_state("apply_if_finite", state, ApplyIfFiniteState)
        finite = _all_finite(grads)
        notfinite_count = torch.where(finite, 0, state.notfinite_count + 1)
        apply = torch.logical_or(finite, notfinite_count > max_consecutive_errors)
        inner_updates, new_inner = rule.update(grads, state.inner, params)
        updates = _treeutil.tree_map(
            lambda u: torch.where(apply.to(u.device), u, 0.0), inner_updates
        )
        inner = _where(apply, new_inner, state.inner)
        return updates, attrs.evolve(
            state,
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=state.total_notfinite + torch.logical_not(finite).to(torch.int64),
            inner=inner,
        )

    return GradientTransformation(init, update)
