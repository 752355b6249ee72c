"""Finite checks: `pn.check_finite(tree)`, and the `pn.config.check_finite` check after each `pn.step`."""

from __future__ import annotations

from typing import Any

import torch

from . import _treeutil
from ._errors import NonFiniteError

__all__ = ["check_finite", "check_step", "first_nonfinite"]


def _kind(leaf: torch.Tensor) -> str:
    """'NaN', 'inf' or '-inf': what the first non-finite element of `leaf` is (NaN first)."""
    if bool(torch.isnan(leaf).any()):
        return "NaN"
    if leaf.is_complex():
        return "inf"
    return "inf" if bool((leaf == float("inf")).any()) else "-inf"


def first_nonfinite(tree: Any) -> tuple[str, str] | None:
    """`(path, "NaN" | "inf" | "-inf")` of the first leaf of `tree` holding a non-finite value, else None.

    Integer and bool leaves are always finite. One device sync per device in the
    common, all-finite case.
    """
    paths, leaves, _ = _treeutil.flatten_with_paths(tree)
    checked = [
        (path, leaf) for path, leaf in zip(paths, leaves, strict=True) if _treeutil.is_inexact(leaf)
    ]
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for _, leaf in checked:
        by_device.setdefault(leaf.device, []).append(torch.isfinite(leaf).all())
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
        return None
    for path, leaf in checked:
        if not bool(torch.isfinite(leaf).all()):
            return path, _kind(leaf)
    return None  # unreachable: some leaf was non-finite


def check_finite(tree: Any, name: str = "tree") -> None:
    """Raise `pn.NonFiniteError` naming the first leaf of `tree` that holds NaN or inf.

    Use it on the outputs of a `pn.jit`-compiled step (where `pn.config.check_finite`
    does not reach, since checks never run inside compiled code), or anywhere a tree
    must be finite.

    Args:
        tree: any purenn tree.
        name: how the message refers to the tree (e.g. "params").

    Raises:
        NonFiniteError: naming `name.path` and whether it holds NaN, inf or -inf.

    Example:
        >>> params, opt_state = train_step(params, opt_state, x, y)  # a pn.jit function
        >>> pn.check_finite(params, "params")
    """
    found = first_nonfinite(tree)
    if found is not None:
        path, kind = found
        raise NonFiniteError(f"{_join(name, path)} holds {kind}")


def _join(name: str, path: str) -> str:
    return f"{name}.{path}" if path else name


def _count(state: Any) -> int | None:
    """The update count in an optimizer state: its first leaf named `count` (e.g. AdamState.count)."""
    paths, leaves, _ = _treeutil.flatten_with_paths(state)
    for path, leaf in zip(paths, leaves, strict=True):
        if (
            path.rsplit(".", 1)[-1] == "count"
            and isinstance(leaf, torch.Tensor)
            and leaf.numel() == 1
        ):
            return int(leaf)
    return None


def check_step(params: Any, grads: Any, new_params: Any, new_state: Any) -> None:
    """After `pn.step`: raise NonFiniteError if the new params or state hold NaN/inf (skipped under compile).

    The message names the first non-finite path (params first, then the state), the
    step (the new state's `count`), and the likely cause: non-finite gradients, a
    param that was already non-finite, or the update rule itself.
    """
    if torch.compiler.is_compiling():
        return
    hits = (
        (name, first_nonfinite(tree))
        for name, tree in (("params", new_params), ("opt_state", new_state))
    )
    name, found = next(((n, f) for n, f in hits if f is not None), ("", None))
    if found is None:
        return
    path, kind = found
    count = _count(new_state)
    step = (
        f"at step {count} (the optimizer state's count after this update)"
        if count is not None
        else "in this pn.step (the optimizer state has no count to tell which step)"
    )
    bad_grads = first_nonfinite(grads)
    old = _leaf(params, path) if name == "params" else None
    verb = "became"
    if isinstance(old, torch.Tensor) and not bool(torch.isfinite(old).all()):
        verb = "holds"
        cause = "it was already non-finite in the params passed to this step"
    elif bad_grads is not None:
        cause = (
            f"the gradients were not finite (first: grads '{bad_grads[0]}' holds {bad_grads[1]}): "
            "check the loss and the batch of this step, or skip such updates with "
            "pn.optim.apply_if_finite(rule, max_consecutive_errors)"
        )
    else:
        cause = (
            "the gradients were finite, so the update rule produced it "
            "(e.g. a learning rate too large, or a division by a vanishing denominator)"
        )
    raise NonFiniteError(f"pn.step: {name} '{path}' {verb} {kind} {step}; {cause}")


def _leaf(tree: Any, path: str) -> Any:
    paths, leaves, _ = _treeutil.flatten_with_paths(tree)
    return leaves[paths.index(path)] if path in paths else None
