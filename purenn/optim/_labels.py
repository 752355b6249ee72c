"""Per-leaf labels and masks for `masked`, `multi_transform`, `freeze`: from a tree, a function or path patterns."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import _treeutil
from .._errors import TreeMismatchError
from .._params import Params

__all__ = ["LabelSpec", "check_paths", "resolve"]

# A tree of labels like params; a function params -> such a tree; or a mapping of glob patterns
# on dotted paths (nested mappings join their keys with dots), where the first match wins.
LabelSpec = Any | Callable[[Any], Any] | Mapping[str, Any]


def _flat_patterns(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        pattern = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flat_patterns(value, pattern))
        else:
            flat[pattern] = value
    return flat


def _as_label(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype == torch.bool:
        return bool(value)
    return value


def resolve(
    spec: LabelSpec, tree: Any, owner: str, kind: str = "label"
) -> tuple[list[str], list[Any]]:
    """`(paths, labels)`: the label of every leaf of `tree`, in leaf order.

    Args:
        spec: a tree with `tree`'s paths and a label per leaf (e.g. from `pn.tree.map`),
            a function `tree -> such a tree`, or a plain mapping from glob patterns
            (`fnmatch` on dotted paths, `*` also matches dots) to labels, first match wins.
        tree: the params (or grads) to label.
        owner: the combinator, for error messages.
        kind: "label" or "mask" (then every label must be a bool).

    Raises:
        TreeMismatchError: a path of `tree` without a label, naming it, or a label tree
            with a path `tree` lacks.
        TypeError: a mask value that is not a bool.
    """
    paths = _treeutil.flatten_with_paths(tree)[0]
    if callable(spec) and not isinstance(spec, Mapping):
        spec = spec(tree)
    if isinstance(spec, Mapping) and not isinstance(spec, Params):
        patterns = _flat_patterns(spec)
        labels = []
        for path in paths:
            match = next((p for p in patterns if fnmatch.fnmatchcase(path, p)), None)
            if match is None:
                raise TreeMismatchError(
                    f"{owner}: no pattern matches param '{path}' (patterns: {list(patterns)}); "
                    "add one, e.g. '*' last as a catch-all"
                )
            labels.append(_as_label(patterns[match]))
    else:
        spec_paths, spec_leaves, _ = _treeutil.flatten_with_paths(spec)
        by_path = dict(zip(spec_paths, spec_leaves, strict=True))
        for path in paths:
            if path not in by_path:
                raise TreeMismatchError(f"{owner}: the {kind} tree has no entry for param '{path}'")
        known = set(paths)
        extra = [p for p in spec_paths if p not in known]
        if extra:
            raise TreeMismatchError(
                f"{owner}: the {kind} tree has an entry '{extra[0]}' that params do not have"
            )
        labels = [_as_label(by_path[path]) for path in paths]
    if kind == "mask":
        for path, label in zip(paths, labels, strict=True):
            if not isinstance(label, bool):
                raise TypeError(
                    f"{owner}: the mask for param '{path}' must be a bool, got {type(label).__name__}"
                )
    return paths, labels


def check_paths(owner: str, expected: tuple[str, ...], tree: Any, name: str = "grads") -> list[str]:
    """The paths of `tree`, which must be those the state was made for; else name the first difference."""
    paths = _treeutil.flatten_with_paths(tree)[0]
    if tuple(paths) != expected:
        have, want = set(paths), set(expected)
        missing = [p for p in expected if p not in have]
        extra = [p for p in paths if p not in want]
        if missing:
            where = f"'{missing[0]}' is in the state but not in {name}"
        elif extra:
            where = f"'{extra[0]}' is in {name} but not in the state"
        else:
            where = f"the paths are in another order: {paths[:6]} vs {list(expected[:6])}"
        raise TreeMismatchError(
            f"{owner}: {name} does not have the structure of the optimizer state (from opt.init(params)): "
            f"{where}"
        )
    return paths
