"""Sub-trees by path: some leaves of a tree as `Params` keyed by their dotted paths, and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _treeutil
from .._params import Params

__all__ = ["merge", "select"]


def select(paths: Sequence[str], leaves: Sequence[Any], keep: Sequence[bool]) -> Params:
    """The kept leaves as nested `Params` with the same paths (empty sub-trees dropped).

    Example: paths `["0.weight", "0.bias"]`, keep `[True, False]` ->
    `Params({"0": {"weight": w}})`.
    """
    if any(path == "" for path in paths):
        raise TypeError(
            "a tree whose root is a single tensor has no paths to select by: "
            "wrap it, e.g. pn.Params({'w': tensor})"
        )
    return Params.from_state_dict(
        {path: leaf for path, leaf, k in zip(paths, leaves, keep, strict=True) if k}
    )


def merge(tree: Any, sub: Params) -> Any:
    """`tree` with each leaf that `sub` has (at the same path) replaced by `sub`'s."""
    paths, leaves, spec = _treeutil.flatten_with_paths(tree)
    replaced = sub.to_state_dict()
    return _treeutil.unflatten(
        spec, [replaced.get(p, leaf) for p, leaf in zip(paths, leaves, strict=True)]
    )
