"""Check of property 5: `pn.jit` with donation gives bitwise its results without; compiled ~ eager."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import _treeutil
from .._donation import check_alive, nodes
from .._errors import DonatedError
from .._jit import jit
from ._compare import describe_difference

__all__ = ["check_donation_equivalence"]


def _copy(tree: Any) -> Any:
    return _treeutil.tree_map(
        lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x, tree
    )


def _carry(args: list[Any], out: Any, positions: Sequence[int]) -> list[Any]:
    """The next call's arguments: output i replaces argument i for each donated position i."""
    outputs = out if isinstance(out, tuple) else (out,)
    new = list(args)
    for i in positions:
        if i < len(outputs):
            new[i] = outputs[i]
        else:
            raise ValueError(
                f"check_donation_equivalence: with steps > 1, output {i} must be the new value of "
                f"donated argument {i}, but fn returned {len(outputs)} output(s)"
            )
    return new


def _is_dead(arg: Any) -> bool:
    """Whether a donated argument is marked dead (only purenn nodes can be: bare tensors cannot)."""
    if next(iter(nodes(arg)), None) is None:
        return True
    try:
        check_alive(arg, "")
    except DonatedError:
        return True
    return False


def check_donation_equivalence(
    fn: Callable[..., Any],
    args: Sequence[Any],
    donate_argnums: int | Sequence[int],
    *,
    steps: int = 2,
    backend: Any = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    **compile_options: Any,
) -> None:
    """Property 5: `pn.jit(fn, donate_argnums=...)` gives bitwise `pn.jit(fn)`'s results; both ~ `fn`.

    Runs `steps` calls of three versions on private copies of `args`: `fn` itself
    (eager), `pn.jit(fn)`, and `pn.jit(fn, donate_argnums=donate_argnums)`. With
    `steps > 1` each call's outputs feed the next: output `i` replaces argument `i`
    for every donated position `i` (a training step returns the new values of its
    donated arguments first). After every call the donating result must equal the
    non-donating one bitwise, the compiled one must equal the eager one to `rtol`/
    `atol`, and every donated argument must be dead (`pn.DonatedError` on use).
    The second call is the one that writes into reused buffers. "Bitwise" counts -0.0
    and 0.0 as equal: donating packs a tree into one flat buffer, and torch's vectorized
    kernels on it may give the other zero (`lerp`, for one) where per-leaf loops do not.

    Args:
        fn: a pure function of purenn trees and tensors.
        args: its positional arguments (not modified: the check copies them).
        donate_argnums: the positions to donate.
        steps: how many calls.
        backend: `torch.compile`'s backend (default inductor); a cheap one such as
            `"eager"` checks the donation machinery without code generation.
        rtol, atol: compiled vs eager tolerance.
        **compile_options: passed to `pn.jit` (`compile=False` runs it eagerly).

    Raises:
        AssertionError: naming the call, the output path and element, and both values.

    Example:
        >>> def train_step(params, state, grads):
        ...     return pn.step(opt, params, grads, state)
        >>> pn.testing.check_donation_equivalence(
        ...     train_step, (params, opt.init(params), grads), donate_argnums=(0, 1), backend="eager"
        ... )
    """
    positions = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
    options = dict(compile_options)
    if backend is not None:
        options["backend"] = backend
    plain = jit(fn, **options)
    donating = jit(fn, donate_argnums=positions, **options)
    eager_args, plain_args, donated_args = (
        [_copy(a) for a in args],
        [_copy(a) for a in args],
        [_copy(a) for a in args],
    )
    for call in range(1, steps + 1):
        expected = fn(*eager_args)
        compiled = plain(*plain_args)
        inputs = list(donated_args)
        with warnings.catch_warnings():
            # Bare donated tensors cannot be marked dead; this check knows (see _is_dead).
            warnings.filterwarnings("ignore", message=".*cannot be marked dead")
            got = donating(*donated_args)
        found = describe_difference(
            got,
            compiled,
            bitwise=True,
            signed_zeros=False,
            names=("without donation", "with donation"),
        )
        if found is not None:
            raise AssertionError(
                f"check_donation_equivalence: call {call}: the result with donation differs from "
                f"the result without, output {found}"
            )
        found = describe_difference(
            compiled, expected, rtol=rtol, atol=atol, names=("eager", "compiled")
        )
        if found is not None:
            raise AssertionError(
                f"check_donation_equivalence: call {call}: the compiled result differs from "
                f"fn's eager result, output {found}"
            )
        for i in positions:
            if not _is_dead(inputs[i]):
                raise AssertionError(
                    f"check_donation_equivalence: call {call}: donated argument {i} is still "
                    "usable after the call; pn.jit must mark it dead (pn.DonatedError on use)"
                )
        if call < steps:
            eager_args = _carry(eager_args, expected, positions)
            plain_args = _carry(plain_args, compiled, positions)
            donated_args = _carry(donated_args, got, positions)
