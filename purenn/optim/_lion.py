"""`pn.optim.lion`: Lion, the sign-momentum rule of Chen et al. (2023), as in the paper and Optax."""

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
from ._kernel import hyperparams, leafwise, zeros_like

__all__ = ["LionState", "lion"]


@node
class LionState:
    """State of `lion`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta1`, `beta2`,
    `weight_decay` as float64 0-d tensors); `exp_avg` (the momentum `m`, like params).
    Static: `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    exp_avg: Params
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(g: Tensor, p: Tensor | None, m: Tensor, s: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    # Algorithm 2 of Chen et al. (2023), "Symbolic Discovery of Optimization Algorithms".
    if s["maximize"]:
        g = -g
    c = s["beta1"] * m + s["one_minus_beta1"] * g
    # torch.sign(nan) is 0, which would freeze a NaN element silently; keep NaN, as jnp.sign does.
    direction = torch.where(torch.isnan(c), c, torch.sign(c))
    if p is not None:
        direction = direction + s["weight_decay"] * p
    m = s["beta2"] * m + s["one_minus_beta2"] * g
    return -s["lr"] * direction, m


def lion(
    lr: LearningRate = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2).

    With `g` the gradient (negated if `maximize`):

        c = beta1 * m + (1 - beta1) * g
        update = -lr * (sign(c) + weight_decay * p)      (decoupled weight decay)
        m <- beta2 * m + (1 - beta2) * g

    As `optax.lion` (same defaults, except that `lr` has one and `weight_decay` is 0
    where optax's is 1e-3), including `sign(NaN) = NaN`
    (torch.sign gives 0, which would freeze the element silently): every element moves by
    exactly `lr` (plus decay), so Lion wants a learning rate 3-10x smaller than AdamW's
    and a weight decay 3-10x larger. torch.optim has no Lion.

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).

    Example:
        >>> opt = pn.optim.lion(1e-4, weight_decay=0.1)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_betas(betas)
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Any) -> LionState:
        float_leaves(
            "lion",
            params,
            no_complex="torch.optim has no Lion to define how complex params behave",
        )
        return LionState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr), beta1=betas[0], beta2=betas[1], weight_decay=weight_decay
            ),
            exp_avg=zeros_like(params),
            maximize=maximize,
        )

    def update(grads: Any, state: LionState, params: Any = None) -> tuple[Any, LionState]:
        check_state("lion", state, LionState)
        check_settings("lion", state, maximize=maximize)
        check_update_args("lion", grads, state, params, state.exp_avg)
        check_left_out("lion", state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params("lion", params)
        h = state.hyperparams
        step_lr = lr_value(lr, state.count, h["lr"])
        scalars = {
            "maximize": state.maximize,
            "weight_decay": h["weight_decay"],
            "beta1": h["beta1"],
            "one_minus_beta1": 1.0 - h["beta1"],
            "beta2": h["beta2"],
            "one_minus_beta2": 1.0 - h["beta2"],
            "lr": step_lr,
        }
        trees = (grads, params if weight_decay != 0 else None, state.exp_avg)
        updates, m = leafwise(_kernel, trees, scalars, outputs=(True, True))
        new_state = attrs.evolve(
            state, count=state.count + 1, hyperparams=Params({**h, "lr": step_lr}), exp_avg=m
        )
        return updates, new_state

    return GradientTransformation(init, update)
