"""Structural tree functions: map, flatten/unflatten, paths, set, zeros_like."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch

from .. import _treeutil
from .._errors import ShapeError
from .._params import Params
from .._treeutil import PyTreeSpec

__all__ = [
    "flatten",
    "leaves",
    "paths",
    "set_leaf",
    "structure",
    "tree_map",
    "unflatten",
    "zeros_like",
]


def tree_map(f: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply `f` leaf-wise over `tree` and trees of the same structure, returning a new tree.

    Raises:
        TreeMismatchError: if a tree in `rest` differs in structure, naming the first differing path.

    Example:
        >>> doubled = pn.tree.map(lambda w: 2 * w, params)
        >>> moved = pn.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    """
    return _treeutil.tree_map(
        f, tree, *rest, names=["tree"] + [f"rest[{i}]" for i in range(len(rest))]
    )


def leaves(tree: Any) -> list[Any]:
    """The leaves of `tree` in order (the order of `paths`)."""
    return _treeutil.flatten(tree)[0]


def flatten(tree: Any) -> tuple[list[Any], PyTreeSpec]:
    """`(leaves, treedef)`; `unflatten(treedef, leaves)` rebuilds the tree."""
    return _treeutil.flatten(tree)


def unflatten(treedef: PyTreeSpec, leaves: list[Any]) -> Any:
    """Rebuild a tree from a `treedef` (from `flatten`/`structure`) and its leaves in order."""
    if not isinstance(treedef, PyTreeSpec):
        raise TypeError(
            f"unflatten(treedef, leaves): treedef must come from pn.tree.flatten, got {type(treedef).__name__}"
        )
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(
            f"unflatten: the treedef has {treedef.num_leaves} leaves but {len(leaves)} were given"
        )
    return _treeutil.unflatten(treedef, leaves)


def paths(tree: Any) -> list[str]:
    """Dotted path of every leaf, in leaf order: `['0.weight', '0.bias', ...]`."""
    return _treeutil.flatten_with_paths(tree)[0]


def structure(tree: Any) -> PyTreeSpec:
    """The tree's structure (node types and keys, not leaves); equal structures compare equal."""
    return _treeutil.structure(tree)


def zeros_like(tree: Any) -> Any:
    """A tree of the same structure with `torch.zeros_like` of every leaf."""
    return _treeutil.tree_map(torch.zeros_like, tree)


def set_leaf(tree: Any, path: str, value: Any) -> Any:
    """A new tree equal to `tree` except that the leaf (or subtree) at dotted `path` is `value`.

    Works through `Params`, purenn state nodes, dicts, lists and tuples. Like item
    assignment, a new last key adds an entry to a `Params`, except inside a state
    node (an optimizer or model state): there an added entry would be silently
    ignored (a misspelt `"hyperparams.lrr"` would leave the lr as it was), so the
    path must exist. The original tree is not changed.

    Raises:
        KeyError: a part of `path` names no entry (any part but a Params' last one
            outside a state), listing the entries there.

    Example:
        >>> p2 = pn.tree.set(params, "0.bias", torch.zeros(256))
    """
    if not isinstance(path, str) or not path:
        raise TypeError(f"pn.tree.set: path must be a non-empty dotted string, got {path!r}")
    return _set(tree, path.split("."), value, path, 0, in_state=False)


def _state_leaf(old: Any, value: Any, path: str) -> Any:
    """`value` for a state's tensor leaf `old`: a number becomes a tensor like `old`; a tensor must match it.

    A state's leaves keep their shape and dtype: a 3-element "lr" would silently become
    per-element rates, a float32 one would change the compiled step's inputs.
    """
    if not isinstance(old, torch.Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and old.dim() == 0:
        if not _treeutil.is_inexact(old) and value != int(value):
            raise TypeError(
                f"pn.tree.set: state leaf {path!r} is {old.dtype}; {value!r} is not an integer"
            )
        return torch.tensor(value, dtype=old.dtype, device=old.device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"pn.tree.set: state leaf {path!r} is a tensor ({tuple(old.shape)}, {old.dtype}); "
            f"got a {type(value).__name__}"
        )
    if (value.shape, value.dtype, value.device) != (old.shape, old.dtype, old.device):
        raise ShapeError(
            f"pn.tree.set: state leaf {path!r} is {tuple(old.shape)} {old.dtype} on {old.device}, "
            f"got {tuple(value.shape)} {value.dtype} on {value.device}; a state keeps each leaf's "
            f"shape, dtype and device (e.g. torch.tensor(1e-4, dtype={old.dtype}))"
        )
    return value


def _set(node: Any, parts: list[str], value: Any, path: str, depth: int, in_state: bool) -> Any:
    if depth == len(parts):
        return _state_leaf(node, value, path) if in_state else value
    part = parts[depth]
    where = ".".join(parts[:depth]) or "the root"
    if isinstance(node, Params):
        if part not in node._data and (in_state or depth < len(parts) - 1):
            inside = " inside a state, where an added entry would be ignored" if in_state else ""
            raise KeyError(
                f"pn.tree.set: no entry {part!r} at {where} (path {path!r}){inside}; keys there: "
                f"{list(node)}"
            )
        new = dict(node._data)
        new[part] = _set(node._data.get(part), parts, value, path, depth + 1, in_state)
        return Params(new)
    if attrs.has(type(node)):
        names = [f.name for f in attrs.fields(type(node))]
        if part not in names:
            raise KeyError(
                f"pn.tree.set: {type(node).__name__} at {where} has no field {part!r}; fields: {names}"
            )
        return attrs.evolve(
            node, **{part: _set(getattr(node, part), parts, value, path, depth + 1, True)}
        )
    if isinstance(node, dict):
        if part not in node:
            raise KeyError(f"pn.tree.set: no key {part!r} at {where} (path {path!r})")
        return {**node, part: _set(node[part], parts, value, path, depth + 1, in_state)}
    if isinstance(node, (list, tuple)):
        if not part.isdigit() or int(part) >= len(node):
            raise KeyError(
                f"pn.tree.set: no index {part!r} at {where} (length {len(node)}, path {path!r})"
            )
        items = list(node)
        items[int(part)] = _set(items[int(part)], parts, value, path, depth + 1, in_state)
        return type(node)(items) if not hasattr(node, "_fields") else type(node)(*items)
    raise KeyError(
        f"pn.tree.set: {where} is a leaf ({type(node).__name__}), so it has no entry {part!r} (path {path!r})"
    )
