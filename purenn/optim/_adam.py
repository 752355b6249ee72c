"""`pn.optim.adam` and `adamw`: Adam with coupled L2 or decoupled weight decay, as torch.optim."""

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

__all__ = ["AdamState", "adam", "adamw"]


@node
class AdamState:
    """State of `adam`/`adamw`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta1`,
    `beta2`, `eps`, `weight_decay` as float64 0-d tensors; `lr` is the rate of the
    last update, or of the first one before any); `exp_avg` and `exp_avg_sq`
    (first and second moment estimates, like params); `max_exp_avg_sq` (running
    maximum of `exp_avg_sq` with amsgrad, else None). Static: `amsgrad`,
    `maximize`, `decoupled_weight_decay` (True for adamw).

    Change a hyperparameter mid-training with
    `pn.tree.set(state, "hyperparams.lr", torch.tensor(1e-4, dtype=torch.float64))`
    (no recompilation under `pn.jit`). Whether weight decay is applied at all is
    fixed by the value the rule was built with: a rule built with
    `weight_decay=0` skips that work, and its update raises `pn.StateError` on a
    state whose weight decay was set non-zero (use `pn.optim.inject_hyperparams`
    to build it switchable).
    """

    count: torch.Tensor
    hyperparams: Params
    exp_avg: Params
    exp_avg_sq: Params
    max_exp_avg_sq: Params | None
    amsgrad: bool = attrs.field(default=False, metadata={"static": True})
    maximize: bool = attrs.field(default=False, metadata={"static": True})
    decoupled_weight_decay: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, m: Tensor, v: Tensor, vmax: Tensor | None, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    # torch.optim's single-tensor Adam with two rewrites that trim the compiled element loop
    # and change results only by rounding (PROPERTIES 4 allows for it): `moving_average` for
    # lerp, and the division by the bias correction as a multiplication by its reciprocal,
    # computed once per step. A donated 16M-param AdamW step runs 8-11% faster for them on the CPU
    # (docs/performance.md).
    if s["maximize"]:
        g = -g
    if s["l2"]:
        g = g + s["weight_decay"] * p
    m = moving_average(m, g, s["beta1"], s["one_minus_beta1"])
    # addcmul's order of operations; addcmul itself would need value= as a Python number (.item()).
    v = v * s["beta2"] + s["one_minus_beta2"] * g * g
    if vmax is not None:
        vmax = torch.maximum(vmax, v)
    denom = torch.sqrt(vmax if vmax is not None else v) * s["inv_bias_correction2_sqrt"] + s["eps"]
    update = m / denom * -s["step_size"]
    if s["decoupled"]:
        update = update - p * s["lr_decay"]
    return update, m, v, vmax


def _adam(
    name: str,
    lr: LearningRate,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> GradientTransformation:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Any) -> AdamState:
        float_leaves(name, params)
        return AdamState(
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
            max_exp_avg_sq=zeros_like(params) if amsgrad else None,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled,
        )

    def update(grads: Any, state: AdamState, params: Any = None) -> tuple[Any, AdamState]:
        check_state(name, state, AdamState)
        check_settings(
            name, state, amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decoupled
        )
        check_update_args(name, grads, state, params, state.exp_avg)
        check_left_out(name, state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params(name, params)
        h = state.hyperparams
        count = state.count + 1
        step = count.to(torch.float64)
        step_lr = lr_value(lr, state.count, h["lr"])
        # Step-dependent scalars once per step (not per element), in float64 like torch.optim's floats.
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
            "step_size": step_lr / (1.0 - torch.pow(h["beta1"], step)),
            "inv_bias_correction2_sqrt": torch.rsqrt(1.0 - torch.pow(h["beta2"], step)),
            "lr_decay": step_lr * h["weight_decay"],
        }
        trees = (grads, params, state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq)
        updates, m, v, vmax = leafwise(
            _kernel, trees, scalars, outputs=(True, True, True, state.amsgrad)
        )
        new_state = attrs.evolve(
            state,
            count=count,
            hyperparams=Params({**h, "lr": step_lr}),
            exp_avg=m,
            exp_avg_sq=v,
            max_exp_avg_sq=vmax,
        )
        return updates, new_state

    return GradientTransformation(init, update)


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """Adam (Kingma & Ba), with torch.optim.Adam's arguments, defaults and numbers.

    With `g` the gradient (plus `weight_decay * p`, coupled L2), `t` the update number (from 1):

        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2          (v_max <- max(v_max, v) with amsgrad)
        update = -lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).
        decoupled_weight_decay: decay the params directly, making this `adamw` (as torch.optim.Adam's flag).

    Example:
        >>> opt = pn.optim.adam(1e-3)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
        >>> float(state.hyperparams["lr"]), int(state.count)
        (0.001, 1)
    """
    return _adam(
        "adam", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled=decoupled_weight_decay
    )


def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, as torch.optim.AdamW.

    As `adam` without the L2 term in `g`, plus `-lr * weight_decay * p` in the update.

    Example:
        >>> opt = pn.optim.adamw(1e-3, weight_decay=0.05)
    """
    return _adam("adamw", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled=True)
