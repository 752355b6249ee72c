"""Explicit-key randomness inside torch code run by `pn.from_torch` models.

While a converted module runs in training, a `TorchFunctionMode` answers torch's dropout
functions (`F.dropout`, `dropout1d/2d/3d`, `alpha_dropout`, `feature_alpha_dropout`, their
`torch.*` kernels, and `F.scaled_dot_product_attention` and `F.multi_head_attention_forward`
with dropout, computed by `_attention_math`) with purenn's keyed versions: the i-th such call in a forward draws from
`pn.random.fold_in(key, i)`. So the same key gives the same output, no global RNG is consumed,
and `torch.func.vmap` over keys gives each member its own masks. Other random ops (e.g.
`F.rrelu`) still use torch's generator, forked so the global state is restored afterwards and
seeded from the key when the key is a concrete tensor (not under vmap).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import random as pnr
from ..random._keys import _check_key as check_key
from . import _attention_math, _keyed_dropout

__all__ = ["concrete_seed", "keyed_randomness", "seeded_generators"]

Keyed = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]


def _check_p(p: float) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


class _KeyedDropoutMode(TorchFunctionMode):
    """Answers torch's dropout functions with keyed ones; passes everything else through."""

    def __init__(self, key: torch.Tensor | None, owner: str) -> None:
        super().__init__()
        self._key = key
        self._owner = owner
        self._calls = 0

    def next_key(self, what: str) -> torch.Tensor:
        """The key of the next random call in this forward: `fold_in(key, index of the call)`."""
        if self._key is None:
            raise ValueError(
                f"this {self._owner} uses dropout, so training needs a PRNG key (it called "
                f"{what}): call model.apply(params, x, key=key, train=True) with a fresh key "
                "each step"
            )
        key = pnr.fold_in(self._key, self._calls)
        self._calls += 1
        return key

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            result = handler(self, *args, **kwargs)
            if result is not NotImplemented:
                return result
        # Everything else runs with this mode off, including calls nested inside composite torch
        # functions; that is why F.multi_head_attention_forward is answered here as a whole.
        # (Re-entering the mode via torch.overrides.redispatch_function recurses without end on
        # Python-level Tensor methods such as Tensor.unflatten.)
        return func(*args, **kwargs)


def _functional(keyed: Keyed, name: str, unbatched_rank: int | None = None) -> Callable[..., Any]:
    """A handler for `F.<name>(input, p=0.5, training=True, inplace=False)`.

    The result is always a new tensor: `inplace=True` is not honoured (the input stays unchanged).
    """

    def handle(
        mode: _KeyedDropoutMode,
        input: torch.Tensor,
        p: float = 0.5,
        training: bool = True,
        inplace: bool = False,
    ) -> Any:
        _check_p(p)
        if not training or p == 0.0:
            return NotImplemented
        if unbatched_rank is not None and input.dim() == unbatched_rank:
            # dropout1d/3d treat one rank lower as a single unbatched sample, as torch does.
            return keyed(input.unsqueeze(0), p, mode.next_key(name)).squeeze(0)
        return keyed(input, p, mode.next_key(name))

    return handle


def _kernel(keyed: Keyed, name: str) -> Callable[..., Any]:
    """A handler for the `torch.<name>(input, p, train)` kernels that the functionals call."""

    def handle(mode: _KeyedDropoutMode, input: torch.Tensor, p: float, train: bool) -> Any:
        _check_p(p)
        if not train or p == 0.0:
            return NotImplemented
        return keyed(input, p, mode.next_key(name))

    return handle


def _sdpa(
    mode: _KeyedDropoutMode,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Any:
    if dropout_p == 0.0:
        return NotImplemented
    step_key = mode.next_key("scaled_dot_product_attention")
    return _attention_math.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask,
        dropout_p,
        is_causal,
        scale,
        enable_gqa,
        dropout=lambda w, p: _keyed_dropout.dropout(w, p, step_key),
    )


def _mha(mode: _KeyedDropoutMode, *args: Any, **kwargs: Any) -> Any:
    bound = _MHA_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    if not bound.arguments["training"] or bound.arguments["dropout_p"] == 0.0:
        return NotImplemented
    step_key = mode.next_key("multi_head_attention_forward")
    return _attention_math.multi_head_attention_forward(
        *bound.args,
        **bound.kwargs,
        dropout=lambda w, p: _keyed_dropout.dropout(w, p, step_key),
    )


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)

_HANDLERS: dict[Any, Callable[..., Any]] = {
    F.dropout: _functional(_keyed_dropout.dropout, "dropout"),
    F.alpha_dropout: _functional(_keyed_dropout.alpha_dropout, "alpha_dropout"),
    F.feature_alpha_dropout: _functional(
        _keyed_dropout.feature_alpha_dropout, "feature_alpha_dropout"
    ),
    F.dropout1d: _functional(_keyed_dropout.feature_dropout, "dropout1d", unbatched_rank=2),
    F.dropout2d: _functional(_keyed_dropout.feature_dropout, "dropout2d"),
    F.dropout3d: _functional(_keyed_dropout.feature_dropout, "dropout3d", unbatched_rank=4),
    F.scaled_dot_product_attention: _sdpa,
    F.multi_head_attention_forward: _mha,
}
_KERNELS: dict[str, Keyed] = {
    "dropout": _keyed_dropout.dropout,
    "feature_dropout": _keyed_dropout.feature_dropout,
    "alpha_dropout": _keyed_dropout.alpha_dropout,
    "feature_alpha_dropout": _keyed_dropout.feature_alpha_dropout,
}
_HANDLERS.update(
    {
        getattr(torch, variant): _kernel(keyed, variant)
        for name, keyed in _KERNELS.items()
        for variant in (name, name + "_")
    }
)


def concrete_seed(key: torch.Tensor) -> int | None:
    """The key's 64 bits as a seed for torch's generator, or None when the key is not concrete
    (a per-member key under `torch.func.vmap`)."""
    check_key(key)
    try:
        hi, lo = (int(word) for word in key.tolist())
    except RuntimeError:
        return None
    return (hi << 32) | lo


@contextlib.contextmanager
def seeded_generators(seed: int | None, cuda_devices: list[int]) -> Iterator[None]:
    """Fork the CPU generator and those of `cuda_devices`, seed them (if `seed` is given), restore after."""
    with torch.random.fork_rng(devices=cuda_devices):
        if seed is not None:
            torch.random.default_generator.manual_seed(seed)
            for index in cuda_devices:
                torch.cuda.default_generators[index].manual_seed(seed)
        yield


@contextlib.contextmanager
def keyed_randomness(
    key: torch.Tensor | None, owner: str, cuda_devices: list[int]
) -> Iterator[None]:
    """Run torch code with dropout drawn from `key` and torch's generators forked (see module doc).

    `owner` names the converted module in the error raised when dropout runs without a key.
    """
    seed = None if key is None else concrete_seed(key)
    with seeded_generators(seed, cuda_devices), _KeyedDropoutMode(key, owner):
        yield
