"""`pn.optim.radam`: Rectified Adam (Liu et al.), as torch.optim.RAdam, without branching on the step."""

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

__all__ = ["RadamState", "radam"]


@node
class RadamState:
    """State of `radam`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta1`, `beta2`,
    `eps`, `weight_decay` as float64 0-d tensors); `exp_avg` and `exp_avg_sq` (first
    and second moments, like params). Static: `decoupled_weight_decay`, `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    exp_avg: Params
    exp_avg_sq: Params
    decoupled_weight_decay: bool = attrs.field(default=False, metadata={"static": True})
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, m: Tensor, v: Tensor, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    # torch.optim's single-tensor RAdam (torch/optim/radam.py), operation for operation, except
    # that its Python `if rho_t > 5` is a torch.where, so the step count never specialises a graph,
    # and `moving_average` stands for lerp.
    if s["maximize"]:
        g = -g
    if s["l2"]:
        g = g + s["weight_decay"] * p
    m = moving_average(m, g, s["beta1"], s["one_minus_beta1"])
    v = v * s["beta2"] + s["one_minus_beta2"] * g * g
    plain = m / s["bias_correction1"] * s["lr"]
    adaptive = s["bias_correction2_sqrt"] / (torch.sqrt(v) + s["eps"])
    update = -torch.where(s["rectify"] > 0, plain * adaptive * s["rect"], plain)
    if s["decoupled"]:
        update = update - p * s["lr_decay"]
    return update, m, v


def _rectification(beta2: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """`(rectify, r_t)`: whether the variance is tractable (rho_t > 5), and the rectification term."""
    beta2_t = torch.pow(beta2, step)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    rectify = rho_t > 5.0
    # Where rho_t <= 5 the radicand can be negative; it is unused there, so keep it NaN-free.
    radicand = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
    rect = torch.sqrt(torch.where(rectify, radicand, 1.0))
    return rectify.to(torch.float64), rect


def radam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """RAdam (Liu et al. 2020), with torch.optim.RAdam's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`; plus `weight_decay * p` unless
    decoupled), `t` the update number (from 1), `rho_inf = 2 / (1 - beta2) - 1` and
    `rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)`:

        m <- beta1 * m + (1 - beta1) * g;    v <- beta2 * v + (1 - beta2) * g^2
        m_hat = m / (1 - beta1^t)
        update = -lr * m_hat * sqrt(1 - beta2^t) / (sqrt(v) + eps) * r_t    if rho_t > 5
        update = -lr * m_hat                                                 otherwise
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        update <- update - lr * weight_decay * p                             (decoupled only)

    The branch on `rho_t` is a `torch.where` on 0-d tensors, so a compiled step does not
    recompile when it switches. In the first steps (rho_t <= 5: five steps with the default
    beta2) the update is momentum SGD, so it scales with the gradient.

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).
        decoupled_weight_decay: decay the params directly (as AdamW) instead of adding to `g`.

    Example:
        >>> opt = pn.optim.radam(1e-3)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    check_betas(betas)
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Any) -> RadamState:
        float_leaves("radam", params)
        return RadamState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr),
                beta1=betas[0],
                beta2=betas[1],
                eps=eps,
                weight_decay=weight_decay,
            ),
            exp_avg=zeros_like(params),
            exp_avg_sq=zeros_like(params),
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )

    def update(grads: Any, state: RadamState, params: Any = None) -> tuple[Any, RadamState]:
        check_state("radam", state, RadamState)
        check_settings(
            "radam", state, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize
        )
        check_update_args("radam", grads, state, params, state.exp_avg)
        check_left_out("radam", state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params("radam", params)
        h = state.hyperparams
        count = state.count + 1
        step = count.to(torch.float64)
        step_lr = lr_value(lr, state.count, h["lr"])
        rectify, rect = _rectification(h["beta2"], step)
        scalars = {
            "maximize": state.maximize,
            "l2": not state.decoupled_weight_decay and weight_decay != 0,
            "decoupled": state.decoupled_weight_decay and weight_decay != 0,
            "weight_decay": h["weight_decay"],
            "beta1": h["beta1"],
            "one_minus_beta1": 1.0 - h["beta1"],
            "beta2": h["beta2"],
            "one_minus_beta2": 1.0 - h["beta2"],
            "eps": h["eps"],
            "lr": step_lr,
            "bias_correction1": 1.0 - torch.pow(h["beta1"], step),
            "bias_correction2_sqrt": torch.sqrt(1.0 - torch.pow(h["beta2"], step)),
            "rectify": rectify,
            "rect": rect,
            "lr_decay": step_lr * h["weight_decay"],
        }
        trees = (grads, params if weight_decay != 0 else None, state.exp_avg, state.exp_avg_sq)
        updates, m, v = leafwise(_kernel, trees, scalars, outputs=(True, True, True))
        new_state = attrs.evolve(
            state,
            count=count,
            hyperparams=Params({**h, "lr": step_lr}),
            exp_avg=m,
            exp_avg_sq=v,
        )
        return updates, new_state

    return GradientTransformation(init, update)
