"""Stacking trees along a new leading axis, for ensembles under `torch.func.vmap`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import _treeutil
from .._errors import ShapeError

__all__ = ["stack", "unstack"]


def stack(trees: Sequence[Any]) -> Any:
    """One tree whose leaves are `torch.stack` of the corresponding leaves (new axis 0).

    Example:
        >>> members = [model.init(k) for k in pn.random.split(pn.random.key(0), 8)]
        >>> ensemble = pn.tree.stack(members)   # every leaf gains a leading axis of 8
        >>> ys = torch.func.vmap(model.apply, in_dims=(0, None))(ensemble, x)
    """
    trees = list(trees)
    if not trees:
        raise ValueError("pn.tree.stack needs at least one tree, got an empty sequence")
    spec = _treeutil.check_same_structure(
        trees[0], trees[1:], [f"trees[{i}]" for i in range(len(trees))]
    )
    paths, first, _ = _treeutil.flatten_with_paths(trees[0])
    columns = list(zip(*(_treeutil.flatten(t)[0] for t in trees), strict=True)) if first else []
    stacked = []
    for path, column in zip(paths, columns, strict=True):
        shapes = {tuple(leaf.shape) for leaf in column}
        if len(shapes) > 1:
            raise ShapeError(
                f"pn.tree.stack: leaf '{path}' has different shapes across trees: {sorted(shapes)}"
            )
        stacked.append(torch.stack(column))
    return _treeutil.unflatten(spec, stacked)


def unstack(tree: Any) -> list[Any]:
    """The inverse of `stack`: a list of trees, one per index of the leaves' leading axis."""
    paths, leaves, spec = _treeutil.flatten_with_paths(tree)
    if not leaves:
        raise ValueError(
            "pn.tree.unstack: the tree has no leaves, so the number of members is unknown"
        )
    sizes = {}
    for path, leaf in zip(paths, leaves, strict=True):
        if leaf.dim() == 0:
            raise ShapeError(
                f"pn.tree.unstack: leaf '{path}' is 0-d; every leaf needs a leading member axis"
            )
        sizes.setdefault(leaf.shape[0], path)
    if len(sizes) > 1:
        detail = ", ".join(f"'{p}' has {n}" for n, p in sizes.items())
        raise ShapeError(f"pn.tree.unstack: leaves disagree on the leading axis size: {detail}")
    return [
        _treeutil.unflatten(spec, list(members))
        for members in zip(*(leaf.unbind(0) for leaf in leaves), strict=True)
    ]
