"""Hypothesis strategies for `pn.schedules`: valid schedules, and schedules with their documented values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .. import schedules as sched

__all__ = ["SCHEDULE_KINDS", "ScheduleCase", "schedule_cases", "schedules"]

Direction = Literal["increasing", "decreasing"]
SCHEDULE_KINDS = (
    "constant",
    "linear",
    "cosine_decay",
    "warmup_cosine_decay",
    "exponential_decay",
    "piecewise_constant",
    "join",
)


@attrs.frozen
class ScheduleCase:
    """A schedule, the values its documentation promises at some counts, and where it is monotone.

    `points` maps a count to the exact documented value there; `monotone` holds
    `(counts, "increasing" | "decreasing")` pairs, one per documented monotone phase.
    Feed them to `pn.testing.check_schedule`.
    """

    schedule: Callable[[Any], Any]
    points: dict[int, float]
    monotone: tuple[tuple[range, Direction], ...] = ()


_VALUE = st.one_of(st.sampled_from([0.0, 1.0, 1e-3]), st.floats(0.0, 1.0))
_POSITIVE = st.floats(1e-6, 1.0)


def _toward(start: float, end: float) -> Direction:
    return "increasing" if end >= start else "decreasing"


def _constant(draw: Any) -> ScheduleCase:
    v = draw(_VALUE)
    flat = range(0, 40)
    return ScheduleCase(
        sched.constant(v), {0: v, 1000: v}, ((flat, "increasing"), (flat, "decreasing"))
    )


def _linear(draw: Any) -> ScheduleCase:
    init, end = draw(_VALUE), draw(_VALUE)
    steps, begin = draw(st.integers(0, 100)), draw(st.integers(0, 30))
    s = sched.linear(init, end, steps, begin)
    if steps == 0:  # documented: a constant init_value
        return ScheduleCase(s, {0: init, begin + 7: init})
    points = {0: init, begin: init, begin + steps: end, begin + steps + 7: end}
    return ScheduleCase(s, points, ((range(0, begin + steps + 10), _toward(init, end)),))


def _cosine_decay(draw: Any) -> ScheduleCase:
    init, decay_steps, alpha = draw(_VALUE), draw(st.integers(1, 200)), draw(st.floats(0.0, 1.0))
    exponent = draw(st.one_of(st.just(1.0), st.floats(0.5, 3.0)))
    s = sched.cosine_decay(init, decay_steps, alpha, exponent)
    end = init * alpha
    points = {0: init, decay_steps: end, decay_steps + 10: end}
    return ScheduleCase(s, points, ((range(0, decay_steps + 12), "decreasing"),))


def _warmup_cosine_decay(draw: Any) -> ScheduleCase:
    init, peak, end = draw(_VALUE), draw(_VALUE), draw(_VALUE)
    warmup = draw(st.integers(0, 50))
    decay_steps = warmup + draw(st.integers(1, 200))
    s = sched.warmup_cosine_decay(init, peak, warmup, decay_steps, end)
    points = {0: init if warmup else peak, warmup: peak, decay_steps: end, decay_steps + 5: end}
    monotone = (
        (range(0, warmup + 1), _toward(init, peak)),
        (range(warmup, decay_steps + 8), _toward(peak, end)),
    )
    return ScheduleCase(s, points, monotone)


def _exponential_decay(draw: Any) -> ScheduleCase:
    init = draw(_POSITIVE)
    steps, begin = draw(st.integers(1, 50)), draw(st.integers(0, 20))
    rate = draw(st.one_of(st.sampled_from([0.5, 0.99, 1.0, 2.0]), st.floats(0.01, 2.0)))
    staircase = draw(st.booleans())
    end_value = draw(st.one_of(st.none(), st.floats(0.0, 2.0)))
    s = sched.exponential_decay(init, steps, rate, begin, staircase, end_value)

    def clipped(v: float) -> float:
        if end_value is None:
            return v
        return max(v, end_value) if rate < 1.0 else min(v, end_value)

    points = {0: clipped(init), begin: clipped(init), begin + steps: clipped(init * rate)}
    direction: Direction = "decreasing" if rate < 1.0 else "increasing"
    return ScheduleCase(s, points, ((range(0, begin + 3 * steps), direction),))


def _piecewise_constant(draw: Any) -> ScheduleCase:
    init = draw(_VALUE)
    boundaries = draw(st.lists(st.integers(0, 100), max_size=4, unique=True))
    scales = [
        draw(st.one_of(st.sampled_from([0.1, 0.5, 1.0, 2.0]), st.floats(0.0, 2.0)))
        for _ in boundaries
    ]
    pairs = sorted(zip(boundaries, scales, strict=True))
    s = sched.piecewise_constant(init, dict(pairs))
    points, value = {}, init
    if not pairs or pairs[0][0] > 0:
        points[0] = init
    for boundary, scale in pairs:
        value = value * scale
        points[boundary] = value
    monotone: tuple[tuple[range, Direction], ...] = ()
    span = range(0, (pairs[-1][0] if pairs else 0) + 5)
    if all(scale <= 1.0 for _, scale in pairs):
        monotone = ((span, "decreasing"),)
    elif all(scale >= 1.0 for _, scale in pairs):
        monotone = ((span, "increasing"),)
    return ScheduleCase(s, points, monotone)


def _join(draw: Any) -> ScheduleCase:
    peak, warmup, decay = draw(_VALUE), draw(st.integers(1, 30)), draw(st.integers(1, 100))
    s = sched.join([sched.linear(0.0, peak, warmup), sched.cosine_decay(peak, decay)], [warmup])
    points = {0: 0.0, warmup: peak, warmup + decay: 0.0}
    monotone = (
        (range(0, warmup + 1), "increasing"),
        (range(warmup, warmup + decay + 5), "decreasing"),
    )
    return ScheduleCase(s, points, monotone)


_CASES: dict[str, Callable[[Any], ScheduleCase]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine_decay": _cosine_decay,
    "warmup_cosine_decay": _warmup_cosine_decay,
    "exponential_decay": _exponential_decay,
    "piecewise_constant": _piecewise_constant,
    "join": _join,
}


def schedule_cases(kinds: Sequence[str] = SCHEDULE_KINDS) -> SearchStrategy[ScheduleCase]:
    """`ScheduleCase`s: a `pn.schedules` schedule with valid arguments and its documented values.

    Values are in `[0, 1]` (learning-rate-like); step counts up to a few hundred.

    Args:
        kinds: which schedules (names from `SCHEDULE_KINDS`).

    Example:
        >>> @given(case=strategies.schedule_cases())
        ... def test_schedule(case):
        ...     pn.testing.check_schedule(case.schedule, case.points)
    """
    unknown = sorted(set(kinds) - set(_CASES))
    if unknown:
        raise ValueError(f"schedule_cases: unknown kinds {unknown}; known: {list(_CASES)}")

    @st.composite
    def case(draw: Any) -> ScheduleCase:
        return _CASES[draw(st.sampled_from(list(kinds)))](draw)

    return case()


def schedules(kinds: Sequence[str] = SCHEDULE_KINDS) -> SearchStrategy[Callable[[Any], Any]]:
    """Schedules from `pn.schedules` with valid arguments, e.g. as a rule's `lr`.

    Example:
        >>> @given(kwargs=strategies.hyperparams(pn.optim.sgd, lr=strategies.schedules()))
        ... def test_sgd_with_a_schedule(kwargs): ...
    """
    return schedule_cases(kinds).map(lambda c: c.schedule)
