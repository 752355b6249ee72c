"""Check of property 13: a schedule's values at documented points, and its monotonicity."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch

__all__ = ["check_schedule"]

_ORDER = {"increasing": "non-decreasing", "decreasing": "non-increasing"}


def _value(schedule: Callable[[Any], Any], count: Any) -> float:
    return float(schedule(count))


def check_schedule(
    schedule: Callable[[Any], Any],
    points: Mapping[int, float],
    monotone: Literal["increasing", "decreasing"] | None = None,
    *,
    over: Iterable[int] | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> None:
    """Property 13: `schedule(t)` is `points[t]` at each documented point; monotone where documented.

    Each point is evaluated with an int count and with an int64 0-d tensor count,
    which must agree exactly, and must equal `points[t]` to `rtol`/`atol` (default:
    exactly). With `monotone`, the values at the counts `over` (default `0 ..
    max(points)`) must never decrease (`"increasing"`) or never increase
    (`"decreasing"`).

    Raises:
        AssertionError: naming the count, the expected and the actual value.

    Example:
        >>> sched = pn.schedules.warmup_cosine_decay(0.0, 1.0, warmup_steps=10, decay_steps=100)
        >>> pn.testing.check_schedule(sched, {0: 0.0, 10: 1.0, 100: 0.0})
        >>> pn.testing.check_schedule(sched, {}, "increasing", over=range(0, 11))
    """
    if monotone is not None and monotone not in _ORDER:
        raise ValueError(
            f"check_schedule: monotone must be 'increasing', 'decreasing' or None, got {monotone!r}"
        )
    for t, expected in points.items():
        got = _value(schedule, t)
        as_tensor = _value(schedule, torch.tensor(t, dtype=torch.int64))
        if as_tensor != got and not (got != got and as_tensor != as_tensor):
            raise AssertionError(
                f"check_schedule: at count {t} the schedule gives {got!r} for an int count but "
                f"{as_tensor!r} for a 0-d tensor count"
            )
        if not abs(got - expected) <= atol + rtol * abs(expected):
            raise AssertionError(
                f"check_schedule: at count {t}: expected {expected!r}, got {got!r}"
            )
    if monotone is None:
        return
    counts = list(over) if over is not None else list(range(0, max(points, default=0) + 1))
    previous: tuple[int, float] | None = None
    for t in counts:
        value = _value(schedule, t)
        if previous is not None:
            before_t, before = previous
            wrong = value < before if monotone == "increasing" else value > before
            if wrong or value != value:
                raise AssertionError(
                    f"check_schedule: not {_ORDER[monotone]}: count {t} gives {value!r}, "
                    f"count {before_t} gave {before!r}"
                )
        previous = (t, value)
