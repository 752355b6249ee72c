"""`pn.tree.node`: frozen attrs classes whose fields are children of a purenn tree (e.g. optimizer states)."""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import optree
import torch.utils._pytree as torch_pytree

from ._guard import record_versions
from ._repr import tree_repr
from ._treeutil import NAMESPACE

__all__ = ["node"]

T = TypeVar("T", bound=type)


def node(cls: T) -> T:
    """Turn a class with annotated fields into a frozen attrs class registered as a purenn tree node.

    Every field is a child of the tree (a tensor, `Params`, another node, or None)
    except fields declared with `attrs.field(metadata={"static": True})`, which are
    part of the structure (compared, never traced). Instances record their leaves'
    version counters for `pn.check_unmodified`, print shapes rather than data, and
    compare by identity (tensors have no truth value). Update with `attrs.evolve`.

    Example:
        >>> @pn.tree.node
        ... class TraceState:
        ...     count: torch.Tensor
        ...     trace: pn.Params
        >>> s = TraceState(count=torch.tensor(0), trace=pn.Params({}))
        >>> pn.tree.paths(s)
        ['count']
    """
    user_post_init = cls.__dict__.get("__attrs_post_init__")

    def __attrs_post_init__(self: Any) -> None:
        if user_post_init is not None:
            user_post_init(self)
        object.__setattr__(self, "_pn_versions", record_versions(getattr(self, n) for n in dynamic))

    cls.__attrs_post_init__ = __attrs_post_init__  # type: ignore[attr-defined]
    cls.__repr__ = lambda self: tree_repr(type(self).__name__, self)  # type: ignore[assignment]
    frozen = attrs.frozen(eq=False, slots=False, repr=False)(cls)
    fields = attrs.fields(frozen)
    dynamic = tuple(f.name for f in fields if not f.metadata.get("static", False))
    static = tuple(f.name for f in fields if f.metadata.get("static", False))

    def children(obj: Any) -> list[tuple[str, Any]]:
        return [(name, getattr(obj, name)) for name in dynamic]

    def flatten(obj: Any) -> tuple[list[Any], tuple[Any, ...], tuple[str, ...]]:
        return [getattr(obj, n) for n in dynamic], tuple(getattr(obj, n) for n in static), dynamic

    def unflatten(static_values: tuple[Any, ...], values: Any) -> Any:
        obj = object.__new__(frozen)
        for name, value in zip(dynamic, values, strict=True):
            object.__setattr__(obj, name, value)
        for name, value in zip(static, static_values, strict=True):
            object.__setattr__(obj, name, value)
        object.__setattr__(obj, "_pn_versions", record_versions(getattr(obj, n) for n in dynamic))
        return obj

    frozen._pn_children = children  # type: ignore[attr-defined]
    optree.register_pytree_node(frozen, flatten, unflatten, namespace=NAMESPACE)

    # torch's pytree treats None as a leaf where optree sees an empty node: keep None
    # fields out of torch's children and in its context, so both registries agree.
    def torch_flatten(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        values, static_values, _ = flatten(obj)
        present = tuple(v is not None for v in values)
        return [v for v in values if v is not None], (static_values, present)

    def torch_unflatten(children: Any, context: tuple[Any, ...]) -> Any:
        static_values, present = context
        it = iter(children)
        return unflatten(static_values, [next(it) if p else None for p in present])

    def torch_flatten_with_keys(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        children, context = torch_flatten(obj)
        names = [n for n, p in zip(dynamic, context[1], strict=True) if p]
        return [
            (torch_pytree.GetAttrKey(n), c) for n, c in zip(names, children, strict=True)
        ], context

    torch_pytree.register_pytree_node(
        frozen,
        torch_flatten,
        torch_unflatten,
        serialized_type_name=f"{frozen.__module__}.{frozen.__qualname__}",
        flatten_with_keys_fn=torch_flatten_with_keys,
    )
    return frozen
