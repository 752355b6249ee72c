"""`pn.optim.ema`: replace updates by their exponential moving average (optionally debiased)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_settings, check_state
from ._common import check_update_args
from ._kernel import hyperparams, leafwise, zeros_like

__all__ = ["EmaState", "ema"]


@node
class EmaState:
    """State of `ema`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`decay`, a float64 0-d
    tensor); `ema` (the moving average of the updates, like params). Static: `debias`.
    """

    count: torch.Tensor
    hyperparams: Params
    ema: Params
    debias: bool = attrs.field(default=True, metadata={"static": True})


def _kernel(u: Tensor, e: Tensor, s: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    e = s["one_minus_decay"] * u + s["decay"] * e
    return e / s["bias_correction"], e


def ema(decay: float, debias: bool = True) -> GradientTransformation:
    """Exponential moving average of the updates, as `optax.ema`.

    With `t` the update number (from 1):

        e <- decay * e + (1 - decay) * u
        update = e / (1 - decay^t)      (debias)   or   e

    Chained after a rule it smooths its updates (momentum on any rule); its state's
    `ema` is the running average itself.

    Args:
        decay: the averaging coefficient, in [0, 1].
        debias: divide by `1 - decay^t` so that early averages are not biased to 0.

    Example:
        >>> opt = pn.optim.chain(pn.optim.sgd(0.1), pn.optim.ema(0.9))
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema: decay must be in [0, 1], got {decay}")

    def init(params: Any) -> EmaState:
        return EmaState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(decay=decay),
            ema=zeros_like(params),
            debias=debias,
        )

    def update(grads: Any, state: EmaState, params: Any = None) -> tuple[Any, EmaState]:
        check_state("ema", state, EmaState)
        check_settings("ema", state, debias=debias)
        check_update_args("ema", grads, state, params, state.ema)
        h = state.hyperparams
        count = state.count + 1
        correction = 1.0 - torch.pow(h["decay"], count.to(torch.float64))
        scalars = {
            "decay": h["decay"],
            "one_minus_decay": 1.0 - h["decay"],
            "bias_correction": correction if state.debias else torch.ones((), dtype=torch.float64),
        }
        updates, averaged = leafwise(_kernel, (grads, state.ema), scalars, outputs=(True, True))
        return updates, attrs.evolve(state, count=count, ema=averaged)

    return GradientTransformation(init, update)
