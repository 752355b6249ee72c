"""The schedule base class: a frozen callable from a step count to a float64 0-d tensor."""

from __future__ import annotations

import abc
import math
from typing import Any

import attrs
import torch

__all__ = ["Schedule", "as_count", "check_finite", "check_steps"]


@attrs.frozen
class Schedule(abc.ABC):
    """A value per step count: `schedule(count) -> float64 0-d tensor`, count from 0.

    Subclasses are frozen attrs classes whose fields are the schedule's arguments
    (readable: `sched.peak_value`) and implement `value(t)` on a float64 0-d tensor
    with tensor operations only, so that a compiled step that evaluates the schedule
    at a changing count never recompiles. Any function `count -> value` also works
    where pn.optim takes a schedule; these are the ones with Optax's names and meanings.
    """

    def __call__(self, count: int | torch.Tensor) -> torch.Tensor:
        return self.value(as_count(count))

    @abc.abstractmethod
    def value(self, t: torch.Tensor) -> torch.Tensor:
        """The schedule's value at count `t` (a float64 0-d tensor), computed with tensor ops only."""


def as_count(count: Any) -> torch.Tensor:
    """A step count (int or 0-d tensor) as a float64 0-d tensor."""
    if isinstance(count, torch.Tensor):
        if count.numel() != 1:
            raise ValueError(f"a schedule takes a 0-d step count, got shape {tuple(count.shape)}")
        return count.reshape(()).to(torch.float64)
    if isinstance(count, bool) or not isinstance(count, (int, float)):
        raise TypeError(
            f"a schedule takes a step count (int or 0-d tensor), got {type(count).__name__}"
        )
    return torch.tensor(float(count), dtype=torch.float64)


def check_steps(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")


def check_finite(owner: str, **values: float) -> None:
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
