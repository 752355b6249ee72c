"""Arithmetic over trees: add, sub, scale, global_norm, allclose, diff."""

from __future__ import annotations

import functools
from collections.abc import Callable
from numbers import Number
from typing import Any

import torch

from .. import _treeutil
from .._errors import ShapeError

__all__ = ["add", "allclose", "diff", "global_norm", "scale", "sub"]


def add(a: Any, b: Any) -> Any:
    """Leaf-wise `a + b` over two trees of the same structure and leaf shapes.

    Raises:
        TreeMismatchError: the structures differ (names the first differing path).
        ShapeError: two leaves at the same path differ in shape (no broadcasting).
    """
    return _leafwise("add", torch.add, a, b)


def sub(a: Any, b: Any) -> Any:
    """Leaf-wise `a - b` over two trees of the same structure and leaf shapes.

    Raises:
        TreeMismatchError: the structures differ (names the first differing path).
        ShapeError: two leaves at the same path differ in shape (no broadcasting).
    """
    return _leafwise("sub", torch.sub, a, b)


class _ShapeMismatch(Exception):
    pass


def _leafwise(name: str, op: Callable[..., Any], a: Any, b: Any) -> Any:
    # torch would broadcast a (4,) leaf against a (3, 4) one and change the tree's shapes.
    def apply(x: Any, y: Any) -> Any:
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape != y.shape:
            raise _ShapeMismatch
        return op(x, y)

    try:
        return _treeutil.tree_map(apply, a, b, names=["a", "b"])
    except _ShapeMismatch:
        paths, xs, _ = _treeutil.flatten_with_paths(a)
        _check_shapes(name, paths, xs, _treeutil.flatten(b)[0])
        raise AssertionError("unreachable: a shape mismatch was seen but not found again") from None


def _check_shapes(name: str, paths: list[str], xs: list[Any], ys: list[Any]) -> None:
    """Raise ShapeError at the first path where tensor leaves `xs` and `ys` differ in shape."""
    for path, x, y in zip(paths, xs, ys, strict=True):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape != y.shape:
            raise ShapeError(
                f"pn.tree.{name}: at '{path}', a has shape {tuple(x.shape)} but b has "
                f"{tuple(y.shape)}; leaves are combined without broadcasting"
            )


def scale(tree: Any, factor: float | torch.Tensor) -> Any:
    """Every leaf multiplied by `factor` (a number or 0-d tensor). `scale(factor, tree)` also works."""
    if isinstance(tree, Number) and not isinstance(factor, Number):
        tree, factor = factor, tree
    if isinstance(factor, torch.Tensor):
        if factor.dim() != 0:
            raise ValueError(
                "pn.tree.scale: factor must be a number or a 0-d tensor, got shape "
                f"{tuple(factor.shape)}"
            )
    elif not isinstance(factor, Number):
        raise TypeError(
            f"pn.tree.scale: factor must be a number or a 0-d tensor, got a {type(factor).__name__}"
        )
    return _treeutil.tree_map(lambda leaf: leaf * factor, tree)


def global_norm(tree: Any) -> torch.Tensor:
    """The L2 norm of all leaves together, `sqrt(sum_i ||leaf_i||^2)`, as a 0-d tensor.

    Computed per leaf in the leaf's dtype (as `torch.nn.utils.clip_grad_norm_` does)
    and returned on the first leaf's device; 0 for an empty tree.

    Raises:
        TypeError: a leaf is an integer or bool tensor (a step count, BatchNorm's
            `num_batches_tracked`), naming its path: take the norm of the float part.

    Example:
        >>> pn.tree.global_norm(pn.Params({"a": torch.full((4,), 3.0), "b": torch.tensor(4.0)}))
        tensor(7.2111)
    """
    leaves = _treeutil.tensor_leaves(tree)
    if not leaves:
        return torch.tensor(0.0)
    if not all(map(_treeutil.is_inexact, leaves)):
        path, leaf = _treeutil.exact_tensor_leaves(tree)[0]
        raise TypeError(
            f"pn.tree.global_norm: leaf '{path}' is {leaf.dtype}; a norm needs floating-point "
            "leaves (select the float leaves, e.g. the params or grads rather than a whole state)"
        )
    norms = [torch.linalg.vector_norm(leaf) for leaf in leaves]
    dtype = functools.reduce(torch.promote_types, (n.dtype for n in norms))
    device = leaves[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))


def allclose(
    a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8, *, equal_nan: bool = False
) -> bool:
    """True when the trees share a structure and every pair of leaves is `torch.allclose`.

    Leaves with different shapes, dtypes or devices are not close.

    Raises:
        TreeMismatchError: if the structures differ (naming the first differing path).
    """
    _treeutil.check_same_structure(a, [b], ["a", "b"])
    for x, y in zip(_treeutil.flatten(a)[0], _treeutil.flatten(b)[0], strict=True):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            if x != y:
                return False
            continue
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
            return False
        if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan):
            return False
    return True


def diff(a: Any, b: Any) -> Any:
    """Per-leaf L2 norm of the change `b - a`, as a tree of 0-d tensors with the structure of `a`.

    Example:
        >>> new_params, state = pn.step(opt, params, grads, state)
        >>> print(pn.tree.summary(pn.tree.diff(params, new_params)))  # what each leaf moved
    """
    _treeutil.check_same_structure(a, [b], ["a", "b"])
    paths, old, spec = _treeutil.flatten_with_paths(a)
    new = _treeutil.flatten(b)[0]
    _check_shapes("diff", paths, old, new)
    norms = []
    for x, y in zip(old, new, strict=True):
        dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
        norms.append(torch.linalg.vector_norm(y.to(dtype) - x.to(dtype)))
    return _treeutil.unflatten(spec, norms)
