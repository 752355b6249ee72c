"""The one gateway to optree: every tree call passes namespace="purenn", and structure errors name a path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optree
import torch

from ._errors import TreeMismatchError

NAMESPACE = "purenn"

PyTreeSpec = optree.PyTreeSpec


def flatten(tree: Any) -> tuple[list[Any], PyTreeSpec]:
    return optree.tree_flatten(tree, namespace=NAMESPACE)


def flatten_with_paths(tree: Any) -> tuple[list[str], list[Any], PyTreeSpec]:
    paths, leaves, spec = optree.tree_flatten_with_path(tree, namespace=NAMESPACE)
    return [path_str(p) for p in paths], leaves, spec


def structure(tree: Any) -> PyTreeSpec:
    return optree.tree_structure(tree, namespace=NAMESPACE)


def unflatten(spec: PyTreeSpec, leaves: Sequence[Any]) -> Any:
    return optree.tree_unflatten(spec, leaves)


def path_str(path: Sequence[Any]) -> str:
    return ".".join(str(entry) for entry in path)


def listed(paths: Sequence[str], limit: int) -> str:
    """The first `limit` paths, comma-separated, then how many more (for error messages)."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    return [leaf for leaf in flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def is_inexact(x: Any) -> bool:
    """Whether `x` is a floating-point or complex tensor (one that rounds and can be differentiated)."""
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def exact_tensor_leaves(tree: Any) -> list[tuple[str, torch.Tensor]]:
    """`(path, leaf)` for every tensor leaf that is neither floating-point nor complex (ints, bools)."""
    paths, leaves, _ = flatten_with_paths(tree)
    return [
        (path, leaf)
        for path, leaf in zip(paths, leaves, strict=True)
        if isinstance(leaf, torch.Tensor) and not is_inexact(leaf)
    ]


def _describe_node(spec: PyTreeSpec) -> str:
    if spec.is_leaf():
        return "a leaf"
    if spec.type is None:
        return "None"
    entries = [str(e) for e in spec.entries()]
    shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
    return f"{spec.type.__name__} with entries [{shown}]"


def first_difference(
    a: PyTreeSpec, b: PyTreeSpec, prefix: str = ""
) -> tuple[str, str, str, str] | None:
    """The first path where two structures differ: (path, message template, a's node, b's node)."""
    a_entries = [] if a.is_leaf() else list(a.entries())
    b_entries = [] if b.is_leaf() else list(b.entries())
    if a.is_leaf() != b.is_leaf() or a.type != b.type:
        return (
            prefix or "<root>",
            "{a} has {a_node} but {b} has {b_node}",
            _describe_node(a),
            _describe_node(b),
        )
    if a.is_leaf():
        return None
    # Entries in a's order, so the path named is the first difference in a's leaf order
    # (a subtree that differs before a key that only one side has).
    b_children = dict(zip(map(str, b_entries), b.children(), strict=True))
    for entry, child_a in zip(a_entries, a.children(), strict=True):
        child_b = b_children.get(str(entry))
        if child_b is None:
            return _join(prefix, entry), "{a} has it but {b} does not", "", ""
        found = first_difference(child_a, child_b, _join(prefix, entry))
        if found is not None:
            return found
    a_set = set(map(str, a_entries))
    for entry in b_entries:
        if str(entry) not in a_set:
            return _join(prefix, entry), "{b} has it but {a} does not", "", ""
    if a_entries != b_entries:
        a_shown, b_shown = (_escaped(str(e)) for e in (a_entries, b_entries))
        order = f"the same keys in a different order: {{a}} has {a_shown}, {{b}} has {b_shown}"
        return prefix or "<root>", order, "", ""
    return None


def _escaped(text: str) -> str:
    """`text` inside a message template that is later `str.format`ted."""
    return text.replace("{", "{{").replace("}", "}}")


def _join(prefix: str, entry: Any) -> str:
    return f"{prefix}.{entry}" if prefix else str(entry)


def check_same_structure(reference: Any, others: Sequence[Any], names: Sequence[str]) -> PyTreeSpec:
    """Raise TreeMismatchError naming the first differing path unless all trees share a structure.

    `names` names `reference` first, then each of `others` (used in the message).
    """
    spec = structure(reference)
    for other, name in zip(others, names[1:], strict=True):
        other_spec = structure(other)
        if other_spec != spec:
            raise mismatch_error(spec, other_spec, names[0], name)
    return spec


def mismatch_error(
    expected: PyTreeSpec, got: PyTreeSpec, expected_name: str, got_name: str
) -> TreeMismatchError:
    found = first_difference(expected, got)
    if found is None:  # specs differ only in flags optree tracks (e.g. namespace)
        return TreeMismatchError(f"{got_name} does not have the structure of {expected_name}")
    path, template, a_node, b_node = found
    what = template.format(a=expected_name, b=got_name, a_node=a_node, b_node=b_node)
    return TreeMismatchError(
        f"{got_name} does not have the structure of {expected_name}: at '{path}', {what}"
    )


def tree_map(
    fn: Callable[..., Any], tree: Any, *rest: Any, names: Sequence[str] | None = None
) -> Any:
    """optree.tree_map with purenn's namespace and a path-naming structure check."""
    if rest:
        names = names or ["tree"] + [f"rest[{i}]" for i in range(len(rest))]
        check_same_structure(tree, rest, names)
    return optree.tree_map(fn, tree, *rest, namespace=NAMESPACE)
