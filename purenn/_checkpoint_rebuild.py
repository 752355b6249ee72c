"""Rebuilding a tree from a checkpoint's structure record, running no code that the file names.

Node classes are looked up (never imported) among already imported modules, must be
registered `pn.tree.node` classes, and are rebuilt without calling their `__init__`.
Every field of the record is checked; anything unexpected raises CheckpointError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._checkpoint_record import (
    DTYPES,
    MAX_DEPTH,
    NATIVE_CODES,
    STATIC_SCALARS,
    dtype_name,
    field_names,
    join,
    lookup_class,
    shown,
)
from ._errors import CheckpointError
from ._params import Params

__all__ = ["rebuild"]


class _Malformed(Exception):
    """A record that no purenn wrote (or that was damaged); `load` reports it with the file's name."""


def rebuild(record: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The tree described by `record`, taking tensors (stored form) by name from `tensors`.

    Raises:
        CheckpointError: (without the file name; the caller adds it) a malformed record,
            a missing or inconsistent tensor, or a node class that is not imported.
    """
    used: set[str] = set()
    try:
        tree = _Rebuilder(tensors, used).node(record, "")
    except _Malformed as err:
        raise CheckpointError(f"malformed structure record: {err}") from None
    except RecursionError:
        raise CheckpointError("malformed structure record: nested too deeply") from None
    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(
            f"malformed checkpoint: tensors {unused[:5]} are not in the structure record"
        )
    return tree


def _expect(cond: bool, path: str, what: str) -> None:
    if not cond:
        raise _Malformed(f"at '{shown(path)}': {what}")


def _str_list(value: Any, path: str, what: str) -> list[str]:
    _expect(
        isinstance(value, list) and all(isinstance(k, str) for k in value),
        path,
        f"{what} must be a list of strings",
    )
    return value


class _Rebuilder:
    def __init__(self, tensors: Mapping[str, torch.Tensor], used: set[str]) -> None:
        self.tensors = tensors
        self.used = used
        self.depth = 0

    def node(self, rec: Any, path: str) -> Any:
        if self.depth >= MAX_DEPTH:
            raise _Malformed(f"nested too deeply (more than {MAX_DEPTH} levels)")
        self.depth += 1
        try:
            return self._node(rec, path)
        finally:
            self.depth -= 1

    def _node(self, rec: Any, path: str) -> Any:
        _expect(isinstance(rec, dict) and isinstance(rec.get("kind"), str), path, "not a node")
        kind = rec["kind"]
        handler: Callable[[Any, str], Any] | None = {
            "tensor": self.tensor,
            "none": lambda rec, path: None,
            "params": self.params,
            "dict": self.mapping,
            "tuple": self.sequence,
            "list": self.sequence,
            "node": self.state_node,
        }.get(kind)
        _expect(handler is not None, path, f"unknown node kind {kind!r}")
        return handler(rec, path)  # type: ignore[misc]

    def children(self, rec: Any, path: str, entries: list[str]) -> list[Any]:
        children = rec.get("children")
        if not isinstance(children, list) or len(children) != len(entries):
            raise _Malformed(f"at '{shown(path)}': children do not match the entries")
        return [self.node(c, join(path, e)) for c, e in zip(children, entries, strict=True)]

    def params(self, rec: Any, path: str) -> Params:
        keys = _str_list(rec.get("keys"), path, "Params keys")
        for key in keys:
            _expect(bool(key) and "." not in key, path, f"invalid Params key {key!r}")
        _expect(len(set(keys)) == len(keys), path, "repeated Params keys")
        values = self.children(rec, path, keys)
        for key, value in zip(keys, values, strict=True):
            _expect(
                isinstance(value, (torch.Tensor, Params)),
                join(path, key),
                "a Params entry must be a tensor or Params",
            )
        return Params._unchecked(tuple(keys), values)

    def mapping(self, rec: Any, path: str) -> dict[str, Any]:
        keys = _str_list(rec.get("keys"), path, "dict keys")
        _expect(len(set(keys)) == len(keys), path, "repeated dict keys")
        return dict(zip(keys, self.children(rec, path, keys), strict=True))

    def sequence(self, rec: Any, path: str) -> Any:
        children = rec.get("children")
        _expect(isinstance(children, list), path, "children must be a list")
        values = self.children(rec, path, [str(i) for i in range(len(children))])
        return tuple(values) if rec["kind"] == "tuple" else values

    def state_node(self, rec: Any, path: str) -> Any:
        spec = rec.get("class")
        _expect(isinstance(spec, str) and ":" in spec, path, "node class must be 'module:qualname'")
        cls = lookup_class(spec)
        if cls is None:
            module = spec.partition(":")[0]
            why = (
                f"module {module!r} is not imported"
                if module not in sys.modules
                else f"module {module!r} has no {spec.partition(':')[2]!r}"
            )
            raise CheckpointError(
                f"the node at '{shown(path)}' is a {spec}, but {why}. pn.load never imports modules "
                "named in a file (that would run code from it): import the module that defines the "
                "class before loading"
            )
        _expect(
            isinstance(cls, type)
            and "_pn_unflatten" in vars(cls)
            and "_pn_flatten" in vars(cls)
            and cls is not Params,
            path,
            f"{spec} is not a pn.tree.node class",
        )
        dynamic, static = field_names(cls)
        fields = _str_list(rec.get("fields"), path, "fields")
        saved_static = rec.get("static")
        _expect(isinstance(saved_static, dict), path, "static must be an object")
        if tuple(fields) != dynamic or tuple(saved_static) != static:
            raise CheckpointError(
                f"the node at '{shown(path)}' was saved as a {spec} with fields "
                f"{fields + list(saved_static)}, but that class now has fields "
                f"{list(dynamic + static)}; it was saved by another version of its code"
            )
        children = self.children(rec, path, fields)
        static_values = tuple(_static_value(saved_static[n], join(path, n)) for n in static)
        return cls._pn_unflatten(static_values, children)  # type: ignore[attr-defined]

    def tensor(self, rec: Any, path: str) -> torch.Tensor:
        name, dtype_str, shape = rec.get("name"), rec.get("dtype"), rec.get("shape")
        dtype = DTYPES.get(dtype_str) if isinstance(dtype_str, str) else None
        _expect(dtype is not None, path, f"unknown dtype {dtype_str!r}")
        _expect(
            isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape),
            path,
            "shape must be a list of ints >= 0",
        )
        _expect(isinstance(name, str), path, "tensor name must be a string")
        _expect(name not in self.used, path, f"tensor {name!r} is used twice")
        _expect(name in self.tensors, path, f"no tensor {name!r} in the file")
        self.used.add(name)
        stored = self.tensors[name]
        as_bytes = rec.get("stored") == "bytes"
        _expect(as_bytes == (dtype not in NATIVE_CODES), path, "inconsistent storage")
        if as_bytes:
            numel = 1
            for s in shape:
                numel *= s
            try:
                fits = stored.dtype == torch.uint8 and stored.shape == (numel * dtype.itemsize,)  # type: ignore[union-attr]
                tensor = stored.view(dtype).reshape(shape) if fits else None  # type: ignore[arg-type]
            except (RuntimeError, TypeError):  # a dtype that raw bytes cannot be viewed as
                tensor = None
            if tensor is None:
                raise _Malformed(
                    f"at '{shown(path)}': stored bytes do not hold a {dtype_str} tensor of shape {shape}"
                )
            return tensor
        _expect(
            stored.dtype == dtype and list(stored.shape) == shape,
            path,
            f"the file's tensor is {dtype_name(stored.dtype)} {list(stored.shape)}, "
            f"the record says {dtype_str} {shape}",
        )
        return stored


def _static_value(value: Any, path: str) -> Any:
    if type(value) in STATIC_SCALARS:
        return value
    _expect(type(value) is list, path, "static values must be JSON scalars or lists")
    return tuple(_static_value(v, path) for v in value)
