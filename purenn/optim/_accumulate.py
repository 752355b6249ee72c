"""`pn.optim.accumulate`: gradient accumulation, k micro-steps making one step on the mean gradient."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import _treeutil
from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_rule, check_settings, check_state

__all__ = ["AccumulateState", "accumulate"]


@node
class AccumulateState:
    """State of `accumulate`.

    Fields: `count` (micro-steps taken since the last real update, int64 0-d, in
    `[0, every_k)`); `grad_sum` (the sum of their gradients, like params, or None
    when `every_k == 1`); `inner` (the inner rule's state). Static: `every_k`.
    """

    count: torch.Tensor
    grad_sum: Params | None
    inner: Any
    every_k: int = attrs.field(default=1, metadata={"static": True})


def _where(cond: torch.Tensor, new: Any, old: Any) -> Any:
    return _treeutil.tree_map(lambda n, o: torch.where(cond.to(n.device), n, o), new, old)


def accumulate(rule: GradientTransformation, every_k: int) -> GradientTransformation:
    """Accumulate gradients over `every_k` micro-steps; every k-th runs `rule` on their mean.

    Micro-steps 1 .. k-1 return zero updates and only add their gradient to
    `grad_sum`; micro-step k passes `(g_1 + ... + g_k) / k` to `rule` and returns its
    update, so k micro-steps equal one step of `rule` on the mean gradient (as
    `optax.MultiSteps`). Branch-free: every micro-step evaluates `rule` and keeps its
    result only on the k-th (`torch.where`), so a compiled step never recompiles and
    never breaks the graph; the inner work is repeated k times, which is small next
    to the forward and backward passes it accompanies. With `every_k == 1` it is
    `rule` itself plus a counter: no params-sized buffer.

    Args:
        rule: the rule to run on the mean gradient.
        every_k: micro-steps per update (an int >= 1).

    Example:
        >>> opt = pn.optim.accumulate(pn.optim.adamw(1e-3), every_k=4)
        >>> state = opt.init(params)
        >>> for micro_batch in batches:  # params change on every 4th step
        ...     params, state = pn.step(opt, params, pn.grad(loss_fn)(params, *micro_batch), state)
    """
    check_rule("accumulate", rule)
    if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"accumulate: every_k must be an int >= 1, got {every_k!r}")

    def init(params: Any) -> AccumulateState:
        return AccumulateState(
            count=torch.zeros((), dtype=torch.int64),
            grad_sum=_treeutil.tree_map(torch.zeros_like, params) if every_k > 1 else None,
            inner=rule.init(params),
            every_k=every_k,
        )

    def update(
        grads: Any, state: AccumulateState, params: Any = None
    ) -> tuple[Any, AccumulateState]:
        check_state("accumulate", state, AccumulateState)
        check_settings("accumulate", state, every_k=every_k)
        if every_k == 1:
            updates, inner = rule.update(grads, state.inner, params)
            return updates, attrs.evolve(state, inner=inner)
        total = _treeutil.tree_map(
            torch.add, state.grad_sum, grads, names=["the state's grad_sum", "grads"]
        )
        mean = _treeutil.tree_map(lambda s: s / every_k, total)
        inner_updates, new_inner = rule.update(mean, state.inner, params)
        final = state.count == every_k - 1
        updates = _treeutil.tree_map(
            lambda u: torch.where(final.to(u.device), u, 0.0), inner_updates
        )
        new_state = attrs.evolve(
            state,
            count=torch.where(final, 0, state.count + 1),
            grad_sum=_treeutil.tree_map(lambda s: torch.where(final.to(s.device), 0.0, s), total),
            inner=_where(final, new_inner, state.inner),
        )
        return updates, new_state

    return GradientTransformation(init, update)
