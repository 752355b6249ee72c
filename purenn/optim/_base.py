"""The update-rule interface: `GradientTransformation(init, update)` and `EmptyState`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import torch

from .._node import node

__all__ = ["EmptyState", "GradientTransformation", "InitFn", "Schedule", "UpdateFn"]

Schedule = Callable[[torch.Tensor], "torch.Tensor | float"]


class InitFn(Protocol):
    def __call__(self, params: Any) -> Any: ...


class UpdateFn(Protocol):
    def __call__(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any]: ...


@attrs.frozen
class GradientTransformation:
    """An update rule as a pair of pure functions.

    `init(params) -> state` makes the rule's state; `update(grads, state, params)
    -> (updates, new_state)` turns gradients into updates, which
    `pn.apply_updates(params, updates)` adds to the params. Neither function
    modifies its arguments. Build your own rule by passing two functions.

    Example:
        >>> def init(params):
        ...     return pn.optim.EmptyState()
        >>> def update(grads, state, params=None):
        ...     return pn.tree.scale(grads, -0.1), state
        >>> plain_sgd = pn.optim.GradientTransformation(init, update)
    """

    init: InitFn
    update: UpdateFn

    def __iter__(self) -> Iterator[InitFn | UpdateFn]:
        """Unpack like Optax's pair: `init, update = rule`."""
        return iter((self.init, self.update))


@node
class EmptyState:
    """The state of a rule that keeps none (e.g. plain SGD); a tree node with no leaves.

    All instances are equal (nodes with tensor fields have no `==`; this one has no fields).
    """

    def __eq__(self, other: object) -> bool:
        return type(other) is EmptyState

    def __hash__(self) -> int:
        return hash(EmptyState)
