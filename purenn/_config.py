"""`pn.config`: the one documented piece of global, mutable state in purenn."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, ClassVar

__all__ = ["Config", "config"]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


class Config:
    """Process-wide switches.

    Attributes:
        debug: when True, purenn's entry points (`pn.step`, `pn.apply_updates`,
            `model.apply`, the built-in update rules) check that no leaf of the
            trees they receive was modified in place since the tree was built
            (`pn.check_unmodified`), raising `pn.MutatedError`. Default: the
            `PURENN_DEBUG` environment variable, else False; the `purenn.testing`
            pytest plugin turns it on for test sessions.
        jit: when False, `pn.jit` runs functions eagerly (same semantics, no
            compilation), for debugging. Default: `PURENN_JIT`, else True.
        check_finite: when True, `pn.step` checks the new params and optimizer
            state and raises `pn.NonFiniteError` naming the first path that became
            NaN or inf, the step (the state's `count`) and whether the gradients
            were finite. Never inside compiled code (inside `pn.jit`, call
            `pn.check_finite` on the results instead). Costs one device sync per
            step. Default: `PURENN_CHECK_FINITE`, else False.

    Example:
        >>> import purenn as pn
        >>> with pn.config.override(debug=True):
        ...     pass  # mutation checks on inside this block
    """

    __slots__ = ("check_finite", "debug", "jit")
    check_finite: bool
    debug: bool
    jit: bool
    _FIELDS: ClassVar[dict[str, type]] = {"debug": bool, "jit": bool, "check_finite": bool}

    def __init__(self) -> None:
        object.__setattr__(self, "debug", _env_flag("PURENN_DEBUG", False))
        object.__setattr__(self, "jit", _env_flag("PURENN_JIT", True))
        object.__setattr__(self, "check_finite", _env_flag("PURENN_CHECK_FINITE", False))

    def __setattr__(self, name: str, value: Any) -> None:
        expected = self._FIELDS.get(name)
        if expected is None:
            raise AttributeError(
                f"pn.config has no setting {name!r}; the settings are {sorted(self._FIELDS)}"
            )
        if not isinstance(value, expected):
            raise TypeError(
                f"pn.config.{name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
            )
        object.__setattr__(self, name, value)

    @contextlib.contextmanager
    def override(self, **settings: Any) -> Iterator[Config]:
        """Set some settings inside a `with` block and restore the previous values after it."""
        previous = {name: getattr(self, name) for name in settings if name in self._FIELDS}
        try:
            for name, value in settings.items():
                setattr(self, name, value)
            yield self
        finally:
            for name, value in previous.items():
                object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return "pn.config(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS) + ")"


config = Config()
