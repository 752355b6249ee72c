"""`pn.optim.chain`: compose update rules, each transforming the previous one's updates."""

from __future__ import annotations

from typing import Any

from .._errors import StateError
from ._base import GradientTransformation

__all__ = ["chain"]


def chain(*rules: GradientTransformation) -> GradientTransformation:
    """Apply `rules` in order: each rule's updates are the next rule's input gradients.

    The state is a tuple of the rules' states, in order.

    Example:
        >>> opt = pn.optim.chain(pn.optim.clip_by_global_norm(1.0), pn.optim.adam(1e-3))
    """
    for i, rule in enumerate(rules):
        if not isinstance(rule, GradientTransformation):
            raise TypeError(
                f"chain: rule {i} must be a GradientTransformation, got {type(rule).__name__}"
            )

    def init(params: Any) -> tuple[Any, ...]:
        return tuple(rule.init(params) for rule in rules)

    def update(
        grads: Any, state: tuple[Any, ...], params: Any = None
    ) -> tuple[Any, tuple[Any, ...]]:
        if not isinstance(state, tuple) or len(state) != len(rules):
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise StateError(
                f"chain of {len(rules)} rules: state must be the tuple from its init, got {got}"
            )
        new_states = []
        for rule, rule_state in zip(rules, state, strict=True):
            grads, rule_state = rule.update(grads, rule_state, params)
            new_states.append(rule_state)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)
