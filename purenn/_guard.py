"""The mutation guard: purenn nodes remember their leaves' autograd version counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ._config import config
from ._errors import MutatedError
from ._treeutil import flatten_with_paths, listed

__all__ = ["check_unmodified", "debug_check", "record_versions"]

Versions = tuple[int | None, ...]


def _version(leaf: Any) -> int | None:
    if not isinstance(leaf, torch.Tensor):
        return None
    try:
        return leaf._version
    except RuntimeError:  # inference-mode tensors track no version counter
        return None


def record_versions(children: Iterable[Any]) -> Versions:
    """The version counter of each direct tensor child (None for non-tensors)."""
    if torch.compiler.is_compiling():
        return ()
    return tuple(_version(child) for child in children)


def _node_children(node: Any) -> list[tuple[str, Any]] | None:
    """(entry, child) pairs of a purenn node or a builtin container; None for a leaf."""
    get = getattr(type(node), "_pn_children", None)
    if get is not None:
        return get(node)
    if isinstance(node, (tuple, list)):
        return [(str(i), child) for i, child in enumerate(node)]
    if isinstance(node, dict):
        return [(str(k), child) for k, child in node.items()]
    return None


def check_unmodified(tree: Any, name: str = "tree") -> None:
    """Raise `pn.MutatedError` if any leaf of `tree` was modified in place since the tree was built.

    Every `pn.Params` and purenn state records the autograd version counter of its
    leaves when it is built; an in-place write (`w.add_(1)`, `w[0] = 0`) bumps it.
    Writes through `.data` bypass version counters and are not detected.

    Args:
        tree: any purenn tree (Params, optimizer or model state, or containers of them).
        name: how the error refers to the tree (e.g. "params").

    Raises:
        MutatedError: naming the path of the first modified leaf.

    Example:
        >>> p = pn.Params({"w": torch.zeros(2)})
        >>> pn.check_unmodified(p)  # fine
        >>> _ = p["w"].add_(1)
        >>> pn.check_unmodified(p, "params")  # MutatedError: params.w was modified in place
    """
    _check(tree, name)


def _check(node: Any, prefix: str) -> None:
    children = _node_children(node)
    if children is None:
        return
    recorded: Sequence[int | None] = getattr(node, "_pn_versions", None) or ()
    for i, (entry, child) in enumerate(children):
        path = f"{prefix}.{entry}"
        if i < len(recorded) and recorded[i] is not None:
            now = _version(child)
            if now is not None and now != recorded[i]:
                raise MutatedError(
                    f"{path}{_packed_leaves(node, i, prefix)} was modified in place after it was "
                    "put in its tree "
                    f"(version counter {recorded[i]} -> {now}). purenn trees are immutable: "
                    "build a new tree (pn.tree.set, pn.tree.map) instead of writing into a leaf, "
                    "or pass a copy (pn.tree.map(torch.clone, tree)) to code that writes in place."
                )
        _check(child, path)


def _packed_leaves(node: Any, group: int, prefix: str) -> str:
    """For a packed Params' buffer: which leaves it holds (one version counter serves them all)."""
    packed = getattr(node, "_packed", None)
    if packed is None:
        return ""
    held = [
        f"{prefix}.{path}"
        for path, slot in zip(flatten_with_paths(node)[0], packed.layout.slots, strict=True)
        if slot.group == group
    ]
    return f" (the flat buffer of {listed(held, 5)}: one of these leaves)"


def debug_check(**trees: Any) -> None:
    """Run `check_unmodified` on each named tree when `pn.config.debug` is on."""
    if config.debug:
        for name, tree in trees.items():
            if tree is not None:
                _check(tree, name)
