"""The torch.optim twins of pn.optim rules: which factory, which state class, which buffers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs
import torch

from ._adadelta import AdadeltaState, adadelta
from ._adafactor import AdafactorState, adafactor
from ._adagrad import AdagradState, adagrad
from ._adam import AdamState, adam, adamw
from ._adamax import AdamaxState, adamax
from ._base import GradientTransformation
from ._nadam import NadamState, nadam
from ._radam import RadamState, radam
from ._rmsprop import RmspropState, rmsprop
from ._sgd import SgdState, sgd

__all__ = ["TWINS", "Twin", "factory_kwargs", "group_values", "scalar_dtype", "twin_of"]


@attrs.frozen
class Twin:
    """A torch.optim class and its pn.optim rule.

    `buffers` are the per-param state entries that are params-shaped trees in the
    purenn state under the same name (torch's names are purenn's field names).
    `has_step`: torch keeps a `step` count (SGD does not).
    """

    torch_class: type[torch.optim.Optimizer]
    factory: Callable[..., GradientTransformation]
    state_class: type
    buffers: tuple[str, ...]
    has_step: bool = True


TWINS: tuple[Twin, ...] = (
    Twin(torch.optim.SGD, sgd, SgdState, ("momentum_buffer",), has_step=False),
    Twin(torch.optim.AdamW, adamw, AdamState, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    Twin(torch.optim.Adam, adam, AdamState, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    Twin(torch.optim.RMSprop, rmsprop, RmspropState, ("square_avg", "momentum_buffer", "grad_avg")),
    Twin(torch.optim.Adagrad, adagrad, AdagradState, ("sum",)),
    Twin(torch.optim.Adadelta, adadelta, AdadeltaState, ("square_avg", "acc_delta")),
    Twin(torch.optim.Adamax, adamax, AdamaxState, ("exp_avg", "exp_inf")),
    Twin(torch.optim.NAdam, nadam, NadamState, ("exp_avg", "exp_avg_sq")),
    Twin(torch.optim.RAdam, radam, RadamState, ("exp_avg", "exp_avg_sq")),
    Twin(torch.optim.Adafactor, adafactor, AdafactorState, ()),
)

# Static fields of the states that are torch.optim group options of the same name.
_FLAGS = ("nesterov", "maximize", "amsgrad", "centered", "decoupled_weight_decay")


def twin_of(optimizer: torch.optim.Optimizer, owner: str) -> Twin:
    """The twin for an optimizer's exact class (a subclass may change the math, so it is refused)."""
    for twin in TWINS:
        if type(optimizer) is twin.torch_class:
            return twin
    names = ", ".join(t.torch_class.__name__ for t in TWINS)
    raise TypeError(
        f"{owner}: no pn.optim twin for {type(optimizer).__module__}.{type(optimizer).__name__} "
        f"(supported: {names})"
    )


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim keeps its step counts (and NAdam's mu_product) in."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return float(value)
    if isinstance(value, (tuple, list)):
        return tuple(_number(v) for v in value)
    return value


def factory_kwargs(twin: Twin, group: dict[str, Any]) -> dict[str, Any]:
    """The pn.optim factory's arguments from a torch param group (the names are the same)."""
    names = inspect.signature(twin.factory).parameters
    return {name: _number(group[name]) for name in names if name in group}


def group_values(twin: Twin, state: Any) -> dict[str, Any]:
    """torch.optim group options from a purenn state: its hyperparams, with betas/eps as tuples, and flags."""
    h = {name: float(value) for name, value in state.hyperparams.items()}
    values: dict[str, Any] = dict(h)
    if "beta1" in h:
        values["betas"] = (values.pop("beta1"), values.pop("beta2"))
    if twin.state_class is AdafactorState:
        values["eps"] = (values.pop("eps1", None), values.pop("eps2"))
    for flag in _FLAGS:
        if hasattr(state, flag):
            values[flag] = getattr(state, flag)
    return values
