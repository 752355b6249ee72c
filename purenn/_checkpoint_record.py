"""A checkpoint's structure record: a purenn tree described in JSON types (see docs/checkpoints.md).

The record names every node (Params keys, `pn.tree.node` classes with their static
fields, tuples, lists, dicts, None) and, for each tensor leaf, the name of its tensor
in the safetensors file with its dtype and shape. `_checkpoint_rebuild` turns a
record back into a tree; `_checkpoint_compare` finds where two records differ.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import torch

from ._params import Params

__all__ = [
    "DTYPES",
    "MAX_DEPTH",
    "NATIVE_CODES",
    "STATIC_SCALARS",
    "Encoded",
    "describe",
    "dtype_name",
    "encode",
    "field_names",
    "join",
    "lookup_class",
    "shown",
    "stored",
]

Node = dict[str, Any]

# How deeply a saved tree may nest. Writer and reader share the limit, so every file
# `pn.save` writes loads back; a hand-made deeper record is refused by count, not by
# whatever RecursionError the current stack depth and recursion limit would allow.
MAX_DEPTH = 100

# Dtypes every safetensors version stores natively (readable by any safetensors tool);
# tensors of other dtypes (complex, float8, unsigned >8 bit) are stored as their raw bytes.
NATIVE_CODES: Mapping[torch.dtype, str] = MappingProxyType(
    {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }
)
# Dtype names are looked up in this table, never with getattr(torch, name), which can import
# modules. Quantized dtypes are left out: their tensors are not plain bytes (save refuses them).
DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {
        name: v
        for v in vars(torch).values()
        if isinstance(v, torch.dtype)
        and not (name := str(v).removeprefix("torch.")).startswith(("qint", "quint"))
    }
)
STATIC_SCALARS = (bool, int, float, str, type(None))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def join(prefix: str, entry: Any) -> str:
    return f"{prefix}.{entry}" if prefix else str(entry)


def shown(path: str) -> str:
    return path or "<root>"


@attrs.frozen
class Encoded:
    """A tree ready to write: its record (JSON types) and its tensors (detached, as they are), by name.

    The writer turns each tensor into its stored form (`stored`) one at a time.
    """

    record: Node
    tensors: dict[str, torch.Tensor]


def encode(tree: Any) -> Encoded:
    """The record of `tree` and its tensors by name. Raises TypeError naming a path it cannot save."""
    tensors: dict[str, torch.Tensor] = {}
    record = _Encoder(tensors, "pn.save").node(tree, "")
    return Encoded(record, tensors)


def describe(tree: Any, who: str = "pn.load: like") -> Node:
    """The record of `tree` without copying any tensor (to compare a checkpoint against `like`)."""
    return _Encoder(None, who).node(tree, "")


class _Encoder:
    def __init__(self, tensors: dict[str, torch.Tensor] | None, who: str) -> None:
        self.tensors = tensors
        self.who = who
        self.depth = 0

    def node(self, x: Any, path: str) -> Node:
        if self.depth >= MAX_DEPTH:
            raise ValueError(
                f"{self.who}: '{shown(path)[:200]}' is nested more than {MAX_DEPTH} levels deep; "
                "checkpoints hold trees up to that depth"
            )
        self.depth += 1
        try:
            return self._node(x, path)
        finally:
            self.depth -= 1

    def _node(self, x: Any, path: str) -> Node:
        if isinstance(x, torch.Tensor):
            return self.tensor(x, path)
        if x is None:
            return {"kind": "none"}
        if isinstance(x, Params):
            items = x._data  # a packed Params gives its leaves: checkpoints never depend on packing
            return {
                "kind": "params",
                "keys": list(items),
                "children": [self.node(v, join(path, k)) for k, v in items.items()],
            }
        cls = type(x)
        if hasattr(cls, "_pn_flatten") and hasattr(cls, "_pn_children"):
            return self.state_node(x, cls, path)
        if cls is tuple or cls is list:
            return {
                "kind": cls.__name__,
                "children": [self.node(c, join(path, i)) for i, c in enumerate(x)],
            }
        if cls is dict:
            for key in x:
                if not isinstance(key, str):
                    raise TypeError(
                        f"{self.who}: the dict at '{shown(path)}' has a {type(key).__name__} key {key!r}; "
                        "saved dicts need str keys"
                    )
            return {
                "kind": "dict",
                "keys": list(x),
                "children": [self.node(v, join(path, k)) for k, v in x.items()],
            }
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            raise TypeError(
                f"{self.who}: '{shown(path)}' is a namedtuple ({cls.__qualname__}); checkpoints hold "
                "Params, pn.tree.node classes, tuples, lists, dicts and None. Use a pn.tree.node class"
            )
        raise TypeError(
            f"{self.who}: leaf '{shown(path)}' is a {cls.__name__}, not a tensor: every leaf of a saved "
            "tree must be a tensor (wrap numbers with torch.tensor(...))"
        )

    def tensor(self, t: torch.Tensor, path: str) -> Node:
        node = {"kind": "tensor", "dtype": dtype_name(t.dtype), "shape": list(t.shape)}
        if self.tensors is not None:  # (when describing `like`, only dtype and shape are read)
            unsupported = _unsupported(t)
            if unsupported:
                raise TypeError(
                    f"{self.who}: tensor '{shown(path)}' is {unsupported}; checkpoints hold dense tensors"
                )
            name = path or "<root>"
            n = 1
            while name in self.tensors:  # paths of dotted dict keys can coincide
                n += 1
                name = f"{path}#{n}"
            self.tensors[name] = t.detach()
            node["name"] = name
            if t.dtype not in NATIVE_CODES:
                node["stored"] = "bytes"
        return node

    def state_node(self, x: Any, cls: type, path: str) -> Node:
        spec = f"{cls.__module__}:{cls.__qualname__}"
        if lookup_class(spec) is not cls:
            raise TypeError(
                f"{self.who}: '{shown(path)}' is a {cls.__qualname__} that cannot be found again as "
                f"{spec!r} (classes defined inside a function cannot); define the class at module level"
            )
        dynamic, static = field_names(cls)
        children, static_values, _ = cls._pn_flatten(x)  # type: ignore[attr-defined]
        return {
            "kind": "node",
            "class": spec,
            "fields": list(dynamic),
            "children": [
                self.node(c, join(path, n)) for n, c in zip(dynamic, children, strict=True)
            ],
            "static": {
                n: _static_json(v, join(path, n), self.who)
                for n, v in zip(static, static_values, strict=True)
            },
        }


def _unsupported(t: torch.Tensor) -> str | None:
    """Why `t` cannot be written (its data is not one dense block of memory), or None."""
    if t.layout != torch.strided:
        return "sparse"
    if t.is_quantized:
        return "quantized"
    if t.is_nested:
        return "nested"
    if t.device.type == "meta":
        return "on the meta device (no data)"
    return None


def stored(t: torch.Tensor) -> torch.Tensor:
    """`t` as written: on the CPU, contiguous, no lazy conj/neg bit; a dtype outside
    `NATIVE_CODES` as a 1-d uint8 tensor of its bytes. `t` itself when it already is so
    (the writer only reads it); otherwise a copy."""
    out = t.detach()
    if out.device.type != "cpu" or not out.is_contiguous() or out.is_conj() or out.is_neg():
        out = out.to("cpu", memory_format=torch.contiguous_format, copy=True)
        out = out.resolve_conj().resolve_neg()
    if t.dtype not in NATIVE_CODES:
        out = out.reshape(-1).view(torch.uint8)
    return out


def _static_json(value: Any, where: str, who: str) -> Any:
    if type(value) in STATIC_SCALARS:
        return value
    if type(value) is tuple:
        return [_static_json(v, where, who) for v in value]
    raise TypeError(
        f"{who}: static field '{where}' is a {type(value).__name__}; checkpoints hold static "
        "values of type bool, int, float, str, None and tuples of these"
    )


def field_names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields = attrs.fields(cls)
    dynamic = tuple(f.name for f in fields if not f.metadata.get("static", False))
    static = tuple(f.name for f in fields if f.metadata.get("static", False))
    return dynamic, static


def lookup_class(spec: str) -> Any:
    """The object named `module:qualname` among imported modules, read from `__dict__`s only (runs no code).

    None if the module is not imported or has no such attribute.
    """
    module_name, _, qualname = spec.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        # Only modules and classes are walked, through their own __dict__: no attribute hooks.
        if not isinstance(obj, (types.ModuleType, type)):
            return None
        obj = obj.__dict__.get(part)
    return obj
