"""`pn.nn.linear`: `y = x W^T + b`, with torch.nn.Linear's shapes and initialisation."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from .. import random as pnr
from .._errors import ShapeError
from .._params import Params
from ._checks import check_dtype
from ._model import Model, layer_name, take_params

__all__ = ["Linear", "linear"]


def _positive(name: str):
    def check(instance: Any, attribute: Any, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(
                f"{type(instance).__name__.lower()}: {name} must be a non-negative int, got {value!r}"
            )

    return check


@attrs.frozen
class Linear(Model):
    """A fully connected layer. Params: `weight` `(out_features, in_features)`, `bias` `(out_features,)`.

    Input `(..., in_features)`, output `(..., out_features)`. Both leaves start
    uniform in `[-1/sqrt(in_features), 1/sqrt(in_features))`, as in torch.nn.Linear.
    """

    in_features: int = attrs.field(validator=_positive("in_features"))
    out_features: int = attrs.field(validator=_positive("out_features"))
    bias: bool = True
    dtype: torch.dtype = torch.float32

    def init(self, key: torch.Tensor) -> Params:
        k_weight, k_bias = pnr.split(key)
        shapes: dict[str, tuple[int, ...]] = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        if self.in_features == 0:  # torch leaves a zero-fan-in layer at zeros
            return Params(
                {name: torch.zeros(shape, dtype=self.dtype) for name, shape in shapes.items()}
            )
        bound = 1.0 / math.sqrt(self.in_features)
        keys = {"weight": k_weight, "bias": k_bias}
        return Params(
            {
                name: pnr.uniform(keys[name], shape, dtype=self.dtype, low=-bound, high=bound)
                for name, shape in shapes.items()
            }
        )

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        weight, bias = take_params(
            params,
            "linear layer",
            path,
            {
                "weight": (self.out_features, self.in_features),
                "bias": (self.out_features,) if self.bias else None,
            },
        )
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != self.in_features:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(
                f"the {layer_name('linear layer', path)} expects input of shape (..., {self.in_features}) "
                f"(in_features={self.in_features}), got {got}"
            )
        check_dtype(x, weight.dtype, "linear layer", path)
        return F.linear(x, weight, bias), state


def linear(
    in_features: int, out_features: int, bias: bool = True, *, dtype: torch.dtype = torch.float32
) -> Linear:
    """A fully connected layer `y = x W^T + b`, as `torch.nn.Linear(in_features, out_features, bias)`.

    Example:
        >>> layer = pn.nn.linear(3, 2)
        >>> params = layer.init(pn.random.key(0))
        >>> layer.apply(params, torch.ones(5, 3)).shape
        torch.Size([5, 2])
    """
    return Linear(in_features, out_features, bias=bias, dtype=dtype)
