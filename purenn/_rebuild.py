"""Tree structures as plain Python descriptions, so trees can be rebuilt inside a torch.compile graph.

torch.compile's optree support cannot unflatten with a `PyTreeSpec` made outside the
graph, so pn.jit and packed Params describe a structure once, outside, and rebuild
it with ordinary Python inside.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from ._treeutil import PyTreeSpec

__all__ = ["build", "describe", "flatten", "input_positions"]

LEAF = ("leaf",)
# A 0-d tensor leaf. pn.jit hands these to torch.compile as 1-element views: dynamo gives
# every 0-d CPU float64 input a symbolic `.item()` value that its tensorify pass then
# specializes by restarting the whole trace (~0.3-0.9 s per compile) and guarding on it in
# Python on every call. A rule's hyperparameters and step count are exactly such tensors.
# (Not done for tensors that require grad: dynamo warns about a non-leaf input's `.grad`.)
SCALAR = ("scalar",)


def describe(spec: PyTreeSpec) -> tuple[Any, ...]:
    """A nested-tuple description of `spec` that `build` turns back into a tree."""
    return spec.walk(range(spec.num_leaves), _describe_node, lambda _: LEAF)


def _describe_node(node_type: type, node_data: Any, children: tuple[Any, ...]) -> tuple[Any, ...]:
    if node_type is type(None):
        return ("none",)
    rebuild = getattr(node_type, "_pn_unflatten", None)
    if rebuild is not None:  # Params and pn.tree.node classes
        return ("custom", rebuild, node_data, children)
    if node_type in (tuple, list):
        return (node_type.__name__, None, children)
    if node_type is dict:
        return ("dict", tuple(node_data), children)
    if issubclass(node_type, tuple) and hasattr(node_type, "_fields"):
        return ("namedtuple", node_type, children)
    raise TypeError(
        f"pn.jit cannot rebuild a {node_type.__name__} node inside a compiled function; use Params, "
        "pn.tree.node classes, tuples, lists, dicts or namedtuples"
    )


def build(desc: tuple[Any, ...], leaves: Iterator[Any]) -> Any:
    """The tree described by `desc`, with leaves taken in order from `leaves`."""
    kind = desc[0]
    if kind == "leaf" or kind == "scalar":
        return next(leaves)
    if kind == "none":
        return None
    if kind == "static":
        return desc[1]
    if kind == "packed":
        _, layout, from_buffers = desc
        return from_buffers(layout, tuple(next(leaves) for _ in layout.groups))
    if kind == "custom":
        _, rebuild, data, children = desc
        return rebuild(data, [build(child, leaves) for child in children])
    if kind == "namedtuple":
        return desc[1](*(build(child, leaves) for child in desc[2]))
    values = [build(child, leaves) for child in desc[2]]
    if kind == "dict":
        return dict(zip(desc[1], values, strict=True))
    return tuple(values) if kind == "tuple" else values


def flatten(
    tree: Any,
    prefix: str = "",
    *,
    mark_scalars: bool = False,
    with_paths: bool = True,
    nodes: list[Any] | None = None,
) -> tuple[tuple[Any, ...], list[Any], list[str]]:
    """`(description, tensors, tensor paths)` of `tree`, in plain Python (traceable by torch.compile).

    Packed Params contribute their flat buffers; non-tensor leaves are kept in the
    description as constants (so they must be hashable). `build(description,
    iter(tensors))` rebuilds the tree. With `mark_scalars`, 0-d tensor leaves that do
    not require grad are described as `SCALAR` rather than `LEAF` (see `input_positions`).
    Without `with_paths` the paths list stays empty (and error messages name no path):
    pn.jit's per-call walk skips building strings it only needs for errors. `nodes`, if
    given, receives every Params and pn.tree.node object in the tree, parents first.
    """
    tensors: list[Any] = []
    paths: list[str] | None = [] if with_paths else None
    desc = _flatten(tree, prefix, tensors, paths, mark_scalars, nodes)
    return desc, tensors, paths if paths is not None else []


def _join(prefix: str, entry: Any, paths: list[str] | None) -> str:
    if paths is None:
        return prefix
    return f"{prefix}.{entry}" if prefix else str(entry)


def _flatten(
    tree: Any,
    prefix: str,
    tensors: list[Any],
    paths: list[str] | None,
    scalars: bool,
    nodes: list[Any] | None,
) -> tuple[Any, ...]:
    if isinstance(tree, torch.Tensor):
        tensors.append(tree)
        if paths is not None:
            paths.append(prefix)
        return SCALAR if scalars and tree.dim() == 0 and not tree.requires_grad else LEAF
    if tree is None:
        return ("none",)
    packed = getattr(tree, "_packed", None)
    if packed is not None:
        if nodes is not None:
            nodes.append(tree)
        tensors.extend(packed.buffers)
        if paths is not None:
            paths.extend(
                _join(prefix, buffer_name(dtype, device), paths)
                for dtype, device, _ in packed.layout.groups
            )
        return ("packed", packed.layout, type(tree)._pn_from_buffers)
    flat = getattr(type(tree), "_pn_flatten", None)
    if flat is not None:  # Params and pn.tree.node classes
        if nodes is not None:
            nodes.append(tree)
        children, data, entries = flat(tree)
        return (
            "custom",
            type(tree)._pn_unflatten,
            data,
            tuple(
                _flatten(c, _join(prefix, e, paths), tensors, paths, scalars, nodes)
                for c, e in zip(children, entries, strict=True)
            ),
        )
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return (
            "namedtuple",
            type(tree),
            tuple(
                _flatten(c, _join(prefix, f, paths), tensors, paths, scalars, nodes)
                for c, f in zip(tree, tree._fields, strict=True)
            ),
        )
    if type(tree) in (tuple, list):
        return (
            type(tree).__name__,
            None,
            tuple(
                _flatten(c, _join(prefix, i, paths), tensors, paths, scalars, nodes)
                for i, c in enumerate(tree)
            ),
        )
    if type(tree) is dict:
        return (
            "dict",
            tuple(tree),
            tuple(
                _flatten(c, _join(prefix, k, paths), tensors, paths, scalars, nodes)
                for k, c in tree.items()
            ),
        )
    try:
        hash(tree)
    except TypeError:
        raise TypeError(
            f"pn.jit: leaf '{prefix}' is a {type(tree).__name__}, neither a tensor nor hashable; non-tensor "
            "leaves are compiled in as constants and must be hashable"
        ) from None
    return ("static", tree, _static_key(tree))


def _static_key(value: Any) -> tuple[Any, ...]:
    """What, beyond `==`, tells two static leaves apart in pn.jit's cache key.

    `1 == 1.0 == True` and `0.0 == -0.0`, but a function compiled for one can give
    another result for the other (`torch.tensor(k)`'s dtype, `1 / k`'s sign).
    """
    sign = math.copysign(1.0, value) if type(value) is float else None
    return (type(value), sign)


def input_positions(descs: tuple[Any, ...]) -> tuple[int, tuple[int, ...]]:
    """How many tensors `flatten` lists for `descs` (in order), and the positions of the 0-d ones."""
    positions: list[int] = []
    count = 0

    def walk(desc: tuple[Any, ...]) -> None:
        nonlocal count
        kind = desc[0]
        if kind in ("leaf", "scalar"):
            if kind == "scalar":
                positions.append(count)
            count += 1
        elif kind == "packed":
            count += len(desc[1].groups)
        elif kind in ("custom", "namedtuple", "tuple", "list", "dict"):
            for child in desc[-1]:
                walk(child)

    for desc in descs:
        walk(desc)
    return count, tuple(positions)


def buffer_name(dtype: Any, device: Any) -> str:
    """How paths name a packed tree's flat buffer: `<packed float32 cpu buffer>`."""
    return f"<packed {str(dtype).removeprefix('torch.')} {device} buffer>"
