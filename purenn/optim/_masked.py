"""`pn.optim.masked` and `freeze`: run a rule on some leaves only; pass or zero the others."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import _treeutil
from .._node import node
from ._base import EmptyState, GradientTransformation
from ._checks import check_rule, check_state
from ._labels import LabelSpec, check_paths, resolve
from ._subset import merge, select

__all__ = ["MaskedState", "freeze", "masked"]


@node
class MaskedState:
    """State of `masked` (and `freeze`).

    Fields: `inner` (the inner rule's state, made for the masked-in params only, as
    `Params` keyed by their paths). Static: `paths` (every param path, in leaf order)
    and `mask` (whether each of them goes through the inner rule).
    """

    inner: Any
    paths: tuple[str, ...] = attrs.field(default=(), metadata={"static": True})
    mask: tuple[bool, ...] = attrs.field(default=(), metadata={"static": True})


def masked(rule: GradientTransformation, mask: LabelSpec) -> GradientTransformation:
    """Apply `rule` to the leaves where `mask` is True; other leaves' updates pass through unchanged.

    As `optax.masked`. The inner rule sees only the masked-in leaves (as `Params`
    keyed by their paths), so its state holds nothing for the others. The mask is
    resolved once, at `init`.

    Args:
        rule: the rule for the masked-in leaves.
        mask: a tree of bools with the params' paths (e.g. `pn.tree.map(lambda p: p.ndim > 1, params)`),
            a function `params -> such a tree`, or a mapping from glob patterns on dotted
            paths to bools (`{"*.bias": False, "*": True}`, first match wins).

    Example:
        >>> decay = pn.optim.masked(pn.optim.add_decayed_weights(0.01), lambda p: pn.tree.map(lambda x: x.ndim > 1, p))
        >>> opt = pn.optim.chain(decay, pn.optim.sgd(0.1))
    """
    check_rule("masked", rule)

    def init(params: Any) -> MaskedState:
        paths, labels = resolve(mask, params, "masked", kind="mask")
        leaves = _treeutil.flatten(params)[0]
        return MaskedState(
            inner=rule.init(select(paths, leaves, labels)), paths=tuple(paths), mask=tuple(labels)
        )

    def update(grads: Any, state: MaskedState, params: Any = None) -> tuple[Any, MaskedState]:
        check_state("masked", state, MaskedState)
        paths = check_paths("masked", state.paths, grads)
        sub_params = None
        if params is not None:
            check_paths("masked", state.paths, params, "params")
            sub_params = select(paths, _treeutil.flatten(params)[0], state.mask)
        sub_grads = select(paths, _treeutil.flatten(grads)[0], state.mask)
        sub_updates, inner = rule.update(sub_grads, state.inner, sub_params)
        return merge(grads, sub_updates), attrs.evolve(state, inner=inner)

    return GradientTransformation(init, update)


def _zero_updates() -> GradientTransformation:
    def init(params: Any) -> EmptyState:
        return EmptyState()

    def update(grads: Any, state: EmptyState, params: Any = None) -> tuple[Any, EmptyState]:
        return _treeutil.tree_map(torch.zeros_like, grads), state

    return GradientTransformation(init, update)


def freeze(mask: LabelSpec) -> GradientTransformation:
    """Zero the updates of the leaves where `mask` is True (frozen); pass the others through.

    Put it last in a chain so that frozen params do not move at all (a rule before it
    may still decay them or keep momentum for them); `mask` is as for `masked`.

    Example:
        >>> opt = pn.optim.chain(pn.optim.adamw(1e-3), pn.optim.freeze({"encoder.*": True, "*": False}))
    """
    return masked(_zero_updates(), mask)
