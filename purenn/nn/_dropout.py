"""`pn.nn.dropout`: zero elements with probability p in training, driven by an explicit key."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .._params import Params
from . import _keyed_dropout
from ._checks import probability
from ._model import Model, layer_name

__all__ = ["Dropout", "dropout"]


def _probability(instance: Any, attribute: Any, value: float) -> None:
    probability(value)


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
        return _keyed_dropout.dropout(x, self.p, key), state


def dropout(p: float = 0.5) -> Dropout:
    """Dropout with probability `p`, as `torch.nn.Dropout(p)`, but with an explicit key.

    Example:
        >>> drop = pn.nn.dropout(0.1)
        >>> y = drop.apply(pn.Params(), x, key=pn.random.key(0), train=True)
    """
    return Dropout(p)
