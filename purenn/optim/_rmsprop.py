"""`pn.optim.rmsprop`: RMSprop with optional momentum and centering, as torch.optim.RMSprop."""

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
from ._kernel import hyperparams, leafwise, moving_average, zeros_like

__all__ = ["RmspropState", "rmsprop"]


@node
class RmspropState:
    """State of `rmsprop`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `alpha`, `eps`,
    `weight_decay`, `momentum` as float64 0-d tensors); `square_avg` (running mean of
    `g^2`, like params); `momentum_buffer` (like params, or None without momentum);
    `grad_avg` (running mean of `g`, like params, or None unless centered).
    Static: `centered`, `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    square_avg: Params
    momentum_buffer: Params | None
    grad_avg: Params | None
    centered: bool = attrs.field(default=False, metadata={"static": True})
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor,
    p: Tensor | None,
    sq: Tensor,
    buf: Tensor | None,
    gavg: Tensor | None,
    s: Mapping[str, Any],
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    # torch.optim's single-tensor RMSprop (torch/optim/rmsprop.py), operation for operation, but
    # for `moving_average` in place of lerp.
    if s["maximize"]:
        g = -g
    if p is not None:
        g = g + s["weight_decay"] * p
    sq = sq * s["alpha"] + s["one_minus_alpha"] * g * g
    if gavg is not None:
        gavg = moving_average(gavg, g, s["alpha"], s["one_minus_alpha"])
        avg = torch.sqrt(sq - gavg * gavg)
    else:
        avg = torch.sqrt(sq)
    avg = avg + s["eps"]
    if buf is not None:
        buf = buf * s["momentum"] + g / avg
        return buf * -s["lr"], sq, buf, gavg
    return -s["lr"] * g / avg, sq, buf, gavg


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """RMSprop (Hinton), with torch.optim.RMSprop's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`, plus `weight_decay * p`):

        v <- alpha * v + (1 - alpha) * g^2
        g_avg <- alpha * g_avg + (1 - alpha) * g            (centered only)
        d = sqrt(v - g_avg^2) + eps   (centered)   or   sqrt(v) + eps
        b <- momentum * b + g / d;   update = -lr * b       (momentum > 0)
        update = -lr * g / d                                (otherwise)

    Whether momentum and weight decay are applied is fixed by the values the rule is
    built with; their values (and `lr`) can be changed in `state.hyperparams`.

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).

    Example:
        >>> opt = pn.optim.rmsprop(1e-3, momentum=0.9, centered=True)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
        >>> state.grad_avg is not None
        True
    """
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    check_nonnegative("momentum", momentum)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("alpha", alpha)
    use_momentum = momentum > 0

    def init(params: Any) -> RmspropState:
        float_leaves("rmsprop", params)
        return RmspropState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr),
                alpha=alpha,
                eps=eps,
                weight_decay=weight_decay,
                momentum=momentum,
            ),
            square_avg=zeros_like(params),
            momentum_buffer=zeros_like(params) if use_momentum else None,
            grad_avg=zeros_like(params) if centered else None,
            centered=centered,
            maximize=maximize,
        )

    def update(grads: Any, state: RmspropState, params: Any = None) -> tuple[Any, RmspropState]:
        check_state("rmsprop", state, RmspropState)
        check_settings(
            "rmsprop", state, momentum=use_momentum, centered=centered, maximize=maximize
        )
        check_update_args("rmsprop", grads, state, params, state.square_avg)
        check_left_out("rmsprop", state, weight_decay=weight_decay, momentum=momentum)
        if weight_decay != 0:
            require_params("rmsprop", params)
        h = state.hyperparams
        step_lr = lr_value(lr, state.count, h["lr"])
        scalars = {
            "maximize": state.maximize,
            "weight_decay": h["weight_decay"],
            "alpha": h["alpha"],
            "one_minus_alpha": 1.0 - h["alpha"],
            "eps": h["eps"],
            "momentum": h["momentum"],
            "lr": step_lr,
        }
        trees = (
            grads,
            params if weight_decay != 0 else None,
            state.square_avg,
            state.momentum_buffer,
            state.grad_avg,
        )
        updates, sq, buf, gavg = leafwise(
            _kernel, trees, scalars, outputs=(True, True, use_momentum, state.centered)
        )
        new_state = attrs.evolve(
            state,
            count=state.count + 1,
            hyperparams=Params({**h, "lr": step_lr}),
            square_avg=sq,
            momentum_buffer=buf,
            grad_avg=gavg,
        )
        return updates, new_state

    return GradientTransformation(init, update)
