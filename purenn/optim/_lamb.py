"""`pn.optim.lamb`: LAMB, Adam with a per-leaf trust ratio (You et al. 2020), as `optax.lamb`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from .. import _treeutil
from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_betas, check_left_out, check_settings, check_state, need_params
from ._common import (
    LearningRate,
    check_nonnegative,
    check_update_args,
    float_leaves,
    initial_lr,
    lr_value,
    validate_lr,
)
from ._kernel import hyperparams, leafwise, zeros_like

__all__ = ["LambState", "lamb"]


@node
class LambState:
    """State of `lamb`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta1`, `beta2`,
    `eps`, `weight_decay` as float64 0-d tensors); `exp_avg` and `exp_avg_sq` (first
    and second moments, like params). Static: `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    exp_avg: Params
    exp_avg_sq: Params
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, m: Tensor, v: Tensor, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    # The elementwise part: optax.scale_by_adam (eps_root = 0), then add_decayed_weights.
    if s["maximize"]:
        g = -g
    m = s["one_minus_beta1"] * g + s["beta1"] * m
    v = s["one_minus_beta2"] * (g * g) + s["beta2"] * v
    direction = (m / s["bias_correction1"]) / (torch.sqrt(v / s["bias_correction2"]) + s["eps"])
    if p is not None:
        direction = direction + s["weight_decay"] * p
    return direction, m, v


def _trust_scaled(direction: Tensor, p: Tensor, neg_lr: Tensor) -> Tensor:
    # optax.scale_by_trust_ratio: ||p|| / ||direction||, or 1 where either norm is 0.
    param_norm = torch.linalg.vector_norm(p)
    direction_norm = torch.linalg.vector_norm(direction)
    zero = torch.logical_or(param_norm == 0.0, direction_norm == 0.0)
    ratio = torch.where(zero, 1.0, param_norm / direction_norm)
    return direction * (neg_lr.to(ratio.dtype) * ratio)


def lamb(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2).

    The reference is `optax.lamb` (chain of scale_by_adam, add_decayed_weights,
    scale_by_trust_ratio, scale_by_learning_rate), with the trust ratio taken per
    leaf (per tensor, as the paper's per-layer ratio). With `g` the gradient (negated
    if `maximize`) and `t` the update number (from 1):

        m <- beta1 * m + (1 - beta1) * g;    v <- beta2 * v + (1 - beta2) * g^2
        r = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * p
        update = -lr * (||p|| / ||r||) * r       (ratio 1 where ||p|| or ||r|| is 0)

    torch.optim has no LAMB. Needs params at every update (for the trust ratio).

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).

    Example:
        >>> opt = pn.optim.lamb(1e-3, weight_decay=0.01)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    check_betas(betas)
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Any) -> LambState:
        float_leaves(
            "lamb",
            params,
            no_complex="torch.optim has no LAMB to define how complex params behave",
        )
        return LambState(
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
            maximize=maximize,
        )

    def update(grads: Any, state: LambState, params: Any = None) -> tuple[Any, LambState]:
        check_state("lamb", state, LambState)
        check_settings("lamb", state, maximize=maximize)
        check_update_args("lamb", grads, state, params, state.exp_avg)
        check_left_out("lamb", state, weight_decay=weight_decay)
        need_params("lamb", params, "for the trust ratio")
        h = state.hyperparams
        count = state.count + 1
        step = count.to(torch.float64)
        step_lr = lr_value(lr, state.count, h["lr"])
        scalars = {
            "maximize": state.maximize,
            "weight_decay": h["weight_decay"],
            "beta1": h["beta1"],
            "one_minus_beta1": 1.0 - h["beta1"],
            "beta2": h["beta2"],
            "one_minus_beta2": 1.0 - h["beta2"],
            "eps": h["eps"],
            "bias_correction1": 1.0 - torch.pow(h["beta1"], step),
            "bias_correction2": 1.0 - torch.pow(h["beta2"], step),
        }
        trees = (grads, params if weight_decay != 0 else None, state.exp_avg, state.exp_avg_sq)
        directions, m, v = leafwise(_kernel, trees, scalars, outputs=(True, True, True))
        # The trust ratio needs whole-leaf norms, so it runs per leaf, outside the elementwise driver.
        updates = _treeutil.tree_map(lambda r, p: _trust_scaled(r, p, -step_lr), directions, params)
        new_state = attrs.evolve(
            state,
            count=count,
            hyperparams=Params({**h, "lr": step_lr}),
            exp_avg=m,
            exp_avg_sq=v,
        )
        return updates, new_state

    return GradientTransformation(init, update)
