"""`pn.optim.adadelta`: Adadelta, as torch.optim.Adadelta."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_left_out, check_settings, check_state
from ._common import (
    LearningRate,
    check_nonnegative,
    check_update_args,
    float_leaves,
    initial_lr,
    lr_value,
    require_params,
    validate_lr,
)
from ._kernel import hyperparams, leafwise, zeros_like

__all__ = ["AdadeltaState", "adadelta"]


@node
class AdadeltaState:
    """State of `adadelta`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `rho`, `eps`,
    `weight_decay` as float64 0-d tensors); `square_avg` (running mean of `g^2`) and
    `acc_delta` (running mean of the squared steps), both like params. Static: `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    square_avg: Params
    acc_delta: Params
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, sq: Tensor, acc: Tensor, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    # torch.optim's single-tensor Adadelta (torch/optim/adadelta.py), operation for operation.
    if s["maximize"]:
        g = -g
    if p is not None:
        g = g + s["weight_decay"] * p
    sq = sq * s["rho"] + s["one_minus_rho"] * g * g
    std = torch.sqrt(sq + s["eps"])
    delta = torch.sqrt(acc + s["eps"]) / std * g
    acc = acc * s["rho"] + s["one_minus_rho"] * delta * delta
    return -s["lr"] * delta, sq, acc


def adadelta(
    lr: LearningRate = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adadelta (Zeiler), with torch.optim.Adadelta's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`, plus `weight_decay * p`):

        v <- rho * v + (1 - rho) * g^2
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u <- rho * u + (1 - rho) * delta^2
        update = -lr * delta

    Args:
        lr: learning rate (a scale on delta), or a schedule `count -> lr`.

    Example:
        >>> opt = pn.optim.adadelta(rho=0.95)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"Invalid rho value: {rho}")
    check_nonnegative("eps", eps, "epsilon")
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Any) -> AdadeltaState:
        float_leaves("adadelta", params)
        return AdadeltaState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(lr=initial_lr(lr), rho=rho, eps=eps, weight_decay=weight_decay),
            square_avg=zeros_like(params),
            acc_delta=zeros_like(params),
            maximize=maximize,
        )

    def update(grads: Any, state: AdadeltaState, params: Any = None) -> tuple[Any, AdadeltaState]:
        check_state("adadelta", state, AdadeltaState)
        check_settings("adadelta", state, maximize=maximize)
        check_update_args("adadelta", grads, state, params, state.square_avg)
        check_left_out("adadelta", state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params("adadelta", params)
        h = state.hyperparams
        step_lr = lr_value(lr, state.count, h["lr"])
        scalars = {
            "maximize": state.maximize,
            "weight_decay": h["weight_decay"],
            "rho": h["rho"],
            "one_minus_rho": 1.0 - h["rho"],
            "eps": h["eps"],
            "lr": step_lr,
        }
        trees = (grads, params if weight_decay != 0 else None, state.square_avg, state.acc_delta)
        updates, sq, acc = leafwise(_kernel, trees, scalars, outputs=(True, True, True))
        new_state = attrs.evolve(
            state,
            count=state.count + 1,
            hyperparams=Params({**h, "lr": step_lr}),
            square_avg=sq,
            acc_delta=acc,
        )
        return updates, new_state

    return GradientTransformation(init, update)
