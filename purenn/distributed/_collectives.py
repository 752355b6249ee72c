"""Data-parallel collectives over Params: one `torch.distributed` call per flat buffer, never in place."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .. import _treeutil
from .._donation import pack
from .._errors import PurennError
from .._params import Params

__all__ = ["all_reduce_mean", "broadcast"]


def _packed_copy(name: str, tree: Params) -> Params:
    """A packed copy of `tree`: fresh flat buffers the collective may write into (the input is untouched)."""
    if not dist.is_available() or not dist.is_initialized():
        raise PurennError(
            f"pn.distributed.{name}: torch.distributed is not initialized; call "
            "torch.distributed.init_process_group('gloo' or 'nccl', ...) in every process first"
        )
    if not isinstance(tree, Params):
        raise TypeError(f"pn.distributed.{name} takes a pn.Params tree, got {type(tree).__name__}")
    return pack(_treeutil.tree_map(torch.Tensor.detach, tree))


def all_reduce_mean(grads: Params, group: Any = None) -> Params:
    """The mean of `grads` over the processes of `group`, as a new (packed) tree.

    One `all_reduce` per (dtype, device) flat buffer however many leaves there are;
    `grads` itself is not changed. Every rank must pass the same structure.

    Example:
        >>> grads = pn.grad(loss_fn)(params, x_local, y_local)
        >>> grads = pn.distributed.all_reduce_mean(grads)   # the same on every rank
        >>> params, state = pn.step(opt, params, grads, state)
    """
    packed = _packed_copy("all_reduce_mean", grads)
    world = dist.get_world_size(group)
    means = []
    for buffer in packed._packed.buffers:
        if not (buffer.is_floating_point() or buffer.is_complex()):
            raise TypeError(f"pn.distributed.all_reduce_mean: cannot average {buffer.dtype} leaves")
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        means.append(buffer / world)
    return Params._from_packed(packed._packed._replace(buffers=tuple(means)))


def broadcast(params: Params, src: int = 0, group: Any = None) -> Params:
    """Rank `src`'s `params` on every process, as a new (packed) tree; `params` is not changed.

    Every rank passes a tree of the same structure, shapes and dtypes (e.g. its own init).

    Example:
        >>> params = pn.distributed.broadcast(model.init(pn.random.key(rank)), src=0)
    """
    packed = _packed_copy("broadcast", params)
    for buffer in packed._packed.buffers:
        dist.broadcast(buffer, src=src, group=group)
    return packed
