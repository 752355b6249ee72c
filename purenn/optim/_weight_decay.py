"""`pn.optim.add_decayed_weights`: add `weight_decay * params` to the updates (optionally masked)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_state, need_params
from ._common import check_nonnegative, check_update_args
from ._kernel import hyperparams, leafwise
from ._labels import LabelSpec
from ._masked import masked

__all__ = ["AddDecayedWeightsState", "add_decayed_weights"]


@node
class AddDecayedWeightsState:
    """State of `add_decayed_weights`: `hyperparams` (`weight_decay`, a float64 0-d tensor)."""

    hyperparams: Params


def _kernel(g: Tensor, p: Tensor, s: Mapping[str, Any]) -> tuple[Tensor]:
    return (g + s["weight_decay"] * p,)


def add_decayed_weights(wd: float = 0.0, mask: LabelSpec | None = None) -> GradientTransformation:
    """`updates + wd * params`, leaf by leaf, as `optax.add_decayed_weights(weight_decay=wd)`.

    Chained before a rule this is coupled L2 decay (as torch.optim's `weight_decay`);
    chained after the learning rate it would be scaled by it, so put it before.

    Args:
        wd: the decay coefficient (>= 0); the state keeps it as `hyperparams["weight_decay"]`.
        mask: where to decay (see `masked`); None decays every leaf. Typically
            `{"*.bias": False, "*norm*": False, "*": True}`.

    Example:
        >>> opt = pn.optim.chain(pn.optim.add_decayed_weights(1e-4, mask={"*.bias": False, "*": True}),
        ...                      pn.optim.sgd(0.1, momentum=0.9))
    """
    check_nonnegative("weight_decay", wd)

    def init(params: Any) -> AddDecayedWeightsState:
        return AddDecayedWeightsState(hyperparams=hyperparams(weight_decay=wd))

    def update(
        grads: Any, state: AddDecayedWeightsState, params: Any = None
    ) -> tuple[Any, AddDecayedWeightsState]:
        check_state("add_decayed_weights", state, AddDecayedWeightsState)
        need_params("add_decayed_weights", params, "to decay them")
        check_update_args("add_decayed_weights", grads, state, params, params)
        scalars = {"weight_decay": state.hyperparams["weight_decay"]}
        (updates,) = leafwise(_kernel, (grads, params), scalars, outputs=(True,))
        return updates, state

    rule = GradientTransformation(init, update)
    return rule if mask is None else masked(rule, mask)
