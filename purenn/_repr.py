"""Readable one-line descriptions of tree leaves: shapes, dtypes, devices; never tensor data."""

from __future__ import annotations

from typing import Any

import torch

from ._treeutil import flatten_with_paths


def describe_leaf(leaf: Any) -> str:
    if not isinstance(leaf, torch.Tensor):
        return f"{type(leaf).__name__} {leaf!r}"[:80]
    dtype = str(leaf.dtype).removeprefix("torch.")
    text = f"{dtype}[{', '.join(map(str, leaf.shape))}] {leaf.device}"
    if leaf.dim() == 0 and leaf.device.type == "cpu":
        try:  # a 0-d CPU scalar (a step count, a learning rate) is shown: it is a setting, not data
            text += f" = {leaf.item():.6g}"
        except RuntimeError:  # batched or fake tensors under torch.func / torch.compile
            pass
    return text + (", requires_grad" if leaf.requires_grad else "")


def tree_repr(name: str, tree: Any) -> str:
    paths, leaves, _ = flatten_with_paths(tree)
    if not paths:
        return f"{name}()"
    width = max(len(p) for p in paths)
    lines = [f"  {p.ljust(width)}  {describe_leaf(v)}" for p, v in zip(paths, leaves, strict=True)]
    if len(lines) > 40:
        lines = [*lines[:30], f"  ... {len(lines) - 35} more ...", *lines[-5:]]
    numel = sum(v.numel() for v in leaves if isinstance(v, torch.Tensor))
    return f"{name}(  # {len(paths)} leaves, {numel:,} elements\n" + "\n".join(lines) + "\n)"
