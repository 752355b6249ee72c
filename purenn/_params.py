"""`pn.Params`: a frozen, nested, ordered mapping from names to tensors, registered as a pytree."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import optree
import torch
import torch.utils._pytree as torch_pytree

from ._errors import DonatedError, raise_if_dead
from ._guard import record_versions
from ._packed import Packed
from ._rebuild import buffer_name
from ._repr import tree_repr
from ._treeutil import NAMESPACE, flatten_with_paths

__all__ = ["Params"]

_IMMUTABLE = (
    "Params are immutable: {what} is not allowed. "
    "Use pn.tree.set(params, {path!r}, value) to get a new tree with that leaf replaced."
)


class Params(Mapping[str, Any]):
    """A frozen, nested mapping of `str -> torch.Tensor | Params`, in insertion order.

    Build it from a nested dict; read leaves by key or by dotted path. It is a pytree
    for optree (namespace "purenn"), `torch.utils._pytree`, and therefore for
    `torch.func.grad`/`vmap` and `torch.compile`. Model parameters, gradients and
    model state (BatchNorm running statistics) are all `Params`.

    Keys are non-empty strings without dots (a dot separates path segments);
    leaves are tensors. Flat `{"0.weight": w}` dicts go through `from_state_dict`.

    Example:
        >>> p = pn.Params({"w": torch.zeros(3, 2), "sub": {"b": torch.zeros(3)}})
        >>> p["sub"]["b"].shape, p["sub.b"].shape
        (torch.Size([3]), torch.Size([3]))
        >>> pn.tree.paths(p)
        ['w', 'sub.b']
    """

    __slots__ = ("_items", "_packed", "_pn_dead", "_pn_versions")
    _items: dict[str, Any] | None
    _packed: Packed | None
    _pn_dead: str | None
    _pn_versions: tuple[int | None, ...]

    def __init__(self, mapping: Mapping[str, Any] | None = None, /) -> None:
        if mapping is None:
            mapping = {}
        if isinstance(mapping, Params):
            data = dict(mapping._data)
        elif isinstance(mapping, Mapping):
            data = _validated(mapping, prefix="")
        else:
            raise TypeError(
                f"Params expects a mapping of str -> tensor (or nested mappings), "
                f"got {type(mapping).__name__}"
            )
        _init(self, data)

    @classmethod
    def _unchecked(cls, keys: tuple[str, ...], values: Any) -> Params:
        """Rebuild from keys and children without validation (pytree unflatten, tree.map results)."""
        self = object.__new__(cls)
        _init(self, dict(zip(keys, values, strict=True)))
        return self

    @classmethod
    def _from_packed(cls, packed: Packed) -> Params:
        """A Params backed by flat buffers; leaves become views on first access."""
        self = object.__new__(cls)
        object.__setattr__(self, "_items", None)
        object.__setattr__(self, "_packed", packed)
        object.__setattr__(self, "_pn_dead", None)
        object.__setattr__(self, "_pn_versions", record_versions(packed.buffers))
        return self

    @property
    def _data(self) -> dict[str, Any]:
        items = self._items
        if items is None:
            if self._pn_dead is not None:
                raise DonatedError(self._pn_dead)
            items = self._packed.unflatten()._items
            object.__setattr__(self, "_items", items)
        return items

    def _kill(self, message: str) -> None:
        """Mark this tree as consumed by a donating call: every later use raises DonatedError(message)."""
        object.__setattr__(self, "_items", None)
        object.__setattr__(self, "_packed", None)
        object.__setattr__(self, "_pn_dead", message)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> Params:
        """Build nested Params from a flat dict with dotted keys, e.g. `module.state_dict()`.

        Example:
            >>> p = pn.Params.from_state_dict(torch.nn.Linear(2, 3).state_dict())
            >>> pn.tree.paths(p)
            ['weight', 'bias']
        """
        if not isinstance(sd, Mapping):
            raise TypeError(f"from_state_dict expects a mapping, got {type(sd).__name__}")
        root: dict[str, Any] = {}
        for key, value in sd.items():
            if not isinstance(key, str) or not key or any(part == "" for part in key.split(".")):
                raise TypeError(f"state_dict keys must be non-empty dotted strings, got {key!r}")
            *parents, leaf = key.split(".")
            node = root
            for depth, part in enumerate(parents):
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    clash = ".".join(parents[: depth + 1])
                    raise ValueError(
                        f"state_dict has both a leaf {clash!r} and a leaf under it, {key!r}"
                    )
                node = child
            if leaf in node:
                raise ValueError(f"state_dict has both a leaf {key!r} and leaves under it")
            node[leaf] = value
        return cls(root)

    def to_state_dict(self) -> dict[str, Any]:
        """A flat dict with dotted keys (the tensors themselves, not copies), for `load_state_dict`."""
        paths, leaves, _ = flatten_with_paths(self)
        return dict(zip(paths, leaves, strict=True))

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except (KeyError, TypeError):
            pass
        if isinstance(key, str) and "." in key:
            node: Any = self
            walked: list[str] = []
            for part in key.split("."):
                if not isinstance(node, Params) or part not in node._data:
                    at = ".".join(walked) or "the root"
                    keys = list(node._data) if isinstance(node, Params) else []
                    raise KeyError(f"no entry {part!r} at {at} (path {key!r}); keys there: {keys}")
                node = node._data[part]
                walked.append(part)
            return node
        raise KeyError(f"no entry {key!r}; keys: {list(self._data)}")

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        raise TypeError(_IMMUTABLE.format(what=f"params[{key!r}] = ...", path=key))

    def __delitem__(self, key: str) -> NoReturn:
        raise TypeError(_IMMUTABLE.format(what=f"del params[{key!r}]", path=key))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError(_IMMUTABLE.format(what=f"setting attribute {name!r}", path=name))

    def __delattr__(self, name: str) -> NoReturn:
        raise TypeError(_IMMUTABLE.format(what=f"deleting attribute {name!r}", path=name))

    # Tensors have no truth value, so Mapping's value equality would raise; compare by identity.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __reduce__(self) -> tuple[Any, ...]:
        return (Params._unchecked, (tuple(self._data), tuple(self._data.values())))

    def _pn_children(self) -> list[tuple[str, Any]]:
        if self._packed is not None:  # the guard watches the buffers, which every leaf views
            return [(buffer_name(b.dtype, b.device), b) for b in self._packed.buffers]
        return list(self._data.items())

    def __repr__(self) -> str:
        return tree_repr("Params", self) if self._data else "Params({})"


def _init(self: Params, data: dict[str, Any]) -> None:
    object.__setattr__(self, "_items", data)
    object.__setattr__(self, "_packed", None)
    object.__setattr__(self, "_pn_dead", None)
    object.__setattr__(self, "_pn_versions", record_versions(data.values()))


def _validated(mapping: Mapping[Any, Any], prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in mapping.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(key, str):
            raise TypeError(
                f"Params keys must be str, got {type(key).__name__} {key!r}"
                + (f" under {prefix!r}" if prefix else "")
                + "; use str(i) for numbered layers"
            )
        if not key or "." in key:
            raise ValueError(
                f"Params key {where!r} is not allowed: keys must be non-empty and contain no '.', "
                "which separates path segments. For a flat dict with dotted keys use "
                "Params.from_state_dict."
            )
        if isinstance(value, Params):
            raise_if_dead(value, f"Params entry {where!r}")
            data[key] = value
        elif isinstance(value, torch.Tensor):
            data[key] = value
        elif isinstance(value, Mapping):
            data[key] = Params._unchecked(
                tuple(sub := _validated(value, where)), tuple(sub.values())
            )
        else:
            raise TypeError(
                f"Params leaf {where!r} must be a torch.Tensor (or a nested mapping), "
                f"got {type(value).__name__}"
                + (f" {value!r}" if isinstance(value, (int, float, bool)) else "")
                + "; wrap numbers with torch.tensor(...)"
            )
    return data


def _flatten(p: Params) -> tuple[tuple[Any, ...], tuple[str, ...], tuple[str, ...]]:
    keys = tuple(p._data)
    return tuple(p._data.values()), keys, keys


def _unflatten(keys: tuple[str, ...], children: Any) -> Params:
    return Params._unchecked(keys, children)


Params._pn_unflatten = staticmethod(_unflatten)
Params._pn_flatten = staticmethod(_flatten)
Params._pn_from_buffers = staticmethod(
    lambda layout, buffers: Params._from_packed(Packed(layout, buffers))
)
optree.register_pytree_node(Params, _flatten, _unflatten, namespace=NAMESPACE)
torch_pytree.register_pytree_node(
    Params,
    lambda p: (list(p._data.values()), tuple(p._data)),
    lambda values, keys: Params._unchecked(keys, values),
    serialized_type_name="purenn.Params",
    flatten_with_keys_fn=lambda p: (
        [(torch_pytree.MappingKey(k), v) for k, v in p._data.items()],
        tuple(p._data),
    ),
)
