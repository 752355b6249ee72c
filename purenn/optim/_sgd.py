"""`pn.optim.sgd`: stochastic gradient descent with momentum, as torch.optim.SGD."""

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

__all__ = ["SgdState", "sgd"]


@node
class SgdState:
    """State of `sgd`: `count` updates done (int64 0-d); `momentum_buffer` like params, or None without momentum."""

    count: torch.Tensor
    momentum_buffer: Params | None


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
        _, leaves, spec = float_leaves("sgd", params)
        buffer = (
            _treeutil.unflatten(spec, [torch.zeros_like(p) for p in leaves])
            if momentum != 0
            else None
        )
        return SgdState(count=torch.zeros((), dtype=torch.int64), momentum_buffer=buffer)

    def update(grads: Any, state: SgdState, params: Any = None) -> tuple[Any, SgdState]:
        if weight_decay != 0:
            require_params("sgd", params)
        like = (
            state.momentum_buffer
            if state.momentum_buffer is not None
            else (params if params is not None else grads)
        )
        _, g_leaves, spec = check_update_args("sgd", grads, state, params, like)
        p_leaves = _treeutil.flatten(params)[0] if params is not None else [None] * len(g_leaves)
        step_lr = lr_value(lr, state.count)
        first = state.count == 0
        # The first update starts the buffer at g, later ones decay it: b = keep * b + add * g.
        scalars = StepScalars(
            lr=step_lr,
            keep=torch.where(first, 0.0, torch.tensor(momentum, dtype=torch.float64)),
            add=torch.where(first, 1.0, torch.tensor(1.0 - dampening, dtype=torch.float64)),
        )
        if momentum != 0:
            buffers = _treeutil.flatten(state.momentum_buffer)[0]
        updates, new_buffers = [], []
        for i, (g, p) in enumerate(zip(g_leaves, p_leaves, strict=True)):
            c = scalars.for_dtype(g.dtype)
            dtype = g.dtype
            if maximize:
                g = -g
            if weight_decay != 0:
                g = g + weight_decay * p
            if momentum != 0:
                b = as_dtype(buffers[i] * c["keep"] + g * c["add"], dtype)
                new_buffers.append(b)
                g = g + momentum * b if nesterov else b
            updates.append(as_dtype(g * -c["lr"], dtype))
        new_state = SgdState(
            count=state.count + 1,
            momentum_buffer=_treeutil.unflatten(spec, new_buffers) if momentum != 0 else None,
        )
        return _treeutil.unflatten(spec, updates), new_state

    return GradientTransformation(init, update)
