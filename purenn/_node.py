"""`pn.tree.node`: frozen attrs classes whose fields are children of a purenn tree (e.g. optimizer states)."""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import optree
import torch
import torch.utils._pytree as torch_pytree

from ._errors import DonatedError, raise_if_dead
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

    def __getattr__(self: Any, name: str) -> Any:
        # Only reached for missing attributes: after `_kill`, every field is missing.
        dead = self.__dict__.get("_pn_dead")
        if dead is not None:
            raise DonatedError(dead)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _kill(self: Any, message: str) -> None:
        self.__dict__.clear()
        object.__setattr__(self, "_pn_dead", message)

    cls.__getattr__ = __getattr__  # type: ignore[attr-defined]
    cls._kill = _kill  # type: ignore[attr-defined]
    cls.__repr__ = lambda self: tree_repr(type(self).__name__, self)  # type: ignore[assignment]
    # attrs' generated frozen __init__ binds object.__setattr__ in a way torch.compile cannot
    # trace; states are built inside compiled steps, so the __init__ is written out here.
    frozen = attrs.frozen(eq=False, slots=False, repr=False, init=False)(cls)
    frozen.__init__ = _make_init(frozen, user_post_init)  # type: ignore[misc]
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
    frozen._pn_unflatten = staticmethod(unflatten)  # type: ignore[attr-defined]
    frozen._pn_flatten = staticmethod(flatten)  # type: ignore[attr-defined]
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


def _make_init(cls: type, user_post_init: Any) -> Any:
    # Plain tuples only in the closure: torch.compile cannot wrap attrs' field objects.
    fields = attrs.fields(cls)
    names = tuple(f.name for f in fields)
    dynamic = tuple(f.name for f in fields if not f.metadata.get("static", False))
    defaults = {
        f.name: (True, f.default.factory)
        if isinstance(f.default, attrs.Factory)
        else (False, f.default)  # type: ignore[arg-type]
        for f in fields
        if f.default is not attrs.NOTHING
    }

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(
                f"{cls.__name__}() takes {len(names)} fields, got {len(args)} positional arguments"
            )
        values = dict(zip(names, args, strict=False))
        for name in names[len(args) :]:
            if name in kwargs:
                values[name] = kwargs.pop(name)
            elif name in defaults:
                is_factory, default = defaults[name]
                values[name] = default() if is_factory else default
            else:
                raise TypeError(f"{cls.__name__}() missing field {name!r}")
        if kwargs:
            raise TypeError(
                f"{cls.__name__}() got unexpected fields {sorted(kwargs)}; its fields are {list(names)}"
            )
        check_alive = not torch.compiler.is_compiling()  # a compiled step's inputs were checked
        for name, value in values.items():
            if check_alive:
                raise_if_dead(value, f"{cls.__name__} field {name!r}")
            object.__setattr__(self, name, value)
        if user_post_init is not None:
            user_post_init(self)
        object.__setattr__(self, "_pn_versions", record_versions(getattr(self, n) for n in dynamic))

    return __init__
