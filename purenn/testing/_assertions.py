"""Tree comparison assertions with messages that name the path."""

from __future__ import annotations

from typing import Any

import torch

from .. import _treeutil

__all__ = ["assert_tree_close", "assert_tree_equal"]


def assert_tree_close(
    actual: Any, expected: Any, *, rtol: float | None = None, atol: float | None = None
) -> None:
    """Assert two trees have one structure and close leaves (`torch.testing.assert_close` per leaf).

    Raises:
        AssertionError: naming the first differing path and the mismatch.
    """
    _treeutil.check_same_structure(expected, [actual], ["expected", "actual"])
    paths, expected_leaves, _ = _treeutil.flatten_with_paths(expected)
    for path, a, e in zip(paths, _treeutil.flatten(actual)[0], expected_leaves, strict=True):
        try:
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
        except AssertionError as error:
            raise AssertionError(f"trees differ at '{path}': {error}") from None


def assert_tree_equal(actual: Any, expected: Any) -> None:
    """Assert two trees are bitwise equal (same structure, shapes, dtypes, devices, values; NaNs equal)."""
    assert_tree_close(actual, expected, rtol=0.0, atol=0.0)
