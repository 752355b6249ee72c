"""`pn.optim.adam` and `adamw`: Adam with coupled L2 or decoupled weight decay, as torch.optim."""

from __future__ import annotations

from typing import Any

import torch

from .. import _treeutil
from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._common import (
    LearningRate,
    StepScalars,
    as_dtype,
    check_nonnegative,
    check_update_args,
    float_leaves,
    lr_value,
    require_params,
    validate_lr,
)

__all__ = ["AdamState", "adam", "adamw"]


@node
class AdamState:
    """State of `adam`/`adamw`.

    Fields: `count` (updates done, int64 0-d), `exp_avg` and `exp_avg_sq` (first and
    second moment estimates, like params), `max_exp_avg_sq` (running maximum of
    `exp_avg_sq` with `amsgrad=True`, else None).
    """

    count: torch.Tensor
    exp_avg: Params
    exp_avg_sq: Params
    max_exp_avg_sq: Params | None


def _validate(
    lr: LearningRate, betas: tuple[float, float], eps: float, weight_decay: float
) -> None:
    validate_lr(lr)
    check_nonnegative("eps", eps, "epsilon")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    check_nonnegative("weight_decay", weight_decay)


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
    beta1, beta2 = float(betas[0]), float(betas[1])
    _validate(lr, (beta1, beta2), eps, weight_decay)

    def init(params: Any) -> AdamState:
        _, leaves, spec = float_leaves(name, params)

        def zeros() -> Params:
            return _treeutil.unflatten(spec, [torch.zeros_like(p) for p in leaves])

        return AdamState(
            count=torch.zeros((), dtype=torch.int64),
            exp_avg=zeros(),
            exp_avg_sq=zeros(),
            max_exp_avg_sq=zeros() if amsgrad else None,
        )

    def update(grads: Any, state: AdamState, params: Any = None) -> tuple[Any, AdamState]:
        if weight_decay != 0:
            require_params(name, params)
        _, g_leaves, spec = check_update_args(name, grads, state, params, state.exp_avg)
        p_leaves = _treeutil.flatten(params)[0] if params is not None else [None] * len(g_leaves)
        m_leaves = _treeutil.flatten(state.exp_avg)[0]
        v_leaves = _treeutil.flatten(state.exp_avg_sq)[0]
        vmax_leaves = (
            _treeutil.flatten(state.max_exp_avg_sq)[0] if amsgrad else [None] * len(g_leaves)
        )

        # Step-dependent scalars once per step, in float64 as torch.optim's Python floats are.
        count = state.count + 1
        step = count.to(torch.float64)
        step_lr = lr_value(lr, state.count)
        scalars = StepScalars(
            step_size=step_lr / (1.0 - torch.pow(beta1, step)),
            bias_correction2_sqrt=torch.sqrt(1.0 - torch.pow(beta2, step)),
            decay=step_lr * weight_decay,
        )

        updates, ms, vs, vmaxes = [], [], [], []
        for g, p, m, v, vmax in zip(
            g_leaves, p_leaves, m_leaves, v_leaves, vmax_leaves, strict=True
        ):
            c = scalars.for_dtype(g.dtype)
            if maximize:
                g = -g
            if weight_decay != 0 and not decoupled:
                g = g + weight_decay * p
            m = torch.lerp(m, g, 1.0 - beta1)
            v = torch.addcmul(v * beta2, g, g, value=1.0 - beta2)
            if amsgrad:
                vmax = torch.maximum(vmax, v)
                vmaxes.append(as_dtype(vmax, g.dtype))
            denom = torch.sqrt(vmax if amsgrad else v) / c["bias_correction2_sqrt"] + eps
            u = m / denom * -c["step_size"]
            if weight_decay != 0 and decoupled:
                u = u - p * c["decay"]
            updates.append(as_dtype(u, g.dtype))
            ms.append(as_dtype(m, g.dtype))
            vs.append(as_dtype(v, g.dtype))
        new_state = AdamState(
            count=count,
            exp_avg=_treeutil.unflatten(spec, ms),
            exp_avg_sq=_treeutil.unflatten(spec, vs),
            max_exp_avg_sq=_treeutil.unflatten(spec, vmaxes) if amsgrad else None,
        )
        return _treeutil.unflatten(spec, updates), new_state

    return GradientTransformation(init, update)


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adam (Kingma & Ba), with torch.optim.Adam's arguments, defaults and numbers.

    With `g` the gradient (plus `weight_decay * p`, coupled L2), `t` the update number (from 1):

        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2          (v_max <- max(v_max, v) with amsgrad)
        update = -lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Example:
        >>> opt = pn.optim.adam(1e-3)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
        >>> state.exp_avg["0.weight"].shape == params["0.weight"].shape
        True
    """
    return _adam("adam", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled=False)


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
