"""Shared checks of pn.nn layers: hyperparameters at construction, inputs and state at call time.

Call-time checks look only at shapes and dtypes, never at tensor values, so they hold
under `torch.func.vmap`, `torch.func.grad` and `torch.compile`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from .._errors import ShapeError, StateError
from .._params import Params
from ._model import join, layer_name

__all__ = [
    "as_tuple",
    "check_dtype",
    "describe",
    "input_error",
    "non_negative_float",
    "positive_int",
    "probability",
    "take_state",
]


def describe(x: Any) -> str:
    """How an error message shows what it got: a tensor's shape, or the type of anything else."""
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    return f"a {type(x).__name__}"


def input_error(kind: str, path: str, expected: str, x: Any) -> ShapeError:
    """`ShapeError("the conv2d layer at '0' expects input (N, 3, H, W) ..., got (8, 4, 32, 32)")`."""
    return ShapeError(f"the {layer_name(kind, path)} expects {expected}, got {describe(x)}")


def check_dtype(x: torch.Tensor, dtype: torch.dtype, kind: str, path: str) -> None:
    """Raise unless `x` has the dtype of the layer's params (torch would fail deep inside the op).

    Under `torch.autocast` for `x`'s device, mixed dtypes are expected (a bfloat16
    activation meets float32 params) and autocast casts them, so nothing is checked.
    """
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise ShapeError(
            f"the {layer_name(kind, path)} has {dtype} params but got a {x.dtype} input; "
            f"convert the input (x.to({dtype})) or build the layer with dtype={x.dtype}"
        )


def take_state(
    state: Params, kind: str, path: str, expected: dict[str, tuple[int, ...]]
) -> list[torch.Tensor]:
    """The named leaves of one layer's state, after checking their names and shapes.

    Raises:
        StateError: names or shapes differ; the message names the state path and says
            where correct state comes from.
    """
    if set(state) != set(expected):
        missing = sorted(join(path, n) for n in set(expected) - set(state))
        extra = sorted(join(path, n) for n in set(state) - set(expected))
        raise StateError(
            f"state for the {layer_name(kind, path)} does not fit it: missing {missing}, "
            f"unexpected {extra} (expected keys {sorted(expected)}). "
            "Use model.init_state() of this model, or the state its apply returned."
        )
    leaves = []
    for name, shape in expected.items():
        leaf = state[name]
        if not isinstance(leaf, torch.Tensor) or tuple(leaf.shape) != shape:
            raise StateError(
                f"state '{join(path, name)}' of the {layer_name(kind, path)} has shape "
                f"{describe(leaf)}, expected {shape}. Was this state made by another model?"
            )
        leaves.append(leaf)
    return leaves


# --- hyperparameters, checked when a factory is called ----------------------------------------


def positive_int(layer: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """`value` as an int >= minimum, or a ValueError naming the factory and the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{layer}: {name} must be {what}, got {value!r}")
    return int(value)


def as_tuple(layer: str, name: str, value: Any, n: int, *, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of `n` ints (each >= minimum) as a tuple of `n` ints, as torch's `_ntuple`."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(
                f"{layer}: {name} must be an int or a sequence of {n} ints, got {value!r}"
            )
        return tuple(positive_int(layer, name, v, minimum=minimum) for v in value)
    return (positive_int(layer, name, value, minimum=minimum),) * n


def non_negative_float(layer: str, name: str, value: Any) -> float:
    """`value` as a finite float >= 0, or a ValueError naming the factory and the argument."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{layer}: {name} must be a finite float >= 0, got {value!r}")
    return float(value)


def probability(value: Any, layer: str = "") -> float:
    """A dropout probability in [0, 1]; the message is torch.nn.Dropout's (NaN is rejected too)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        prefix = f"{layer}: " if layer else ""
        raise ValueError(
            f"{prefix}dropout probability has to be between 0 and 1, but got {value!r}"
        )
    return float(value)
