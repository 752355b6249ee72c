"""Composition: `sequential`, `mlp`, and `wrap` for user functions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from .. import random as pnr
from .._errors import StateError, TreeMismatchError
from .._params import Params
from ._activations import relu
from ._dropout import dropout as make_dropout
from ._linear import linear
from ._model import EMPTY, Model, join, layer_name

__all__ = ["Sequential", "Wrapped", "mlp", "sequential", "wrap"]


@attrs.frozen
class Wrapped(Model):
    """A user function as a model: `fn(x) -> y`, or `fn(params, x) -> y` with an `init(key) -> Params`."""

    fn: Callable[..., Any]
    init_fn: Callable[[torch.Tensor], Params] | None = None

    def init(self, key: torch.Tensor) -> Params:
        return EMPTY if self.init_fn is None else Params(self.init_fn(key))

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        if self.init_fn is None:
            if len(params):
                raise TreeMismatchError(
                    f"the {layer_name('function ' + _name(self.fn), path)} takes no params, got {list(params)}"
                )
            return self.fn(x), state
        return self.fn(params, x), state


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def wrap(fn: Callable[..., Any], init: Callable[[torch.Tensor], Any] | None = None) -> Wrapped:
    """Make a model from a plain function.

    Without `init`, `fn(x) -> y` has no params. With `init(key) -> Params | dict`,
    `fn(params, x) -> y` receives the params that `init` made.

    Example:
        >>> scale = pn.nn.wrap(lambda p, x: p["s"] * x, init=lambda key: {"s": torch.ones(())})
        >>> scale.apply(scale.init(pn.random.key(0)), torch.ones(3))
        tensor([1., 1., 1.])
    """
    if not callable(fn):
        raise TypeError(f"pn.nn.wrap expects a callable, got {type(fn).__name__}")
    return Wrapped(fn, init)


def as_model(layer: Any, what: str) -> Model:
    """`layer` itself if a model, a parameter-free `Wrapped` if a function of x; `what` names it in errors."""
    if isinstance(layer, Model):
        return layer
    if callable(layer):
        return Wrapped(layer)
    raise TypeError(f"{what} must be a pn.nn model or a function of x, got {type(layer).__name__}")


@attrs.frozen
class Sequential(Model):
    """Layers applied in order; child `i`'s params and state live under key `str(i)`.

    Layers without params (activations) take an index but no entry, as in
    torch.nn.Sequential's state_dict.
    """

    layers: tuple[Model, ...] = attrs.field(
        converter=lambda layers: tuple(
            as_model(layer, f"sequential: layer {i}") for i, layer in enumerate(layers)
        )
    )

    def init(self, key: torch.Tensor) -> Params:
        keys = pnr.split(key, max(len(self.layers), 1))
        children = {str(i): layer.init(keys[i]) for i, layer in enumerate(self.layers)}
        return Params({name: p for name, p in children.items() if len(p)})

    def init_state(self) -> Params:
        children = {str(i): layer.init_state() for i, layer in enumerate(self.layers)}
        return Params({name: s for name, s in children.items() if len(s)})

    @property
    def has_state(self) -> bool:
        return any(layer.has_state for layer in self.layers)

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        expected = {str(i) for i in range(len(self.layers))}
        for tree, what in ((params, "params"), (state, "state")):
            unexpected = [join(path, k) for k in tree if k not in expected]
            if unexpected:
                raise TreeMismatchError(
                    f"{what} for the {layer_name('sequential', path)} of {len(self.layers)} layers has "
                    f"unexpected entries {unexpected}. Were these {what} made by another model?"
                )
        keys = pnr.split(key, len(self.layers)) if key is not None and self.layers else None
        new_state = {}
        for i, layer in enumerate(self.layers):
            name = str(i)
            if layer.has_state and name not in state:
                raise StateError(
                    f"state has no entry '{join(path, name)}' for the stateful layer there"
                )
            x, child_state = layer._forward(
                params[name] if name in params else EMPTY,
                x,
                state=state[name] if name in state else EMPTY,
                key=None if keys is None else keys[i],
                train=train,
                path=join(path, name),
            )
            if len(child_state):
                new_state[name] = child_state
        return x, Params(new_state) if new_state else state


def sequential(*layers: Model | Callable[[torch.Tensor], torch.Tensor]) -> Sequential:
    """Chain layers; plain functions (`pn.nn.relu`) become parameter-free layers.

    Params are keyed by position like torch.nn.Sequential: `"0.weight"`, `"2.bias"`.

    Example:
        >>> model = pn.nn.sequential(pn.nn.linear(784, 256), pn.nn.relu, pn.nn.linear(256, 10))
        >>> params = model.init(pn.random.key(0))
        >>> pn.tree.paths(params)
        ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    return Sequential(layers)


def mlp(
    in_features: int,
    hidden_features: Sequence[int],
    out_features: int,
    *,
    activation: Callable[[torch.Tensor], torch.Tensor] = relu,
    dropout: float = 0.0,
    bias: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Sequential:
    """A multilayer perceptron: linear layers with `activation` (and optional dropout) between them.

    Layers: `linear(in, h0), activation, [dropout], linear(h0, h1), ..., linear(h_last, out)`.

    Example:
        >>> model = pn.nn.mlp(64, [128, 128], 10)
        >>> pn.tree.paths(model.init(pn.random.key(0)))[:2]
        ['0.weight', '0.bias']
    """
    if isinstance(hidden_features, int):
        raise TypeError(
            f"mlp: hidden_features must be a sequence of widths, e.g. [{hidden_features}], got an int"
        )
    drop = make_dropout(dropout)  # validates the probability even when it is 0
    widths = [in_features, *hidden_features, out_features]
    layers: list[Any] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(linear(fan_in, fan_out, bias=bias, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(activation)
            if drop.p > 0.0:
                layers.append(drop)
    return Sequential(layers)
