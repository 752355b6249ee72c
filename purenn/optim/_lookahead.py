"""`pn.optim.lookahead`: k fast steps forward, then one step back towards slow weights (Zhang et al. 2019)."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import _treeutil
from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_rule, check_settings, check_state, need_params
from ._common import check_update_args
from ._kernel import hyperparams

__all__ = ["LookaheadState", "lookahead"]


@node
class LookaheadState:
    """State of `lookahead`.

    Fields: `count` (fast steps done, int64 0-d); `hyperparams` (`slow_step_size`, a
    float64 0-d tensor); `fast_state` (the inner rule's state); `slow` (the slow
    weights, like params). Static: `sync_period`.
    """

    count: torch.Tensor
    hyperparams: Params
    fast_state: Any
    slow: Params
    sync_period: int = attrs.field(default=1, metadata={"static": True})


def lookahead(
    rule: GradientTransformation, sync_period: int, slow_step_size: float
) -> GradientTransformation:
    """Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back").

    The params are the fast weights, moved by `rule`; every `sync_period`-th update
    the slow weights move towards them and the fast weights restart from there:

        fast <- params + rule's update
        every k-th update:  slow <- slow + slow_step_size * (fast - slow);  fast <- slow

    The update returned is `fast - params` (on sync steps `slow - params`, so the new
    params equal the slow weights up to one rounding). Unlike `optax.lookahead` the
    params stay a plain tree (the slow weights live in the state) and the fast rule's
    state is kept across syncs (optax's `reset_state=False`). Branch-free.

    Args:
        rule: the fast rule.
        sync_period: fast steps per slow step, an int >= 1 (the paper's k).
        slow_step_size: the slow weights' step, in [0, 1] (the paper's alpha).

    Example:
        >>> opt = pn.optim.lookahead(pn.optim.adam(1e-3), sync_period=5, slow_step_size=0.5)
    """
    check_rule("lookahead", rule)
    if isinstance(sync_period, bool) or not isinstance(sync_period, int) or sync_period < 1:
        raise ValueError(f"lookahead: sync_period must be an int >= 1, got {sync_period!r}")
    if not 0.0 <= slow_step_size <= 1.0:
        raise ValueError(f"lookahead: slow_step_size must be in [0, 1], got {slow_step_size}")

    def init(params: Any) -> LookaheadState:
        return LookaheadState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(slow_step_size=slow_step_size),
            fast_state=rule.init(params),
            # A copy, so that donating the params to a compiled step cannot alias the state.
            slow=_treeutil.tree_map(torch.clone, params),
            sync_period=sync_period,
        )

    def update(grads: Any, state: LookaheadState, params: Any = None) -> tuple[Any, LookaheadState]:
        check_state("lookahead", state, LookaheadState)
        check_settings("lookahead", state, sync_period=sync_period)
        need_params("lookahead", params, "the fast weights")
        check_update_args("lookahead", grads, state, params, state.slow)
        fast_updates, fast_state = rule.update(grads, state.fast_state, params)
        count = state.count + 1
        sync = torch.remainder(count, state.sync_period) == 0
        alpha = state.hyperparams["slow_step_size"]
        p_leaves, spec = _treeutil.flatten(params)
        u_leaves = _treeutil.flatten(fast_updates)[0]
        updates, slow = [], []
        for p, u, s in zip(p_leaves, u_leaves, _treeutil.flatten(state.slow)[0], strict=True):
            moved = s + alpha.to(s.dtype) * ((p + u) - s)
            at = sync.to(p.device)
            updates.append(torch.where(at, moved - p, u))
            slow.append(torch.where(at, moved, s))
        updates, slow = _treeutil.unflatten(spec, updates), _treeutil.unflatten(spec, slow)
        return updates, attrs.evolve(state, count=count, fast_state=fast_state, slow=slow)

    return GradientTransformation(init, update)
