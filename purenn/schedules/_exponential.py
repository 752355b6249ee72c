"""The `exponential_decay` schedule."""

from __future__ import annotations

import attrs
import torch

from ._base import Schedule, check_finite, check_steps

__all__ = ["ExponentialDecay", "exponential_decay"]


@attrs.frozen
class ExponentialDecay(Schedule):
    init_value: float
    transition_steps: int
    decay_rate: float
    transition_begin: int = 0
    staircase: bool = False
    end_value: float | None = None

    def value(self, t: torch.Tensor) -> torch.Tensor:
        elapsed = t - self.transition_begin
        p = elapsed / self.transition_steps
        if self.staircase:
            p = torch.floor(p)
        init = torch.full_like(t, self.init_value)
        decayed = torch.where(elapsed <= 0, init, self.init_value * torch.pow(self.decay_rate, p))
        if self.end_value is None:
            return decayed
        bound = torch.full_like(t, self.end_value)
        return (
            torch.maximum(decayed, bound)
            if self.decay_rate < 1.0
            else torch.minimum(decayed, bound)
        )


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """`init_value * decay_rate^((t - transition_begin) / transition_steps)`, as `optax.exponential_decay`.

    `init_value` for `t <= transition_begin`; with `staircase` the exponent is floored
    (a step every `transition_steps`); with `end_value` the value is clipped there (a
    lower bound when decaying, an upper one when growing). Monotone. The same numbers
    as `torch.optim.lr_scheduler.ExponentialLR(gamma=decay_rate)` with
    `transition_steps=1`, and `StepLR(step_size=k, gamma=decay_rate)` with
    `transition_steps=k, staircase=True`.

    Unlike Optax, which logs and returns a constant schedule, a `transition_steps` <= 0
    or a `decay_rate` <= 0 raises ValueError.

    Example:
        >>> sched = pn.schedules.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
        >>> float(sched(10)), float(sched(20))
        (0.5, 0.25)
    """
    owner = "exponential_decay"
    check_finite(owner, init_value=init_value, decay_rate=decay_rate)
    check_steps(owner, "transition_steps", transition_steps, 1)
    check_steps(owner, "transition_begin", transition_begin, 0)
    if not decay_rate > 0:
        raise ValueError(f"{owner}: decay_rate must be > 0, got {decay_rate}")
    if end_value is not None:
        check_finite(owner, end_value=end_value)
        end_value = float(end_value)
    return ExponentialDecay(
        float(init_value),
        transition_steps,
        float(decay_rate),
        transition_begin,
        bool(staircase),
        end_value,
    )
