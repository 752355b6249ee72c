"""`pn.optim.adagrad`: Adagrad with learning-rate decay, as torch.optim.Adagrad."""

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
from ._kernel import hyperparams, leafwise

__all__ = ["AdagradState", "adagrad"]


@node
class AdagradState:
    """State of `adagrad`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `lr_decay`,
    `weight_decay`, `initial_accumulator_value`, `eps` as float64 0-d tensors);
    `sum` (running sum of `g^2`, like params, starting at `initial_accumulator_value`).
    Static: `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    sum: Params
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _kernel(
    g: Tensor, p: Tensor | None, acc: Tensor, s: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    # torch.optim's single-tensor Adagrad (torch/optim/adagrad.py), operation for operation.
    if s["maximize"]:
        g = -g
    if p is not None:
        g = g + s["weight_decay"] * p
    acc = acc + g * g
    std = torch.sqrt(acc) + s["eps"]
    return -s["clr"] * g / std, acc


def adagrad(
    lr: LearningRate = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adagrad (Duchi et al.), with torch.optim.Adagrad's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`, plus `weight_decay * p`) and `t`
    the update number (from 1):

        s <- s + g^2                        (s starts at initial_accumulator_value)
        update = -lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    Args:
        lr: learning rate, or a schedule `count -> lr` (count starts at 0).

    Example:
        >>> opt = pn.optim.adagrad(0.1, initial_accumulator_value=0.1)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
    """
    validate_lr(lr)
    check_nonnegative("lr_decay", lr_decay)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("eps", eps, "epsilon")

    def init(params: Any) -> AdagradState:
        float_leaves("adagrad", params)
        return AdagradState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr),
                lr_decay=lr_decay,
                weight_decay=weight_decay,
                initial_accumulator_value=initial_accumulator_value,
                eps=eps,
            ),
            sum=_treeutil.tree_map(lambda p: torch.full_like(p, initial_accumulator_value), params),
            maximize=maximize,
        )

    def update(grads: Any, state: AdagradState, params: Any = None) -> tuple[Any, AdagradState]:
        check_state("adagrad", state, AdagradState)
        check_settings("adagrad", state, maximize=maximize)
        check_update_args("adagrad", grads, state, params, state.sum)
        check_left_out("adagrad", state, weight_decay=weight_decay)
        if weight_decay != 0:
            require_params("adagrad", params)
        h = state.hyperparams
        step_lr = lr_value(lr, state.count, h["lr"])
        scalars = {
            "maximize": state.maximize,
            "weight_decay": h["weight_decay"],
            "eps": h["eps"],
            "clr": step_lr / (1.0 + state.count.to(torch.float64) * h["lr_decay"]),
        }
        trees = (grads, params if weight_decay != 0 else None, state.sum)
        updates, acc = leafwise(_kernel, trees, scalars, outputs=(True, True))
        new_state = attrs.evolve(
            state,
            count=state.count + 1,
            hyperparams=Params({**h, "lr": step_lr}),
            sum=acc,
        )
        return updates, new_state

    return GradientTransformation(init, update)
