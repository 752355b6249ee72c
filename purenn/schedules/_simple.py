"""`constant` and `linear` schedules."""

from __future__ import annotations

import attrs
import torch

from ._base import Schedule, check_finite, check_steps

__all__ = ["Constant", "Linear", "constant", "linear"]


@attrs.frozen
class Constant(Schedule):
    init_value: float

    def value(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, self.init_value)


@attrs.frozen
class Linear(Schedule):
    init_value: float
    end_value: float
    transition_steps: int
    transition_begin: int = 0

    def value(self, t: torch.Tensor) -> torch.Tensor:
        if self.transition_steps == 0:
            return torch.full_like(t, self.init_value)
        frac = torch.clamp((t - self.transition_begin) / self.transition_steps, 0.0, 1.0)
        # lerp is exact at both ends (init_value at 0, end_value at 1).
        return torch.lerp(
            torch.full_like(t, self.init_value), torch.full_like(t, self.end_value), frac
        )


def constant(value: float) -> Schedule:
    """`value` at every step, as `optax.constant_schedule`.

    Example:
        >>> float(pn.schedules.constant(0.1)(1000))
        0.1
    """
    check_finite("constant", value=value)
    return Constant(float(value))


def linear(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """From `init_value` to `end_value` linearly over `transition_steps`, as `optax.linear_schedule`.

    With `t` the count: `init_value` for `t <= transition_begin`, `end_value` (exactly)
    for `t >= transition_begin + transition_steps`, linear in between. Monotone.
    `transition_steps == 0` gives the constant `init_value` (as Optax).

    Example:
        >>> warmup = pn.schedules.linear(0.0, 1e-3, transition_steps=100)
        >>> float(warmup(50)), float(warmup(100))
        (0.0005, 0.001)
    """
    check_finite("linear", init_value=init_value, end_value=end_value)
    check_steps("linear", "transition_steps", transition_steps, 0)
    check_steps("linear", "transition_begin", transition_begin, 0)
    return Linear(float(init_value), float(end_value), transition_steps, transition_begin)
