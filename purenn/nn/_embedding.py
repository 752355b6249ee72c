"""`pn.nn.embedding`: a lookup table of vectors, with torch.nn.Embedding's shapes and init."""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.nn.functional as F

from .. import random as pnr
from .._errors import ShapeError
from .._params import Params
from ._checks import describe, positive_int
from ._model import Model, layer_name, take_params

__all__ = ["Embedding", "embedding"]

_INDEX_DTYPES = (torch.int64, torch.int32)


@attrs.frozen
class Embedding(Model):
    """Row `i` of `weight` for each index `i`: input `(*)` of int64/int32, output `(*, embedding_dim)`.

    Param: `weight` `(num_embeddings, embedding_dim)`, standard normal, with row
    `padding_idx` zero (its gradient is zero too), as torch.nn.Embedding.
    """

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None
    dtype: torch.dtype

    def init(self, key: torch.Tensor) -> Params:
        shape = (self.num_embeddings, self.embedding_dim)
        weight = pnr.normal(key, shape, dtype=self.dtype)
        if self.padding_idx is not None:
            rows = torch.arange(self.num_embeddings, device=weight.device).unsqueeze(1)
            weight = torch.where(rows == self.padding_idx, 0.0, weight)
        return Params({"weight": weight})

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        (weight,) = take_params(
            params, "embedding layer", path, {"weight": (self.num_embeddings, self.embedding_dim)}
        )
        if not isinstance(x, torch.Tensor) or x.dtype not in _INDEX_DTYPES:
            got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else describe(x)
            raise ShapeError(
                f"the {layer_name('embedding layer', path)} expects an int64 or int32 tensor of "
                f"indices in [0, {self.num_embeddings}) (num_embeddings={self.num_embeddings}), "
                f"got {got}"
            )
        return F.embedding(x, weight, self.padding_idx), state


def embedding(
    num_embeddings: int,
    embedding_dim: int,
    padding_idx: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Embedding:
    """A table of `num_embeddings` vectors of size `embedding_dim`, as `torch.nn.Embedding`.

    `padding_idx` (negative counts from the end) names a row that starts at zero and gets no
    gradient. torch's `max_norm` is not offered: it rescales the weight in place.

    Example:
        >>> emb = pn.nn.embedding(100, 16, padding_idx=0)
        >>> emb.apply(emb.init(pn.random.key(0)), torch.tensor([[1, 2, 0]])).shape
        torch.Size([1, 3, 16])
    """
    num_embeddings = positive_int("embedding", "num_embeddings", num_embeddings)
    embedding_dim = positive_int("embedding", "embedding_dim", embedding_dim)
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
            raise ValueError(f"embedding: padding_idx must be an int or None, got {padding_idx!r}")
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"embedding: Padding_idx must be within num_embeddings, got padding_idx="
                f"{padding_idx} and num_embeddings={num_embeddings}"
            )
        padding_idx %= num_embeddings
    return Embedding(num_embeddings, embedding_dim, padding_idx, dtype)
