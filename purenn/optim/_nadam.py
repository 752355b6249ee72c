"""`pn.optim.nadam`: Adam with Nesterov momentum (Dozat), as torch.optim.NAdam."""

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

__all__ = ["NadamState", "nadam"]


@node
class NadamState:
    """State of `nadam`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta1`, `beta2`,
    `eps`, `weight_decay`, `momentum_decay` as float64 0-d tensors); `mu_product`
    (the product of the momentum coefficients `mu_1 ... mu_t`, a 0-d tensor in
    torch.optim's scalar dtype: float32, or float64 when that is the default dtype,
    rounded as torch.optim rounds it); `exp_avg` and `exp_avg_sq` (first and second
    moments, like params). Static: `decoupled_weight_decay`, `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    mu_product: torch.Tensor
    exp_avg: Params
    exp_avg_sq: Params
    decoupled_weight_decay: bool = attrs.field(default=False, metadata={"static": True})
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, m: Tensor, v: Tensor, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    # torch.optim's single-tensor NAdam (torch/optim/nadam.py), operation for operation,
    # but for `moving_average` in place of lerp.
    if s["maximize"]:
        g = -g
    if s["l2"]:
        g = g + s["weight_decay"] * p
    m = moving_average(m, g, s["beta1"], s["one_minus_beta1"])
    v = v * s["beta2"] + s["one_minus_beta2"] * g * g
    denom = torch.sqrt(v / s["bias_correction2"]) + s["eps"]
    update = s["grad_coef"] * g / denom + s["exp_avg_coef"] * m / denom
    if s["decoupled"]:
        update = update - p * s["lr_decay"]
    return update, m, v


def _mu(beta1: Tensor, momentum_decay: Tensor, step: Tensor) -> Tensor:
    return beta1 * (
        1.0 - 0.5 * torch.pow(torch.tensor(0.96, dtype=torch.float64), step * momentum_decay)
    )


def nadam(
    lr: LearningRate = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """NAdam (Dozat 2016), with torch.optim.NAdam's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`; plus `weight_decay * p` unless
    decoupled), `t` the update number (from 1), `mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))`
    and `P_t = mu_1 * ... * mu_t`:

        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        d = sqrt(v / (1 - beta2^t)) + eps
        update = -lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d
        update <- update - lr * weight_decay * p                         (decoupled only)

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).
        decoupled_weight_decay: decay the params directly (as AdamW) instead of adding to `g`.

    Example:
        >>> opt = pn.optim.nadam(2e-3, weight_decay=0.01, decoupled_weight_decay=True)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    check_betas(betas)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("momentum_decay", momentum_decay)

    def init(params: Any) -> NadamState:
        float_leaves("nadam", params)
        # torch.optim keeps mu_product in its scalar dtype; keeping the same dtype keeps its rounding.
        scalar_dtype = (
            torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        )
        return NadamState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr),
                beta1=betas[0],
                beta2=betas[1],
                eps=eps,
                weight_decay=weight_decay,
                momentum_decay=momentum_decay,
            ),
            mu_product=torch.ones((), dtype=scalar_dtype),
            exp_avg=zeros_like(params),
            exp_avg_sq=zeros_like(params),
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )

    def update(grads: Any, state: NadamState, params: Any = None) -> tuple[Any, NadamState]:
        check_state("nadam", state, NadamState)
        check_settings(
            "nadam", state, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize
        )
        check_update_args("nadam", grads, state, params, state.exp_avg)
        check_left_out("nadam", state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params("nadam", params)
        h = state.hyperparams
        count = state.count + 1
        step = count.to(torch.float64)
        step_lr = lr_value(lr, state.count, h["lr"])
        mu = _mu(h["beta1"], h["momentum_decay"], step)
        mu_next = _mu(h["beta1"], h["momentum_decay"], step + 1.0)
        mu_product = state.mu_product * mu.to(state.mu_product.dtype)
        product = mu_product.to(torch.float64)
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
            "bias_correction2": 1.0 - torch.pow(h["beta2"], step),
            "grad_coef": -step_lr * (1.0 - mu) / (1.0 - product),
            "exp_avg_coef": (-step_lr * mu_next) / (1.0 - product * mu_next),
            "lr_decay": step_lr * h["weight_decay"],
        }
        trees = (grads, params if weight_decay != 0 else None, state.exp_avg, state.exp_avg_sq)
        updates, m, v = leafwise(_kernel, trees, scalars, outputs=(True, True, True))
        new_state = attrs.evolve(
            state,
            count=count,
            hyperparams=Params({**h, "lr": step_lr}),
            mu_product=mu_product,
            exp_avg=m,
            exp_avg_sq=v,
        )
        return updates, new_state

    return GradientTransformation(init, update)
