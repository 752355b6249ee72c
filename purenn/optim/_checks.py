"""Checks the rules share beyond `_common`: betas, a state's type, params a rule cannot do without."""

from __future__ import annotations

from typing import Any

import torch

from .._errors import StateError, TreeMismatchError
from ._base import GradientTransformation
from ._common import LearningRate, validate_lr

__all__ = [
    "check_betas",
    "check_left_out",
    "check_lr",
    "check_rule",
    "check_settings",
    "check_state",
    "need_params",
]


def check_lr(lr: LearningRate, negative: str) -> None:
    """`validate_lr`, with `negative` (formatted with `lr`) in the wording of the rule's torch twin."""
    if not callable(lr) and not isinstance(lr, bool):
        value = float(lr) if isinstance(lr, torch.Tensor) and lr.numel() == 1 else lr
        if isinstance(value, (int, float)) and not 0.0 <= value:
            raise ValueError(negative.format(lr=value))
    validate_lr(lr)


def check_betas(betas: Any) -> None:
    """torch.optim's beta checks (`0 <= beta < 1`), after checking that `betas` is a pair."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def check_state(rule: str, state: Any, expected: type) -> None:
    """Reject a state that another rule's `init` made (e.g. an SgdState passed to adam)."""
    if not isinstance(state, expected):
        raise StateError(
            f"{rule}: got a {type(state).__name__} as the optimizer state, but {rule}'s state is "
            f"{expected.__name__}: pass the state that this rule's init(params) returned"
        )


# Settings a state records by holding a buffer or None rather than in a field of that name.
_BY_BUFFER = {"momentum": "momentum_buffer"}


def check_settings(rule: str, state: Any, **wanted: Any) -> None:
    """Reject a state made by this rule built with other settings (adam(amsgrad=True)'s update given adam()'s state).

    A state fixes the settings that shape it (static flags, buffers present or not);
    running on it with others would silently follow the state's. Each keyword is this
    rule's value of a setting, compared with the state's field of that name, or for
    `momentum` with whether the state holds a momentum buffer (shown as 0 or non-zero).
    """
    for name, value in wanted.items():
        buffer = _BY_BUFFER.get(name)
        if buffer is None:
            made = getattr(state, name)
        else:
            made = "0" if getattr(state, buffer) is None else "non-zero"
            value = "non-zero" if value else "0"
        if made != value:
            raise StateError(
                f"{rule}: the state was made with {name}={made}, but this rule has "
                f"{name}={value}: pass the state that this rule's init(params) returned"
            )


def check_left_out(rule: str, state: Any, **built: float) -> None:
    """Reject a state whose hyperparameter asks for a term this rule was built without.

    A rule built with `weight_decay=0` (or `momentum=0`) leaves that term out of its
    update, so a non-zero value set later in `state.hyperparams` would be silently
    ignored. Checked eagerly only: under torch.compile the value is a graph input, and
    reading it would break the graph; under torch.func transforms it is not a number.
    Hyperparameters off the CPU are not read either (that would synchronise with the
    device every step).
    """
    if torch.compiler.is_compiling():
        return
    for name, value in built.items():
        current = state.hyperparams.get(name) if value == 0 else None
        if (
            isinstance(current, torch.Tensor)
            and current.device.type == "cpu"
            and current.numel() == 1
            # Under torch.func.vmap (a stacked ensemble's states) or grad the value is a
            # wrapper that cannot be read as a number.
            and not torch._C._functorch.is_functorch_wrapped_tensor(current)
            and float(current) != 0
        ):
            raise StateError(
                f"{rule}: the rule was built with {name}=0, which leaves that term out of its "
                f"update, but the state's hyperparams[{name!r}] is {float(current):g} and would be "
                f"ignored. Build the rule with a non-zero {name}, or with "
                f"pn.optim.inject_hyperparams({rule})({name}=0.0, ...) to change it in training."
            )


def need_params(rule: str, params: Any, why: str) -> None:
    """Reject `params=None` for a rule that reads the params (`why` says what for)."""
    if params is None:
        raise TreeMismatchError(
            f"{rule}: this rule needs params ({why}): call update(grads, state, params)"
        )


def check_rule(owner: str, rule: Any, name: str = "rule") -> None:
    """Reject a `rule` argument that is not a GradientTransformation (a factory, a function)."""
    if not isinstance(rule, GradientTransformation):
        hint = (
            " (call the factory: e.g. pn.optim.adam(), not pn.optim.adam)" if callable(rule) else ""
        )
        raise TypeError(
            f"{owner}: {name} must be a GradientTransformation, got {type(rule).__name__}{hint}"
        )
