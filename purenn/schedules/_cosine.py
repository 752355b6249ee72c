"""`cosine_decay` and `warmup_cosine_decay` schedules."""

from __future__ import annotations

import math

import attrs
import torch

from ._base import Schedule, check_finite, check_steps

__all__ = ["CosineDecay", "WarmupCosineDecay", "cosine_decay", "warmup_cosine_decay"]


def _cosine_weight(frac: torch.Tensor, exponent: float) -> torch.Tensor:
    """`(0.5 * (1 + cos(pi * frac)))^exponent`: 1 at frac 0, exactly 0 at frac 1."""
    weight = 0.5 * (1.0 + torch.cos(math.pi * frac))
    return weight if exponent == 1.0 else torch.pow(weight, exponent)


@attrs.frozen
class CosineDecay(Schedule):
    init_value: float
    decay_steps: int
    alpha: float = 0.0
    exponent: float = 1.0

    def value(self, t: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(t / self.decay_steps, 0.0, 1.0)
        end = torch.full_like(t, self.init_value * self.alpha)
        return torch.lerp(
            end, torch.full_like(t, self.init_value), _cosine_weight(frac, self.exponent)
        )


@attrs.frozen
class WarmupCosineDecay(Schedule):
    init_value: float
    peak_value: float
    warmup_steps: int
    decay_steps: int
    end_value: float = 0.0
    exponent: float = 1.0

    def value(self, t: torch.Tensor) -> torch.Tensor:
        init, peak, end = (
            torch.full_like(t, v) for v in (self.init_value, self.peak_value, self.end_value)
        )
        warm = torch.lerp(init, peak, torch.clamp(t / max(self.warmup_steps, 1), 0.0, 1.0))
        frac = torch.clamp(
            (t - self.warmup_steps) / (self.decay_steps - self.warmup_steps), 0.0, 1.0
        )
        decayed = torch.lerp(end, peak, _cosine_weight(frac, self.exponent))
        return torch.where(t < self.warmup_steps, warm, decayed)


def cosine_decay(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay from `init_value` to `alpha * init_value` over `decay_steps`, as `optax.cosine_decay_schedule`.

    With `t` the count and `c = (0.5 * (1 + cos(pi * min(t, decay_steps) / decay_steps)))^exponent`:
    `value = init_value * ((1 - alpha) * c + alpha)`. Exactly `init_value` at 0 and
    `alpha * init_value` from `decay_steps` on; monotone (non-increasing for init_value >= 0).
    The same numbers as `torch.optim.lr_scheduler.CosineAnnealingLR(T_max=decay_steps,
    eta_min=alpha * init_value)` over its first `decay_steps` steps.

    Example:
        >>> sched = pn.schedules.cosine_decay(0.1, decay_steps=100)
        >>> float(sched(0)), float(sched(50)), float(sched(100))
        (0.1, 0.05, 0.0)
    """
    check_finite("cosine_decay", init_value=init_value, alpha=alpha, exponent=exponent)
    check_steps("cosine_decay", "decay_steps", decay_steps, 1)
    return CosineDecay(float(init_value), decay_steps, float(alpha), float(exponent))


def warmup_cosine_decay(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warmup then cosine decay, as `optax.warmup_cosine_decay_schedule`.

    `decay_steps` counts the warmup (the total length, as in Optax): the value rises
    linearly from `init_value` (at 0) to `peak_value` (at `warmup_steps`), then
    follows a cosine to `end_value`, reached at `decay_steps` and kept after. These
    three points are exact. Monotone on each phase.

    Raises:
        ValueError: `decay_steps <= warmup_steps` (a common slip: it counts the warmup).

    Example:
        >>> sched = pn.schedules.warmup_cosine_decay(0.0, 1e-3, warmup_steps=100, decay_steps=1000)
        >>> float(sched(0)), float(sched(100)), float(sched(1000))
        (0.0, 0.001, 0.0)
    """
    owner = "warmup_cosine_decay"
    check_finite(
        owner, init_value=init_value, peak_value=peak_value, end_value=end_value, exponent=exponent
    )
    check_steps(owner, "warmup_steps", warmup_steps, 0)
    check_steps(owner, "decay_steps", decay_steps, 1)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{owner}: decay_steps ({decay_steps}) must be greater than warmup_steps "
            f"({warmup_steps}): decay_steps is the total length and counts the warmup"
        )
    return WarmupCosineDecay(
        float(init_value),
        float(peak_value),
        warmup_steps,
        decay_steps,
        float(end_value),
        float(exponent),
    )
