"""`pn.tree.summary`: a table of a tree's leaves (path, shape, dtype, device, numel, norm)."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import _treeutil

__all__ = ["Summary", "summary"]

_HEADER = ("path", "shape", "dtype", "device", "numel", "norm")


@attrs.frozen
class Summary:
    """The rows of `pn.tree.summary`; prints as an aligned table with a total line."""

    rows: tuple[tuple[str, str, str, str, int, float], ...]

    @property
    def numel(self) -> int:
        return sum(row[4] for row in self.rows)

    def __str__(self) -> str:
        cells = [_HEADER] + [
            (p, s, d, dev, f"{n:,}", f"{norm:.4g}") for p, s, d, dev, n, norm in self.rows
        ]
        cells.append(("total", "", "", "", f"{self.numel:,}", ""))
        widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 4 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in cells
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        return "\n".join(lines)

    __repr__ = __str__


def summary(tree: Any) -> Summary:
    """A table of every leaf: path, shape, dtype, device, numel and L2 norm.

    Reads tensor values (the norms), so it synchronises with the device; meant for
    inspection, not for the training hot path.

    Example:
        >>> print(pn.tree.summary(opt_state))
        path              shape     dtype    device  numel   norm
        ...
    """
    paths, leaves, _ = _treeutil.flatten_with_paths(tree)
    rows = []
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"pn.tree.summary: leaf '{path}' is a {type(leaf).__name__}, not a tensor"
            )
        values = leaf.detach()
        values = values if _treeutil.is_inexact(values) else values.double()
        norm = float(torch.linalg.vector_norm(values)) if values.numel() else 0.0
        dtype = str(leaf.dtype).removeprefix("torch.")
        rows.append((path, str(list(leaf.shape)), dtype, str(leaf.device), leaf.numel(), norm))
    return Summary(tuple(rows))
