"""`pn.optim.adamax`: Adamax (Adam with the infinity norm), as torch.optim.Adamax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_betas, check_left_out, check_settings, check_state
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

__all__ = ["AdamaxState", "adamax"]


@node
class AdamaxState:
    """State of `adamax`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta1`, `beta2`,
    `eps`, `weight_decay` as float64 0-d tensors); `exp_avg` (first moment) and
    `exp_inf` (exponentially weighted infinity norm), both like params. Static: `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    exp_avg: Params
    exp_inf: Params
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, m: Tensor, u: Tensor, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    # torch.optim's single-tensor Adamax (torch/optim/adamax.py), operation for operation,
    # but for `moving_average` in place of lerp.
    if s["maximize"]:
        g = -g
    if p is not None:
        g = g + s["weight_decay"] * p
    m = moving_average(m, g, s["beta1"], s["one_minus_beta1"])
    u = torch.maximum(u * s["beta2"], torch.abs(g) + s["eps"])
    return -s["clr"] * m / u, m, u


def adamax(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adamax (Kingma & Ba, section 7), with torch.optim.Adamax's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`, plus `weight_decay * p`) and `t`
    the update number (from 1):

        m <- beta1 * m + (1 - beta1) * g
        u <- max(beta2 * u, |g| + eps)
        update = -lr / (1 - beta1^t) * m / u

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).

    Example:
        >>> opt = pn.optim.adamax(2e-3)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    check_betas(betas)
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Any) -> AdamaxState:
        float_leaves("adamax", params)
        return AdamaxState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr),
                beta1=betas[0],
                beta2=betas[1],
                eps=eps,
                weight_decay=weight_decay,
            ),
            exp_avg=zeros_like(params),
            exp_inf=zeros_like(params),
            maximize=maximize,
        )

    def update(grads: Any, state: AdamaxState, params: Any = None) -> tuple[Any, AdamaxState]:
        check_state("adamax", state, AdamaxState)
        check_settings("adamax", state, maximize=maximize)
        check_update_args("adamax", grads, state, params, state.exp_avg)
        check_left_out("adamax", state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params("adamax", params)
        h = state.hyperparams
        count = state.count + 1
        step_lr = lr_value(lr, state.count, h["lr"])
        scalars = {
            "maximize": state.maximize,
            "weight_decay": h["weight_decay"],
            "beta1": h["beta1"],
            "one_minus_beta1": 1.0 - h["beta1"],
            "beta2": h["beta2"],
            "eps": h["eps"],
            "clr": step_lr / (1.0 - torch.pow(h["beta1"], count.to(torch.float64))),
        }
        trees = (grads, params if weight_decay != 0 else None, state.exp_avg, state.exp_inf)
        updates, m, u = leafwise(_kernel, trees, scalars, outputs=(True, True, True))
        new_state = attrs.evolve(
            state,
            count=count,
            hyperparams=Params({**h, "lr": step_lr}),
            exp_avg=m,
            exp_inf=u,
        )
        return updates, new_state

    return GradientTransformation(init, update)
