"""Data-parallel collectives over any purenn tree: one `torch.distributed` call per flat buffer, never in place.

How a tree is sent. Every `Params` in it that is packed, or that holds a
non-scalar leaf, becomes one unit with its own flat buffers (one per dtype and
device, as `pn.tree.pack` lays them out; its leaves come back as views into them,
so e.g. model params come out packed). All other leaves (an optimizer state's
`count`, a rule's 0-d hyperparameters, tensors in plain dicts, lists and tuples,
DTensor leaves' local shards) are packed together into one buffer per
(dtype, device). Each buffer is one collective, so a tree costs a handful of
calls however many leaves it has. Buffers are fresh copies (or, on the receiving
ranks of a broadcast, fresh uninitialized storage), so the input tree is never
written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optree
import torch
import torch.distributed as dist

from .. import _treeutil
from .._donation import check_alive
from .._errors import PurennError
from .._guard import debug_check
from .._packed import Packed, layout_of, pack_leaves
from .._params import Params

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["all_reduce_mean", "broadcast"]

try:  # DTensor is public from torch 2.5 on; without it no leaf is one
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # pragma: no cover - old or distributed-less torch
    _DTensor = None


def _is_dtensor(x: Any) -> bool:
    return _DTensor is not None and isinstance(x, _DTensor)


class _Unit:
    """One Params sent as its own flat buffers: the collective writes `buffers`, the result views them."""

    __slots__ = ("buffers", "layout", "leaves", "source")

    def __init__(self, source: Params, leaves: list[torch.Tensor] | None) -> None:
        self.source = source
        self.leaves = leaves  # detached, for an unpacked Params; None for a packed one
        if source._packed is not None:
            self.layout = source._packed.layout
        else:
            self.layout = layout_of(_treeutil.structure(source), leaves)
        self.buffers: list[torch.Tensor] = []


class _Plan:
    """A tree split into units (Params with their own buffers) and loose leaves (one shared layout)."""

    def __init__(self, name: str, tree: Any, group: ProcessGroup | None) -> None:
        units_at = _choose_units(tree)
        paths, leaves, self.spec = optree.tree_flatten_with_path(
            tree,
            is_leaf=lambda x: isinstance(x, Params) and id(x) in units_at,
            namespace=_treeutil.NAMESPACE,
        )
        self.slots: list[tuple[str, int]] = []  # per outer leaf: ("unit" or "loose", index)
        self.units: list[_Unit] = []
        self.loose: list[torch.Tensor] = []
        self.dtensors: dict[int, Any] = {}  # loose index -> the DTensor it is the local shard of
        checked: set[tuple[int, tuple[Any, ...]]] = set()
        for raw_path, leaf in zip(paths, leaves, strict=True):
            path = _treeutil.path_str(raw_path) or "<root>"
            if isinstance(leaf, Params):
                self.slots.append(("unit", len(self.units)))
                self.units.append(_Unit(leaf, units_at[id(leaf)]))
                continue
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(
                    f"pn.distributed.{name}: leaf '{path}' is a {type(leaf).__name__}, not a tensor; "
                    "every leaf of a tree sent between processes must be a tensor (wrap numbers as "
                    "0-d tensors: torch.tensor(3))"
                )
            self.slots.append(("loose", len(self.loose)))
            if _is_dtensor(leaf):
                key = (id(leaf.device_mesh), tuple(leaf.placements))
                if key not in checked:
                    _check_dtensor(name, path, leaf, group)
                    checked.add(key)
                self.dtensors[len(self.loose)] = leaf
                leaf = leaf.to_local()
            self.loose.append(leaf.detach())
        self.loose_layout = layout_of(_treeutil.structure(self.loose), self.loose)

    def dtypes(self) -> list[torch.dtype]:
        """The dtype of every buffer the plan sends."""
        layouts = [unit.layout for unit in self.units] + [self.loose_layout]
        return [dtype for layout in layouts for dtype, _, _ in layout.groups]

    def fill(self, copy: bool) -> list[torch.Tensor]:
        """Fresh buffers for every unit and the loose leaves (copies of the values, or empty); all of them."""
        for unit in self.units:
            packed = unit.source._packed
            if not copy:
                unit.buffers = [_empty(dtype, device, n) for dtype, device, n in unit.layout.groups]
            elif packed is not None:
                unit.buffers = [b.detach().clone() for b in packed.buffers]
            else:
                unit.buffers = list(pack_leaves(unit.layout, unit.leaves))
        if copy:
            self.loose_buffers = list(pack_leaves(self.loose_layout, self.loose))
        else:
            groups = self.loose_layout.groups
            self.loose_buffers = [_empty(dtype, device, n) for dtype, device, n in groups]
        return [b for unit in self.units for b in unit.buffers] + self.loose_buffers

    def result(self) -> Any:
        """The tree rebuilt around the (now communicated) buffers."""
        loose = self.loose_layout.views(self.loose_buffers)
        for i, original in self.dtensors.items():
            loose[i] = _DTensor.from_local(
                loose[i],
                original.device_mesh,
                original.placements,
                run_check=False,
                shape=original.shape,
                stride=original.stride(),
            )
        leaves = [
            Params._from_packed(Packed(self.units[i].layout, tuple(self.units[i].buffers)))
            if kind == "unit"
            else loose[i]
            for kind, i in self.slots
        ]
        return _treeutil.unflatten(self.spec, leaves)


def _empty(dtype: torch.dtype, device: torch.device, n: int) -> torch.Tensor:
    return torch.empty(n, dtype=dtype, device=device)


def _choose_units(tree: Any) -> dict[int, list[torch.Tensor] | None]:
    """The outermost Params to send as their own buffers (packed ones and those with a non-scalar leaf).

    Maps each one's id to its detached leaves (None if packed). A Params holding a
    DTensor leaf is not one (its leaves are sent as local shards with the loose leaves);
    its child Params may be.
    """
    chosen: dict[int, list[torch.Tensor] | None] = {}

    def visit(p: Params) -> None:
        if p._packed is not None:
            chosen[id(p)] = None
            return
        leaves = _treeutil.flatten(p)[0]
        if any(leaf.dim() > 0 for leaf in leaves) and not any(map(_is_dtensor, leaves)):
            chosen[id(p)] = [leaf.detach() for leaf in leaves]
            return
        for child in p._data.values():  # e.g. a packed Params under a DTensor-holding one
            if isinstance(child, Params):
                visit(child)

    outer = optree.tree_leaves(
        tree, is_leaf=lambda x: isinstance(x, Params), namespace=_treeutil.NAMESPACE
    )
    for leaf in outer:
        if isinstance(leaf, Params):
            visit(leaf)
    return chosen


def _check_dtensor(name: str, path: str, leaf: Any, group: ProcessGroup | None) -> None:
    """Refuse a DTensor whose local shards differ between ranks of `group` (they hold different pieces).

    The collective runs on each rank's local shard, which is right when the ranks of
    `group` that share the leaf's mesh differ only along mesh dimensions where the leaf
    is `Replicate` (e.g. `group` is the data-parallel group of a 2-d mesh, or the leaf
    lives on a tensor-parallel submesh that `group` crosses).
    """
    grid = leaf.device_mesh.mesh
    ranks = dist.get_process_group_ranks(group if group is not None else dist.group.WORLD)
    coords = [(grid == r).nonzero()[0].tolist() for r in ranks if bool((grid == r).any())]
    for dim, placement in enumerate(leaf.placements):
        if placement.is_replicate():
            continue
        if len({c[dim] for c in coords}) > 1:
            raise ValueError(
                f"pn.distributed.{name}: leaf '{path}' is a DTensor placed {tuple(leaf.placements)} on "
                f"{leaf.device_mesh}, so the ranks of the process group hold different pieces of it "
                f"(mesh dimension {dim} is {placement}); a collective over their local shards would mix "
                "them. Pass group= the data-parallel group, whose ranks hold the same shard (e.g. "
                "mesh.get_group('dp')), or redistribute the leaf to Replicate() on that dimension first"
            )


def _start(name: str, arg: str, tree: Any, group: ProcessGroup | None) -> _Plan:
    if not dist.is_available() or not dist.is_initialized():
        raise PurennError(
            f"pn.distributed.{name}: torch.distributed is not initialized; call "
            "torch.distributed.init_process_group('gloo' or 'nccl', ...) in every process first"
        )
    check_alive(tree, f"pn.distributed.{name}: {arg}")
    debug_check(**{arg: tree})
    return _Plan(name, tree, group)


def all_reduce_mean(grads: Any, group: ProcessGroup | None = None) -> Any:
    """The elementwise mean of `grads` over the processes of `group`, as a new tree of the same structure.

    `grads` is any purenn tree of floating or complex tensors: gradients (`pn.Params`),
    dicts, lists and tuples of them, a model's float statistics. Every leaf keeps its
    shape `(...)`, dtype and device; the result's leaf is `sum over ranks / world_size`.
    One `all_reduce` per flat buffer (see the module docstring), however many leaves;
    `grads` itself is not changed and no autograd history is kept. Every rank must pass
    the same structure, shapes and dtypes. A DTensor leaf is averaged shard by shard
    over `group` and comes back a DTensor with the same mesh and placements.

    Integer and bool leaves raise: their mean is not an integer, and rounding it (or
    silently summing instead) would corrupt counts such as Adam's `count` or BatchNorm's
    `num_batches_tracked`, which are equal on every rank anyway. Average only the
    floating part (e.g. the gradients, not the optimizer state), and use `broadcast` to
    make integer state agree.

    Raises:
        PurennError: if torch.distributed is not initialized.
        TypeError: naming the path and dtype of an integer or bool leaf, or of a non-tensor leaf.
        ValueError: for a DTensor leaf whose shards differ between the ranks of `group`.

    Example:
        >>> grads = pn.grad(loss_fn)(params, x_local, y_local)
        >>> grads = pn.distributed.all_reduce_mean(grads)   # the same on every rank
        >>> params, state = pn.step(opt, params, grads, state)
    """
    plan = _start("all_reduce_mean", "grads", grads, group)
    if not all(dtype.is_floating_point or dtype.is_complex for dtype in plan.dtypes()):
        path, leaf = _treeutil.exact_tensor_leaves(grads)[0]
        raise TypeError(
            f"pn.distributed.all_reduce_mean: leaf '{path or '<root>'}' is {leaf.dtype}; only "
            "floating and complex leaves can be averaged (a mean of integers or bools is in "
            "general neither). Average the floating part of the tree (e.g. the gradients), "
            "and use pn.distributed.broadcast for integer state such as counts"
        )
    world = dist.get_world_size(group)
    buffers = plan.fill(copy=True)
    _communicate(buffers, group, True, lambda b: dist.all_reduce(b, dist.ReduceOp.SUM, group))
    for buffer in buffers:
        buffer.div_(world)
    return plan.result()


def broadcast(params: Any, src: int = 0, group: ProcessGroup | None = None) -> Any:
    """Rank `src`'s `params` on every process, as a new tree of the same structure; `params` is not changed.

    `params` is any purenn tree (the name is the API's): `pn.Params`, an optimizer
    state (`opt.init(params)`, with its int64 `count` and None fields), a model state
    (BatchNorm's int64 `num_batches_tracked`), or dicts, lists and tuples of them. Every rank passes a
    tree of the same structure, shapes `(...)` and dtypes (e.g. its own init); only
    `src`'s values are read. Leaves of every dtype are copied bit for bit (buffers
    travel as bytes), so integer, bool and float leaves are exactly `src`'s. Params
    holding a non-scalar leaf come back packed (one flat buffer per dtype and
    device); no autograd history is kept. `src` is a global rank, as in
    `torch.distributed.broadcast`. A DTensor leaf is sent shard by shard over `group`.

    Raises:
        PurennError: if torch.distributed is not initialized.
        TypeError: naming the path of a leaf that is not a tensor.
        ValueError: if `src` is not a rank of `group`, or for a DTensor leaf whose shards
            differ between the ranks of `group`.

    Example:
        >>> params = pn.distributed.broadcast(model.init(pn.random.key(rank)), src=0)
        >>> opt_state = opt.init(params)
        >>> if rank == 0:                                   # resuming: only rank 0 reads the checkpoint
        ...     opt_state = pn.load("ckpt/opt_state", like=opt_state)
        >>> opt_state = pn.distributed.broadcast(opt_state, src=0)   # count, moments: rank 0's, exactly
    """
    plan = _start("broadcast", "params", params, group)
    ranks = dist.get_process_group_ranks(group if group is not None else dist.group.WORLD)
    if src not in ranks:
        raise ValueError(
            f"pn.distributed.broadcast: src={src!r} is not a rank of the process group (ranks {ranks}); "
            "src is a global rank"
        )
    is_src = dist.get_rank() == src
    # As bytes: a broadcast then copies any dtype exactly, whichever dtypes the backend knows.
    _communicate(
        plan.fill(copy=is_src),
        group,
        is_src,
        lambda b: dist.broadcast(b.view(torch.uint8), src, group),
    )
    return plan.result()


def _communicate(
    buffers: list[torch.Tensor],
    group: ProcessGroup | None,
    send_values: bool,
    collective: Callable[[torch.Tensor], Any],
) -> None:
    """Run `collective` on each non-empty 1-d buffer, in place, staging it where `group` cannot reach it.

    A group made with `init_process_group("nccl")` handles CUDA tensors only, while purenn
    trees keep some leaves on the CPU wherever the params live (a rule's `count` and
    hyperparameters). Such a buffer is copied to a device the group serves (a device the
    tree already uses, else the current one of that type), communicated there and copied
    back. `send_values` says whether the buffer's values go in (False for a broadcast's
    receiving ranks, whose staging buffer is left uninitialized).
    """
    served = _device_types(group)
    stage: torch.device | None = None
    for buffer in buffers:
        if not buffer.numel():
            continue
        if served is None or buffer.device.type in served:
            collective(buffer)
            continue
        if stage is None:
            stage = _staging_device(buffers, served)
        staged = (
            buffer.to(stage, copy=True) if send_values else torch.empty_like(buffer, device=stage)
        )
        collective(staged)
        buffer.copy_(staged)


def _device_types(group: ProcessGroup | None) -> list[str] | None:
    """The device types `group`'s backends serve (e.g. ["cuda"] for NCCL), or None if torch does not say."""
    pg = group if group is not None else dist.group.WORLD
    devices = getattr(pg, "_device_types", None)  # what torch's own state-dict broadcast consults
    return [d.type for d in devices] if devices else None


def _staging_device(buffers: list[torch.Tensor], served: list[str]) -> torch.device:
    """Where to stage buffers the group cannot reach: a served device the tree already uses, else the current one."""
    for buffer in buffers:
        if buffer.device.type in served:
            return buffer.device
    kind = served[0]
    try:
        return torch.device(kind, torch.get_device_module(kind).current_device())
    except (AttributeError, RuntimeError):
        return torch.device(kind)
