"""`pn.nn.flatten`: merge a range of dims into one, as torch.nn.Flatten."""

from __future__ import annotations

import numbers
from typing import Any

import attrs
import torch

from .._errors import TreeMismatchError
from .._params import Params
from ._checks import input_error
from ._model import EMPTY, Model, layer_name

__all__ = ["Flatten", "flatten"]


@attrs.frozen
class Flatten(Model):
    """Merge dims `start_dim..end_dim` (inclusive; negative counts from the end) into one. No params."""

    start_dim: int
    end_dim: int

    def init(self, key: torch.Tensor) -> Params:
        return EMPTY

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        if len(params):
            raise TreeMismatchError(
                f"the {layer_name('flatten layer', path)} takes no params, got {list(params)}"
            )
        if not isinstance(x, torch.Tensor) or not self._fits(x.dim()):
            needed = max(d + 1 if d >= 0 else -d for d in (self.start_dim, self.end_dim))
            expected = (
                f"input with at least {needed} dims (start_dim={self.start_dim}, "
                f"end_dim={self.end_dim})"
            )
            raise input_error("flatten layer", path, expected, x)
        return torch.flatten(x, self.start_dim, self.end_dim), state

    def _fits(self, rank: int) -> bool:
        start, end = (d if d >= 0 else rank + d for d in (self.start_dim, self.end_dim))
        return 0 <= start <= end < rank


def flatten(start_dim: int = 1, end_dim: int = -1) -> Flatten:
    """Flatten dims `start_dim` to `end_dim` into one, as `torch.nn.Flatten` (default: all but the batch dim).

    Example:
        >>> pn.nn.flatten().apply(pn.Params(), torch.ones(8, 3, 4, 4)).shape
        torch.Size([8, 48])
    """
    for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"flatten: {name} must be an int, got {value!r}")
    # Only dims counted from the same end can be compared before the input's rank is known.
    if (start_dim >= 0) == (end_dim >= 0) and start_dim > end_dim:
        raise ValueError(
            f"flatten: start_dim cannot come after end_dim, got start_dim={start_dim} and "
            f"end_dim={end_dim}"
        )
    return Flatten(int(start_dim), int(end_dim))
