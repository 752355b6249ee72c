"""`pn.nn.multi_head_attention`: torch.nn.MultiheadAttention as a pure model with keyed dropout."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from .. import random as pnr
from .._errors import ShapeError, TreeMismatchError
from .._params import Params
from . import _keyed_dropout
from ._attention_math import multi_head_attention_forward
from ._checks import describe, positive_int, probability
from ._init import fan_in_uniform, xavier_normal, xavier_uniform
from ._model import Model, join, layer_name, take_params

__all__ = ["MultiheadAttention", "multi_head_attention"]

_KIND = "multi_head_attention layer"
_MASK_DTYPES = "bool or floating"


@attrs.frozen
class MultiheadAttention(Model):
    """Multi-head attention with torch.nn.MultiheadAttention's params, init and semantics.

    `apply(params, x, ...)` takes `x` = `query` (self-attention: key = value = query) or a
    tuple `(query, key, value)`, and the masks and flags of torch's forward as keyword
    arguments: `key_padding_mask`, `need_weights=True`, `attn_mask`,
    `average_attn_weights=True`, `is_causal=False`. It returns torch's pair
    `(attn_output, attn_weights)`, `attn_weights` None when `need_weights=False` (under
    `torch.func.vmap` take `[0]` or ask for the weights: vmap cannot return None).

    Params: `in_proj_weight` `(3E, E)` (xavier uniform) or, when `kdim`/`vdim` differ from
    `E`, `q_proj_weight`, `k_proj_weight`, `v_proj_weight`; `in_proj_bias` `(3E,)` (zeros);
    `bias_k`, `bias_v` `(1, 1, E)` (xavier normal, with `add_bias_kv`); `out_proj.weight`
    `(E, E)` (`U(+-1/sqrt(E))`) and `out_proj.bias` (zeros).
    """

    _options: ClassVar[frozenset[str] | None] = frozenset(
        {"key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal"}
    )

    embed_dim: int
    num_heads: int
    dropout: float
    bias: bool
    add_bias_kv: bool
    add_zero_attn: bool
    kdim: int
    vdim: int
    batch_first: bool
    dtype: torch.dtype

    @property
    def _packed(self) -> bool:
        return self.kdim == self.embed_dim and self.vdim == self.embed_dim

    def _expected(self) -> dict[str, tuple[int, ...] | None]:
        e = self.embed_dim
        return {
            "in_proj_weight": (3 * e, e) if self._packed else None,
            "q_proj_weight": None if self._packed else (e, e),
            "k_proj_weight": None if self._packed else (e, self.kdim),
            "v_proj_weight": None if self._packed else (e, self.vdim),
            "in_proj_bias": (3 * e,) if self.bias else None,
            "bias_k": (1, 1, e) if self.add_bias_kv else None,
            "bias_v": (1, 1, e) if self.add_bias_kv else None,
        }

    def init(self, key: torch.Tensor) -> Params:
        e, dtype = self.embed_dim, self.dtype
        names = [*self._expected(), "out_proj.weight"]  # one key per possible leaf, always
        keys = dict(zip(names, pnr.split(key, len(names)), strict=True))
        params: dict[str, Any] = {}
        for name, shape in self._expected().items():
            if shape is None:
                continue
            if name == "in_proj_bias":
                params[name] = torch.zeros(shape, dtype=dtype, device=key.device)
            elif name in ("bias_k", "bias_v"):
                params[name] = xavier_normal(keys[name], shape, dtype)
            else:
                params[name] = xavier_uniform(keys[name], shape, dtype)
        out_proj = {"weight": fan_in_uniform(keys["out_proj.weight"], (e, e), e, dtype)}
        if self.bias:
            out_proj["bias"] = torch.zeros(e, dtype=dtype, device=key.device)
        params["out_proj"] = out_proj
        return Params(params)

    def _take(self, params: Params, path: str) -> tuple[dict[str, Any], Any, Any]:
        top = Params({name: leaf for name, leaf in params.items() if name != "out_proj"})
        leaves = dict(
            zip(self._expected(), take_params(top, _KIND, path, self._expected()), strict=True)
        )
        out = params["out_proj"] if "out_proj" in params else Params()
        if not isinstance(out, Params):
            raise TreeMismatchError(
                f"params '{join(path, 'out_proj')}' of the {layer_name(_KIND, path)} must hold "
                f"'weight' and 'bias', got a tensor of shape {tuple(out.shape)}"
            )
        e = self.embed_dim
        out_weight, out_bias = take_params(
            out,
            _KIND,
            join(path, "out_proj"),
            {"weight": (e, e), "bias": (e,) if self.bias else None},
        )
        return leaves, out_weight, out_bias

    def _unpack(self, x: Any, path: str) -> tuple[Any, Any, Any]:
        if isinstance(x, torch.Tensor):
            return x, x, x
        if isinstance(x, (tuple, list)) and len(x) == 3:
            return x[0], x[1], x[2]
        got = f"a {type(x).__name__} of {len(x)}" if isinstance(x, (tuple, list)) else describe(x)
        raise TypeError(
            f"the {layer_name(_KIND, path)} takes x = query (self-attention) or a tuple "
            f"(query, key, value), got {got}"
        )

    def _check_inputs(
        self, query: Any, key: Any, value: Any, key_padding_mask: Any, attn_mask: Any, path: str
    ) -> None:
        where = layer_name(_KIND, path)
        layout = (
            "(N, {L}, {E}) or ({L}, {E})" if self.batch_first else "({L}, N, {E}) or ({L}, {E})"
        )
        rank = query.dim() if isinstance(query, torch.Tensor) else 3
        for name, tensor, length, dim in (
            ("query", query, "L", self.embed_dim),
            ("key", key, "S", self.kdim),
            ("value", value, "S", self.vdim),
        ):
            if (
                not isinstance(tensor, torch.Tensor)
                or tensor.dim() not in (2, 3)
                or tensor.dim() != rank
                or tensor.shape[-1] != dim
            ):
                raise ShapeError(
                    f"the {where} expects {name} {layout.format(L=length, E=dim)} "
                    f"(embed_dim={self.embed_dim}, kdim={self.kdim}, vdim={self.vdim}), "
                    f"got {describe(tensor)}"
                )
            if tensor.dtype != self.dtype and not torch.is_autocast_enabled(tensor.device.type):
                raise ShapeError(
                    f"the {where} has {self.dtype} params but got a {tensor.dtype} {name}"
                )
        batched = rank == 3
        s_axis = 1 if batched and self.batch_first else 0
        n_axis = 0 if self.batch_first else 1  # read only for batched inputs
        if key.shape[:-1] != value.shape[:-1] or (
            batched and key.shape[n_axis] != query.shape[n_axis]
        ):
            raise ShapeError(
                f"the {where} needs key and value with the same sequence length and batch size "
                f"as each other and the batch size of query: got query {tuple(query.shape)}, "
                f"key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        tgt, src = query.shape[s_axis], key.shape[s_axis]
        batch = query.shape[n_axis] if batched else 1
        padding_shape = (batch, src) if batched else (src,)
        _check_mask(where, "key_padding_mask", key_padding_mask, [padding_shape], query.dtype)
        _check_mask(
            where,
            "attn_mask",
            attn_mask,
            [(tgt, src), (batch * self.num_heads, tgt, src)],
            query.dtype,
        )

    def _forward(
        self,
        params: Params,
        x: Any,
        *,
        state: Params,
        key: Any,
        train: bool,
        path: str,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Any, Params]:
        leaves, out_weight, out_bias = self._take(params, path)
        query, key_t, value = self._unpack(x, path)
        self._check_inputs(query, key_t, value, key_padding_mask, attn_mask, path)
        if train and self.dropout > 0.0 and key is None:
            raise ValueError(
                f"the {layer_name(_KIND, path)} has dropout={self.dropout} and needs a PRNG key "
                "in training: call model.apply(params, x, key=key, train=True)"
            )
        batched = query.dim() == 3
        if is_causal and attn_mask is None:
            # torch demands the mask as well; building it here is the obvious reading of the flag.
            s_axis = 1 if self.batch_first and batched else 0
            tgt, src = query.shape[s_axis], key_t.shape[s_axis]
            attn_mask = torch.ones(tgt, src, dtype=torch.bool, device=query.device).triu(1)
        if batched and self.batch_first:
            query, key_t, value = (t.transpose(0, 1) for t in (query, key_t, value))
        y, weights = multi_head_attention_forward(
            query,
            key_t,
            value,
            self.embed_dim,
            self.num_heads,
            leaves["in_proj_weight"],
            leaves["in_proj_bias"],
            leaves["bias_k"],
            leaves["bias_v"],
            self.add_zero_attn,
            self.dropout,
            out_weight,
            out_bias,
            training=train,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            use_separate_proj_weight=not self._packed,
            q_proj_weight=leaves["q_proj_weight"],
            k_proj_weight=leaves["k_proj_weight"],
            v_proj_weight=leaves["v_proj_weight"],
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            dropout=lambda w, p: _keyed_dropout.dropout(w, p, key),
        )
        if batched and self.batch_first:
            y = y.transpose(0, 1)
        return (y, weights), state


def _check_mask(
    where: str, name: str, mask: Any, shapes: list[tuple[int, ...]], dtype: torch.dtype
) -> None:
    """A mask is bool, or floating with the query's dtype (it is added to the attention scores)."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) not in shapes:
        options = " or ".join(str(s) for s in shapes)
        raise ShapeError(f"the {where} expects {name} of shape {options}, got {describe(mask)}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ShapeError(f"the {where} expects a {_MASK_DTYPES} {name}, got {mask.dtype}")
    if (
        mask.is_floating_point()
        and mask.dtype != dtype
        and not torch.is_autocast_enabled(mask.device.type)
    ):
        raise ShapeError(
            f"the {where} got a {mask.dtype} {name} for a {dtype} query; a floating mask is "
            f"added to the attention scores, so it must have the query's dtype (or be bool)"
        )


def multi_head_attention(
    embed_dim: int,
    num_heads: int,
    dropout: float = 0.0,
    bias: bool = True,
    add_bias_kv: bool = False,
    add_zero_attn: bool = False,
    kdim: int | None = None,
    vdim: int | None = None,
    batch_first: bool = False,
    *,
    dtype: torch.dtype = torch.float32,
) -> MultiheadAttention:
    """Multi-head attention, as `torch.nn.MultiheadAttention` (same arguments and order).

    Dropout on the attention weights (in training) draws from the `key` given to `apply`.

    Example:
        >>> attn = pn.nn.multi_head_attention(16, 4, batch_first=True)
        >>> params = attn.init(pn.random.key(0))
        >>> x = torch.randn(2, 5, 16)
        >>> out, weights = attn.apply(params, x)                       # self-attention
        >>> out, _ = attn.apply(params, (x, x, x), need_weights=False,
        ...                     key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
        >>> out.shape, weights.shape
        (torch.Size([2, 5, 16]), torch.Size([2, 5, 5]))
    """
    name = "multi_head_attention"
    embed_dim = positive_int(name, "embed_dim", embed_dim)
    num_heads = positive_int(name, "num_heads", num_heads)
    if embed_dim % num_heads != 0:
        raise ValueError(
            f"{name}: embed_dim must be divisible by num_heads, got embed_dim={embed_dim} and "
            f"num_heads={num_heads}"
        )
    return MultiheadAttention(
        embed_dim=embed_dim,
        num_heads=num_heads,
        dropout=probability(dropout, name),
        bias=bool(bias),
        add_bias_kv=bool(add_bias_kv),
        add_zero_attn=bool(add_zero_attn),
        kdim=embed_dim if kdim is None else positive_int(name, "kdim", kdim),
        vdim=embed_dim if vdim is None else positive_int(name, "vdim", vdim),
        batch_first=bool(batch_first),
        dtype=dtype,
    )
