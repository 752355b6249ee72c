"""`pn.optim.sgd`: stochastic gradient descent with momentum, as torch.optim.SGD."""

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

__all__ = ["SgdState", "sgd"]


@node
class SgdState:
    """State of `sgd`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `momentum`,
    `dampening`, `weight_decay` as float64 0-d tensors); `momentum_buffer` (like
    params, or None without momentum). Static: `nesterov`, `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    momentum_buffer: Params | None
    nesterov: bool = attrs.field(default=False, metadata={"static": True})
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, b: Tensor | None, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor | None]:
    # torch.optim's single-tensor SGD (torch/optim/sgd.py), operation for operation.
    if s["maximize"]:
        g = -g
    if s["decay"]:
        g = g + s["weight_decay"] * p
    if b is not None:
        b = b * s["keep"] + g * s["add"]
        g = g + s["momentum"] * b if s["nesterov"] else b
    return g * -s["lr"], b


def sgd(
    lr: LearningRate = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Stochastic gradient descent, with torch.optim.SGD's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`), `p` the param, `t` the update count:

        g <- g + weight_decay * p
        b <- g                                      if t == 0
        b <- momentum * b + (1 - dampening) * g     otherwise   (only if momentum != 0)
        g <- g + momentum * b  (nesterov)   or   g <- b  (momentum != 0)
        update = -lr * g

    Whether momentum and weight decay are applied is fixed by the values the rule is
    built with; their values (and `lr`) can be changed in `state.hyperparams`.

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).

    Example:
        >>> opt = pn.optim.sgd(0.1, momentum=0.9, nesterov=True)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_nonnegative("momentum", momentum)
    check_nonnegative("weight_decay", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def init(params: Any) -> SgdState:
        float_leaves("sgd", params)
        return SgdState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr), momentum=momentum, dampening=dampening, weight_decay=weight_decay
            ),
            momentum_buffer=zeros_like(params) if momentum != 0 else None,
            nesterov=nesterov,
            maximize=maximize,
        )

    def update(grads: Any, state: SgdState, params: Any = None) -> tuple[Any, SgdState]:
        check_state("sgd", state, SgdState)
        check_settings("sgd", state, momentum=momentum, nesterov=nesterov, maximize=maximize)
        if weight_decay != 0:
            require_params("sgd", params)
        like = (
            state.momentum_buffer
            if state.momentum_buffer is not None
            else (params if params is not None else grads)
        )
        check_update_args("sgd", grads, state, params, like)
        check_left_out("sgd", state, weight_decay=weight_decay, momentum=momentum)
        h = state.hyperparams
        step_lr = lr_value(lr, state.count, h["lr"])
        first = state.count == 0
        scalars = {
            "maximize": state.maximize,
            "nesterov": state.nesterov,
            "decay": weight_decay != 0,
            "weight_decay": h["weight_decay"],
            "momentum": h["momentum"],
            # The first update starts the buffer at g; later ones decay it: b = keep * b + add * g.
            "keep": torch.where(first, 0.0, h["momentum"]),
            "add": torch.where(first, 1.0, 1.0 - h["dampening"]),
            "lr": step_lr,
        }
        trees = (grads, params if weight_decay != 0 else None, state.momentum_buffer)
        updates, buffer = leafwise(_kernel, trees, scalars, outputs=(True, momentum != 0))
        new_state = attrs.evolve(
            state,
            count=state.count + 1,
            hyperparams=Params({**h, "lr": step_lr}),
            momentum_buffer=buffer,
        )
        return updates, new_state

    return GradientTransformation(init, update)
