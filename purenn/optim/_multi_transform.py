"""`pn.optim.multi_transform`: a different rule per group of leaves, groups given by labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _treeutil
from .._errors import TreeMismatchError
from .._node import node
from ._base import GradientTransformation
from ._checks import check_rule, check_state
from ._labels import LabelSpec, check_paths, resolve
from ._subset import select

__all__ = ["MultiTransformState", "multi_transform"]


@node
class MultiTransformState:
    """State of `multi_transform`.

    Fields: `inner` (a dict from each label to its rule's state, made for that label's
    params only, keyed by their paths: `state.inner["decay"].exp_avg["0.weight"]`).
    Static: `paths` (every param path, in leaf order) and `labels` (the label of each).
    """

    inner: dict[str, Any]
    paths: tuple[str, ...] = attrs.field(default=(), metadata={"static": True})
    labels: tuple[str, ...] = attrs.field(default=(), metadata={"static": True})


def multi_transform(
    transforms: Mapping[str, GradientTransformation], labels: LabelSpec
) -> GradientTransformation:
    """Apply `transforms[label]` to the leaves labelled `label`, as `optax.multi_transform`.

    Each rule sees only its own leaves (as `Params` keyed by their paths), so a rule's
    state holds nothing for the other leaves. Labels are resolved once, at `init`.

    Args:
        transforms: a mapping from label to rule.
        labels: a tree of labels with the params' paths, a function
            `params -> such a tree`, or a mapping from glob patterns on dotted paths
            to labels (`fnmatch`, where `*` also matches dots; first match wins):
            `{"*.bias": "no_decay", "*norm*": "no_decay", "*": "decay"}`.

    Raises:
        TreeMismatchError: at init, a param that no pattern matches, naming its path.
        ValueError: at init, a label without a rule, naming the label and a path.

    Example:
        >>> opt = pn.optim.multi_transform(
        ...     {"decay": pn.optim.adamw(1e-3, weight_decay=0.1), "no_decay": pn.optim.adam(1e-3)},
        ...     {"*.bias": "no_decay", "*": "decay"},
        ... )
        >>> state = opt.init(params)
        >>> state.labels  # one per param, in leaf order
        ('decay', 'no_decay', ...)
    """
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(
            f"multi_transform: transforms must be a non-empty mapping label -> rule, got {transforms!r}"
        )
    for label, rule in transforms.items():
        check_rule("multi_transform", rule, f"transforms[{label!r}]")

    def init(params: Any) -> MultiTransformState:
        paths, leaf_labels = resolve(labels, params, "multi_transform")
        for path, label in zip(paths, leaf_labels, strict=True):
            if label not in transforms:
                raise ValueError(
                    f"multi_transform: param '{path}' has label {label!r}, which has no rule in "
                    f"transforms (labels: {list(transforms)})"
                )
        leaves = _treeutil.flatten(params)[0]
        inner = {
            label: rule.init(select(paths, leaves, [lab == label for lab in leaf_labels]))
            for label, rule in transforms.items()
        }
        return MultiTransformState(inner=inner, paths=tuple(paths), labels=tuple(leaf_labels))

    def update(
        grads: Any, state: MultiTransformState, params: Any = None
    ) -> tuple[Any, MultiTransformState]:
        check_state("multi_transform", state, MultiTransformState)
        if set(state.inner) != set(transforms):
            raise TreeMismatchError(
                f"multi_transform: the state has labels {sorted(state.inner)} but the rule has "
                f"{sorted(transforms)}: pass the state from this rule's init"
            )
        paths = check_paths("multi_transform", state.paths, grads)
        g_leaves = _treeutil.flatten(grads)[0]
        p_leaves = None
        if params is not None:
            check_paths("multi_transform", state.paths, params, "params")
            p_leaves = _treeutil.flatten(params)[0]
        inner, replaced = {}, {}
        for label, rule in transforms.items():
            keep = [lab == label for lab in state.labels]
            sub_params = select(paths, p_leaves, keep) if p_leaves is not None else None
            sub_updates, inner[label] = rule.update(
                select(paths, g_leaves, keep), state.inner[label], sub_params
            )
            replaced.update(sub_updates.to_state_dict())
        updates = _treeutil.unflatten(_treeutil.structure(grads), [replaced[p] for p in paths])
        return updates, attrs.evolve(state, inner=inner)

    return GradientTransformation(init, update)
