"""`piecewise_constant` and `join` schedules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs
import torch

from ._base import Schedule, as_count, check_finite

__all__ = ["Join", "PiecewiseConstant", "join", "piecewise_constant"]


@attrs.frozen
class PiecewiseConstant(Schedule):
    init_value: float
    boundaries_and_scales: tuple[tuple[int, float], ...] = ()

    def value(self, t: torch.Tensor) -> torch.Tensor:
        value = torch.full_like(t, self.init_value)
        for boundary, scale in self.boundaries_and_scales:
            value = torch.where(t >= boundary, value * scale, value)
        return value


@attrs.frozen
class Join(Schedule):
    schedules: tuple[Callable[[torch.Tensor], torch.Tensor | float], ...]
    boundaries: tuple[int, ...]

    def value(self, t: torch.Tensor) -> torch.Tensor:
        value = _float64(self.schedules[0](t))
        for boundary, schedule in zip(self.boundaries, self.schedules[1:], strict=True):
            value = torch.where(t < boundary, value, _float64(schedule(t - boundary)))
        return value


def _float64(value: torch.Tensor | float) -> torch.Tensor:
    return value.to(torch.float64) if isinstance(value, torch.Tensor) else as_count(value)


def piecewise_constant(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """`init_value`, multiplied by each scale from its boundary on, as `optax.piecewise_constant_schedule`.

    At count `t` the value is `init_value` times the product of the scales whose
    boundary is `<= t`. `{100: 0.1, 200: 0.1}` gives `init_value` before 100,
    `0.1 * init_value` from 100, `0.01 * init_value` from 200 (as
    `torch.optim.lr_scheduler.MultiStepLR(milestones=[100, 200], gamma=0.1)`).

    Example:
        >>> sched = pn.schedules.piecewise_constant(1.0, {10: 0.5, 20: 0.5})
        >>> float(sched(9)), float(sched(10)), float(sched(25))
        (1.0, 0.5, 0.25)
    """
    check_finite("piecewise_constant", init_value=init_value)
    items = sorted((boundaries_and_scales or {}).items())
    for boundary, scale in items:
        if isinstance(boundary, bool) or not isinstance(boundary, int) or boundary < 0:
            raise ValueError(f"piecewise_constant: boundaries must be ints >= 0, got {boundary!r}")
        check_finite("piecewise_constant", scale=scale)
        if scale < 0:
            raise ValueError(
                f"piecewise_constant: scales must be >= 0, got {scale} at boundary {boundary}"
            )
    return PiecewiseConstant(float(init_value), tuple((b, float(s)) for b, s in items))


def join(
    schedules: Sequence[Callable[..., torch.Tensor | float]], boundaries: Sequence[int]
) -> Schedule:
    """Schedules one after another, as `optax.join_schedules`.

    `schedules[i + 1]` takes over at `boundaries[i]` and sees the count restarted
    from 0 there: `join([a, b], [100])(t)` is `a(t)` for `t < 100` and `b(t - 100)` after.

    Example:
        >>> warmup = pn.schedules.linear(0.0, 0.1, transition_steps=10)
        >>> sched = pn.schedules.join([warmup, pn.schedules.cosine_decay(0.1, 90)], [10])
        >>> float(sched(10))
        0.1
    """
    schedules = tuple(schedules)
    boundaries = tuple(boundaries)
    if not schedules or len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join: needs one boundary between each pair of schedules, got {len(schedules)} "
            f"schedules and {len(boundaries)} boundaries"
        )
    for i, schedule in enumerate(schedules):
        if not callable(schedule):
            raise TypeError(
                f"join: schedules[{i}] must be callable count -> value, got {type(schedule).__name__}"
            )
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in boundaries) or list(
        boundaries
    ) != sorted(boundaries):
        raise ValueError(f"join: boundaries must be increasing ints >= 0, got {list(boundaries)}")
    return Join(schedules, boundaries)
