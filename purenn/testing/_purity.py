"""Checks of properties 1-3: inputs untouched, bitwise determinism, structure of updates and state."""

from __future__ import annotations

from typing import Any

import torch

from .. import _treeutil
from ..optim import GradientTransformation
from ._compare import bits, describe_difference
from ._problem import Grads, grads_at

__all__ = ["check_deterministic", "check_pure", "check_structure", "check_update_rule"]


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


def _snapshot(name: str, tree: Any) -> list[tuple[str, Any, Any, int | None]]:
    """(path, leaf, copy of its value, version counter) for every leaf of `tree`."""
    paths, leaves, _ = _treeutil.flatten_with_paths(tree)
    return [
        (
            f"{name}.{path}" if path else name,
            leaf,
            leaf.detach().clone() if isinstance(leaf, torch.Tensor) else leaf,
            _version(leaf) if isinstance(leaf, torch.Tensor) else None,
        )
        for path, leaf in zip(paths, leaves, strict=True)
    ]


def _modified(snapshot: list[tuple[str, Any, Any, int | None]]) -> str | None:
    """How the first leaf that changed since `_snapshot` changed, or None."""
    for path, leaf, copy, version in snapshot:
        if not isinstance(leaf, torch.Tensor):
            continue
        now = _version(leaf)
        if version is not None and now != version:
            return f"modified {path} in place (its version counter went {version} -> {now})"
        if not torch.equal(bits(leaf.detach()), bits(copy)):
            where = describe_difference(
                leaf.detach(), copy, bitwise=True, names=("before", "after"), prefix=path
            )
            return (
                f"changed the values of {path} without bumping its version counter "
                f"(a write through .data or a foreign buffer?): {where}"
            )
    return None


def _rng_states() -> list[torch.Tensor]:
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states.extend(torch.cuda.get_rng_state_all())
    return states


def _start(opt: GradientTransformation, params: Any, state: Any, check: str) -> Any:
    if not isinstance(opt, GradientTransformation):
        raise TypeError(f"{check}: opt must be a GradientTransformation, got {type(opt).__name__}")
    return opt.init(params) if state is None else state


def check_pure(
    opt: GradientTransformation, params: Any, grads: Grads, state: Any = None, steps: int = 2
) -> None:
    """Property 1: `opt.init` and `opt.update` leave every input leaf untouched, and the global RNG too.

    Runs `opt.init(params)` (unless `state` is given) and then `steps` updates with
    `params` fixed and the state carried from update to update (the first update and
    the later ones often take different branches). Before each call it records every
    leaf of grads, state and params: its value (bitwise) and its autograd version
    counter; afterwards both must be unchanged, and so must the global RNG state.

    Args:
        opt: the rule.
        params: a params tree (any shapes and floating dtypes the rule accepts).
        grads: a gradient tree like `params`, or `grads(params, step) -> tree`.
        state: start from this state instead of `opt.init(params)`.
        steps: how many updates to run.

    Raises:
        AssertionError: naming the step, the input (grads/state/params) and leaf path,
            and whether its version counter moved or only its values changed.

    Example:
        >>> pn.testing.check_pure(pn.optim.adam(1e-3), params, grads)
    """
    before = _snapshot("params", params)
    rng = _rng_states()
    state = _start(opt, params, state, "check_pure")
    problem = _modified(before)
    if problem is not None:
        raise AssertionError(f"check_pure: opt.init(params) {problem}")
    _check_rng(rng, "check_pure: opt.init(params)")
    for step in range(steps):
        g = grads_at(grads, params, step)
        snapshot = [
            *_snapshot("grads", g),
            *_snapshot("state", state),
            *_snapshot("params", params),
        ]
        rng = _rng_states()
        _, state = opt.update(g, state, params)
        problem = _modified(snapshot)
        if problem is not None:
            raise AssertionError(
                f"check_pure: step {step + 1}: opt.update(grads, state, params) {problem}"
            )
        _check_rng(rng, f"check_pure: step {step + 1}: opt.update(grads, state, params)")


def _check_rng(before: list[torch.Tensor], what: str) -> None:
    after = _rng_states()
    if len(after) != len(before) or not all(
        torch.equal(a, b) for a, b in zip(after, before, strict=False)
    ):
        raise AssertionError(
            f"{what} advanced the global random number generator; a pure rule takes its "
            "randomness from an explicit key (pn.random) in its state or arguments"
        )


def check_deterministic(
    opt: GradientTransformation, params: Any, grads: Grads, state: Any = None, steps: int = 2
) -> None:
    """Property 2: the same inputs give bitwise the same outputs, at init and at every step.

    Calls `opt.init(params)` twice and, for each of `steps` steps, `opt.update` twice
    on the same (grads, state, params); the two results (updates and new state) must
    be bitwise equal. The state is carried from the first call.

    Raises:
        AssertionError: naming the step, the output (updates or state), the path, and both values.

    Example:
        >>> pn.testing.check_deterministic(pn.optim.sgd(0.1, momentum=0.9), params, grads)
    """
    if state is None:
        state = _start(opt, params, None, "check_deterministic")
        again = opt.init(params)
        found = describe_difference(again, state, bitwise=True, names=("first", "second"))
        if found is not None:
            raise AssertionError(f"check_deterministic: opt.init(params) twice differ {found}")
    for step in range(steps):
        g = grads_at(grads, params, step)
        first = opt.update(g, state, params)
        second = opt.update(g, state, params)
        for i, what in enumerate(("updates", "new state")):
            found = describe_difference(
                second[i], first[i], bitwise=True, names=("first call", "second call")
            )
            if found is not None:
                raise AssertionError(
                    f"check_deterministic: step {step + 1}: two calls of opt.update on the same "
                    f"inputs give different {what}, {found}"
                )
        state = first[1]


def _kind(tree: Any, name: str) -> list[tuple[str, Any]]:
    paths, leaves, _ = _treeutil.flatten_with_paths(tree)
    return [(f"{name} '{p}'", leaf) for p, leaf in zip(paths, leaves, strict=True)]


def _same_kinds(got: Any, like: Any, got_name: str, like_name: str) -> str | None:
    spec, like_spec = _treeutil.structure(got), _treeutil.structure(like)
    if spec != like_spec:
        return str(_treeutil.mismatch_error(like_spec, spec, like_name, got_name))
    for (where, g), (_, r) in zip(_kind(got, got_name), _kind(like, like_name), strict=True):
        if not (isinstance(g, torch.Tensor) and isinstance(r, torch.Tensor)):
            if isinstance(g, torch.Tensor) != isinstance(r, torch.Tensor):
                return f"{where} is a {type(g).__name__} where {like_name} has a {type(r).__name__}"
            continue
        for what in ("shape", "dtype", "device"):
            a, b = getattr(g, what), getattr(r, what)
            if a != b:
                a, b = (tuple(a), tuple(b)) if what == "shape" else (a, b)
                return f"{where} has {what} {a}, but {like_name} has {b}"
    return None


def check_structure(
    opt: GradientTransformation, params: Any, grads: Grads, state: Any = None, steps: int = 2
) -> None:
    """Property 3: updates are shaped like params; the new state like the old one.

    For each of `steps` updates: the updates have the structure of `params` and each
    leaf its param's shape, dtype and device; the new state has the structure of
    the state passed in, and each leaf keeps its shape, dtype and device (a count
    that turns from int64 into float, or a buffer that changes device, fails).

    Raises:
        AssertionError: naming the step, the path, and what differs.

    Example:
        >>> pn.testing.check_structure(pn.optim.adamw(), params, grads)
    """
    state = _start(opt, params, state, "check_structure")
    for step in range(steps):
        updates, new_state = opt.update(grads_at(grads, params, step), state, params)
        found = _same_kinds(updates, params, "updates", "params")
        if found is None:
            found = _same_kinds(new_state, state, "the new state", "the old state")
        if found is not None:
            raise AssertionError(f"check_structure: step {step + 1}: {found}")
        state = new_state


def check_update_rule(
    opt: GradientTransformation, params: Any, grads: Grads, state: Any = None, steps: int = 2
) -> None:
    """Properties 1-3 at once: `check_pure`, `check_deterministic` and `check_structure`.

    Example:
        >>> pn.testing.check_update_rule(my_rule, params, grads)
    """
    check_pure(opt, params, grads, state, steps)
    check_deterministic(opt, params, grads, state, steps)
    check_structure(opt, params, grads, state, steps)
