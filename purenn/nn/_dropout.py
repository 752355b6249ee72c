"""`pn.nn.dropout`: zero elements with probability p in training, driven by an explicit key."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .. import random as pnr
from .._params import Params
from ._model import Model, layer_name

__all__ = ["Dropout", "dropout"]


def _probability(instance: Any, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {value!r}")


@attrs.frozen
class Dropout(Model):
    """In training, zero each element with probability `p` and scale the rest by `1/(1-p)`.

    Identity in evaluation. The mask comes from the `key` given to `apply`, so the
    same key gives the same mask and no global RNG is consumed.
    """

    p: float = attrs.field(default=0.5, validator=_probability)

    def init(self, key: torch.Tensor) -> Params:
        return Params()

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        if not train or self.p == 0.0:
            return x, state
        if key is None:
            raise ValueError(
                f"the {layer_name('dropout layer', path)} needs a PRNG key in training: call "
                "model.apply(params, x, key=key, train=True) with a fresh key each step, "
                "e.g. key, step_key = pn.random.split(key)"
            )
        if self.p == 1.0:
            return torch.zeros_like(x), state
        keep = pnr.bernoulli(key, 1.0 - self.p, tuple(x.shape))
        return x * keep.to(x.dtype) / (1.0 - self.p), state


def dropout(p: float = 0.5) -> Dropout:
    """Dropout with probability `p`, as `torch.nn.Dropout(p)`, but with an explicit key.

    Example:
        >>> drop = pn.nn.dropout(0.1)
        >>> y = drop.apply(pn.Params(), x, key=pn.random.key(0), train=True)
    """
    return Dropout(p)
