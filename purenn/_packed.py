"""Packed Params: every leaf a view into one flat buffer per (dtype, device), so updates run as one loop."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import attrs
import torch

from ._rebuild import build, describe, flatten
from ._treeutil import PyTreeSpec

__all__ = [
    "Layout",
    "Packed",
    "align",
    "buffers",
    "common_layout",
    "layout_of",
    "pack_leaves",
    "try_pack",
]


@attrs.frozen
class Slot:
    """Where one leaf lives: buffer `group`, elements `[offset, offset + numel)`, viewed as `shape`."""

    group: int
    offset: int
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n


@attrs.frozen(cache_hash=True)
class Layout:
    """The static part of a packed tree: its structure, each leaf's slot, and each buffer's dtype/device/size.

    Two packed trees with equal layouts hold corresponding leaves at the same places
    of same-typed buffers, so an elementwise rule can run on the buffers directly.
    Equality and hashing use `digest`, a hash of every slot and group: comparing two
    layouts inside a torch.compile graph is then one string comparison rather than
    thousands of traced (and guarded) tuple comparisons.
    """

    digest: str = attrs.field(repr=False)
    treedef: PyTreeSpec = attrs.field(eq=False)
    slots: tuple[Slot, ...] = attrs.field(eq=False, repr=False)
    groups: tuple[tuple[torch.dtype, torch.device, int], ...] = attrs.field(eq=False)
    builder: tuple[Any, ...] = attrs.field(eq=False, repr=False)

    def views(self, buffers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each leaf as a view into its buffer, in leaf order.

        One `torch.split` per buffer rather than a slice per leaf: differentiated
        through the buffer, a split's backward is one `cat` of the leaves' gradients,
        which inductor lowers to copies into the flat gradient (matmul outputs often
        written there directly), where per-leaf slices' backward is a sum of
        zero-padded pieces that the update loop then re-reads with one masked load per
        leaf for every vector (3x slower on a 6-leaf MLP).
        """
        sizes: list[list[int]] = [[] for _ in self.groups]
        for slot in self.slots:
            sizes[slot.group].append(slot.numel)
        pieces = [
            iter(torch.split(buffer, group_sizes))
            for buffer, group_sizes in zip(buffers, sizes, strict=True)
        ]
        return [next(pieces[slot.group]).view(slot.shape) for slot in self.slots]


class Packed(NamedTuple):
    """A packed tree's data: its layout and one 1-d contiguous buffer per layout group.

    A NamedTuple rather than an attrs class so that torch.compile can build it in a graph.
    """

    layout: Layout
    buffers: tuple[torch.Tensor, ...]

    def unflatten(self) -> Any:
        return build(self.layout.builder, iter(self.layout.views(self.buffers)))


def layout_of(treedef: PyTreeSpec, leaves: Sequence[torch.Tensor]) -> Layout:
    """The layout that packs `leaves` (in order) into one buffer per (dtype, device)."""
    groups: dict[tuple[torch.dtype, torch.device], int] = {}
    sizes: list[int] = []
    slots = []
    for leaf in leaves:
        key = (leaf.dtype, leaf.device)
        group = groups.setdefault(key, len(groups))
        if group == len(sizes):
            sizes.append(0)
        slots.append(Slot(group, sizes[group], tuple(leaf.shape)))
        sizes[group] += leaf.numel()
    info = tuple((dtype, device, sizes[g]) for (dtype, device), g in groups.items())
    key = (
        str(treedef),
        tuple((s.group, s.offset, s.shape) for s in slots),
        tuple((str(dtype), str(device), n) for dtype, device, n in info),
    )
    digest = hashlib.sha256(repr(key).encode()).hexdigest()
    return Layout(digest, treedef, tuple(slots), info, describe(treedef))


def pack_leaves(layout: Layout, leaves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Copy `leaves` into fresh flat buffers laid out by `layout` (one copy per buffer, via cat)."""
    per_group: list[list[torch.Tensor]] = [[] for _ in layout.groups]
    for slot, leaf in zip(layout.slots, leaves, strict=True):
        per_group[slot.group].append(leaf.reshape(-1))
    return tuple(
        torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=device)
        for parts, (dtype, device, _) in zip(per_group, layout.groups, strict=True)
    )


def common_layout(trees: Sequence[Any]) -> Layout | None:
    """The layout all non-None `trees` share if each is a packed Params, else None (use the leaf path)."""
    layout = None
    for tree in trees:
        if tree is None:
            continue
        packed = getattr(tree, "_packed", None)
        if not isinstance(packed, Packed):
            return None
        if layout is None:
            layout = packed.layout
        elif packed.layout is not layout and packed.layout != layout:
            return None
    return layout


def buffers(tree: Any) -> tuple[torch.Tensor, ...]:
    return tree._packed.buffers


def align(trees: Sequence[Any]) -> tuple[Layout, list[tuple[torch.Tensor, ...] | None]] | None:
    """A shared layout and each tree's buffers, packing unpacked trees that fit; None if none is packed.

    An unpacked tree fits when it has the layout's structure and each leaf the
    slot's shape, dtype and device (e.g. gradients passed in unpacked beside
    packed params). It is packed by one `cat` per buffer, which inductor fuses into
    the consumer. Returns None (use the per-leaf path) if no tree is packed or
    one does not fit.
    """
    layout = next(
        (t._packed.layout for t in trees if isinstance(getattr(t, "_packed", None), Packed)), None
    )
    if layout is None:
        return None
    result: list[tuple[torch.Tensor, ...] | None] = []
    for tree in trees:
        if tree is None:
            result.append(None)
            continue
        packed = getattr(tree, "_packed", None)
        if isinstance(packed, Packed):
            if packed.layout is not layout and packed.layout != layout:
                return None
            result.append(packed.buffers)
            continue
        packed_buffers = try_pack(tree, layout)
        if packed_buffers is None:
            return None
        result.append(packed_buffers)
    return layout, result


def try_pack(tree: Any, layout: Layout) -> tuple[torch.Tensor, ...] | None:
    """`tree`'s leaves packed into buffers laid out by `layout`, or None if the tree does not fit it."""
    desc, leaves, _ = flatten(tree)
    if desc != layout.builder or not _fits(layout, leaves):
        return None
    return pack_leaves(layout, leaves)


def _fits(layout: Layout, leaves: Sequence[Any]) -> bool:
    for slot, leaf in zip(layout.slots, leaves, strict=True):
        dtype, device, _ = layout.groups[slot.group]
        if (
            not isinstance(leaf, torch.Tensor)
            or tuple(leaf.shape) != slot.shape
            or leaf.dtype != dtype
            or leaf.device != device
        ):
            return False
    return True
