"""Donation bookkeeping: packing donated trees, finding their nodes (to check or kill), alias checks before a call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import optree
import torch

from . import _treeutil
from ._errors import dead_message, raise_if_dead
from ._packed import Packed, layout_of, pack_leaves
from ._params import Params

__all__ = [
    "check_aliasing",
    "check_alive",
    "donation_is_safe",
    "loose_tensor_paths",
    "nodes",
    "pack",
    "pack_large",
]


def pack(tree: Any) -> Any:
    """`tree` with every Params in it packed: one flat buffer per (dtype, device), leaves as views.

    Packed trees behave exactly like unpacked ones (same structure, paths, values);
    purenn's update rules, `apply_updates` and `pn.grad` then work on the few flat
    buffers instead of every leaf, and `pn.jit` compiles one loop per buffer
    however many leaves there are. Packing copies each leaf once.

    Example:
        >>> params = pn.tree.pack(model.init(pn.random.key(0)))
        >>> state = opt.init(params)            # the moment buffers come out packed too
    """
    return _map_params(tree, lambda p: p if p._packed is not None else _pack_params(p))


def pack_large(tree: Any) -> Any:
    """Pack the Params in `tree` that hold any non-scalar leaf (not e.g. a rule's 0-d hyperparameters)."""

    def needs_packing(p: Params) -> bool:
        return p._packed is None and any(leaf.dim() > 0 for leaf in _treeutil.flatten(p)[0])

    if not any(isinstance(n, Params) and needs_packing(n) for n in nodes(tree)):
        return tree  # the same object: every later call of a donating pn.jit takes this path
    return _map_params(tree, lambda p: _pack_params(p) if needs_packing(p) else p)


def _map_params(tree: Any, fn: Any) -> Any:
    return optree.tree_map(
        lambda x: fn(x) if isinstance(x, Params) else x,
        tree,
        is_leaf=lambda x: isinstance(x, Params),
        namespace=_treeutil.NAMESPACE,
    )


def _pack_params(p: Params) -> Params:
    paths, leaves, spec = _treeutil.flatten_with_paths(p)
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"cannot pack leaf '{path}': it is a {type(leaf).__name__}, not a tensor"
            )
        if leaf.requires_grad:
            raise ValueError(
                f"cannot pack leaf '{path}': it requires grad (packing copies it); detach it first"
            )
    layout = layout_of(spec, leaves)
    return Params._from_packed(Packed(layout, pack_leaves(layout, leaves)))


def nodes(tree: Any) -> Iterator[Any]:
    """Every purenn node (Params, state node) in `tree`, parents before children."""
    if isinstance(tree, Params):
        yield tree
        if tree._packed is None and tree._pn_dead is None:
            for child in tree._data.values():
                yield from nodes(child)
        return
    if hasattr(type(tree), "_pn_children"):
        yield tree
        if dead_message(tree) is None:
            for _, child in tree._pn_children():
                yield from nodes(child)
        return
    if isinstance(tree, (tuple, list)):
        for child in tree:
            yield from nodes(child)
    elif isinstance(tree, dict):
        for child in tree.values():
            yield from nodes(child)


def _extent(t: torch.Tensor) -> tuple[int, int, int]:
    storage = t.untyped_storage()
    start = storage.data_ptr() + t.storage_offset() * t.element_size()
    if t.numel() == 0:
        return storage.data_ptr(), start, start
    span = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True)) + 1
    return storage.data_ptr(), start, start + span * t.element_size()


def donation_is_safe(
    tensors: list[torch.Tensor], donated: tuple[int, ...], kept: tuple[int, ...]
) -> bool:
    """True if no donated tensor (by position in `tensors`) requires grad or shares a storage.

    A cheap filter in front of `check_aliasing` for pn.jit's later calls: sharing a storage
    is allowed when the regions do not overlap, which `check_aliasing` decides, with paths.
    """
    if not donated:
        return True
    storages = set()
    for i in donated:
        t = tensors[i]
        if t.requires_grad:
            return False
        if t.numel() == 0:
            continue
        if t.numel() > 1 and 0 in t.stride():
            return False  # maybe self-overlapping: check_aliasing decides
        storage = t.untyped_storage().data_ptr()
        if storage in storages:
            return False
        storages.add(storage)
    for i in kept:
        t = tensors[i]
        if t.numel() > 0 and t.untyped_storage().data_ptr() in storages:
            return False
    return True


def check_aliasing(
    donated: Sequence[tuple[str, torch.Tensor]],
    kept: Sequence[tuple[str, torch.Tensor]],
    fn_name: str,
) -> None:
    """Raise ValueError if two donated tensors overlap in memory, or a donated one overlaps a kept one.

    Writing results into a buffer that another input still reads (or that is
    written twice) would silently corrupt the call; JAX hangs here, purenn refuses.
    """
    for path, t in donated:
        # A stride-0 dimension (expand, vmap's stacked 0-d state) puts several elements at
        # one address: a result cannot be written into it.
        if any(stride == 0 and size > 1 for stride, size in zip(t.stride(), t.shape, strict=True)):
            raise ValueError(
                f"{fn_name}: donated input '{path}' of shape {tuple(t.shape)} has stride 0 in "
                f"some dimension (strides {t.stride()}), so several of its elements share one "
                "address and no result can be written into it. Donate a copy (.clone()), or "
                "do not donate it."
            )
    extents = [(path, t, _extent(t)) for path, t in donated if t.numel() > 0]
    by_storage: dict[int, list[tuple[str, int, int]]] = {}
    for path, _, (storage, start, end) in extents:
        for other_path, other_start, other_end in by_storage.get(storage, []):
            if start < other_end and other_start < end:
                raise ValueError(
                    f"{fn_name}: donated inputs '{other_path}' and '{path}' share memory, so the call "
                    "would write two results into one buffer. Donate a tree whose leaves are distinct "
                    "tensors (pn.tree.map(torch.clone, tree)), or do not donate it."
                )
        by_storage.setdefault(storage, []).append((path, start, end))
    for path, t in kept:
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            continue
        storage, start, end = _extent(t)
        for donated_path, d_start, d_end in by_storage.get(storage, []):
            if start < d_end and d_start < end:
                raise ValueError(
                    f"{fn_name}: donated input '{donated_path}' shares memory with the non-donated input "
                    f"'{path}', which the call still reads while it writes the donated buffer. Pass a copy "
                    "of one of them, or do not donate it."
                )


def loose_tensor_paths(tree: Any, prefix: str) -> list[str]:
    """Paths of the tensors in `tree` that no Params or state node holds.

    Donation marks Params and state nodes dead; a bare tensor, or one in a plain
    dict, list or tuple, cannot be marked, so a later use reads the new values.
    """
    if isinstance(tree, torch.Tensor):
        return [prefix]
    if getattr(type(tree), "_pn_flatten", None) is not None:
        return []
    if isinstance(tree, (tuple, list)):
        return [p for i, c in enumerate(tree) for p in loose_tensor_paths(c, f"{prefix}[{i}]")]
    if isinstance(tree, dict):
        return [p for k, c in tree.items() for p in loose_tensor_paths(c, f"{prefix}[{k!r}]")]
    return []


def check_alive(tree: Any, where: str) -> None:
    """Raise DonatedError if `tree` holds a node consumed by an earlier donating call."""
    for node in nodes(tree):
        raise_if_dead(node, where)
