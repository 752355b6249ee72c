"""The purenn exception hierarchy: one base, each error also a builtin type for `except` compatibility."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "DonatedError",
    "MutatedError",
    "NonFiniteError",
    "PurennError",
    "ShapeError",
    "StateError",
    "TreeMismatchError",
]


class PurennError(Exception):
    """Base class of every error purenn raises on bad input."""


class TreeMismatchError(PurennError, ValueError):
    """Two trees that must share a structure do not; the message names the first differing path."""


class ShapeError(PurennError, ValueError):
    """A tensor has the wrong shape, rank, dtype or device for where it was passed; the message names it."""


class StateError(PurennError, ValueError):
    """A stateful model was called without its state, or with state of the wrong structure."""


class MutatedError(PurennError, RuntimeError):
    """A leaf of a purenn tree was modified in place after the tree was built."""


class DonatedError(PurennError, RuntimeError):
    """A tree that was donated to a compiled function was used after the call consumed it."""


def dead_message(value: Any) -> str | None:
    """The DonatedError message of a tree node (Params, state) consumed by a donating call, else None.

    Such nodes carry it in `_pn_dead` once killed (see `pn.jit`); other values
    (tensors, numbers, live nodes) have none.
    """
    if getattr(type(value), "_kill", None) is None:
        return None
    return getattr(value, "_pn_dead", None)


def raise_if_dead(value: Any, where: str) -> None:
    """Raise DonatedError if `value` is a node consumed by a donating call.

    The message starts with `where` (the argument the dead tree was just passed as)
    and goes on with the call that consumed it: "update: argument 1 (state) cannot be
    used: argument 1 (state) was donated to update (call 2), ...".
    """
    message = dead_message(value)
    if message is not None:
        raise DonatedError(f"{where} cannot be used: {message}" if where else message)


class CheckpointError(PurennError, OSError):
    """A checkpoint is missing, truncated, corrupted or does not match what was expected."""


class CheckpointMismatchError(CheckpointError, TreeMismatchError):
    """A checkpoint is intact but does not match `like` (structure, shape or dtype); names the first path."""


class NonFiniteError(PurennError, FloatingPointError):
    """A tree holds NaN or inf where it must not (`pn.check_finite`, `pn.config.check_finite`); names the path."""
