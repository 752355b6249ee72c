"""`pn.optim.inject_hyperparams`: schedule any numeric hyperparameter of a rule, through its state."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import torch

from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_rule, check_state

__all__ = ["InjectHyperparamsState", "inject_hyperparams"]

# Sequence arguments whose elements a rule's state keeps under their own names.
_SPLIT = {"betas": ("beta1", "beta2")}
# A schedule that starts at 0 is built as this, so that a rule that decides at construction
# whether a term exists (weight decay, momentum) keeps it; the state then holds the real value.
_SWITCHED_ON = 1e-30
# Numbers that switch a term off when 0, so that a 0 is built as _SWITCHED_ON too and stays
# settable. A term at 0 computes what its absence does (g + 0 * p is g; SGD's buffer with
# momentum 0 is g; RMSprop's differs by a rounding), except SGD's dampening, which torch
# ignores without momentum: a momentum of 0 with dampening is built as it is.
_OFF_WHEN_ZERO = ("weight_decay", "momentum")


@node
class InjectHyperparamsState:
    """State of a rule made by `inject_hyperparams`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (the value of each
    injected hyperparameter for the last update, or the first before any, as float64
    0-d tensors; `betas` appear as `beta1` and `beta2`); `inner` (the rule's state
    without the injected hyperparameters, which `hyperparams` alone holds and which
    are put back into the rule's `hyperparams` for each update).

    One copy of each value, not two sharing a tensor: a donated state (`pn.jit`)
    must not hold the same buffer twice.
    """

    count: torch.Tensor
    hyperparams: Params
    inner: Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value(value: Any, count: torch.Tensor) -> torch.Tensor:
    out = value(count) if callable(value) else value
    if isinstance(out, torch.Tensor):
        return out.to(torch.float64)
    return torch.tensor(float(out), dtype=torch.float64)


def inject_hyperparams(
    factory: Callable[..., GradientTransformation], static_args: Iterable[str] = ()
) -> Callable[..., GradientTransformation]:
    """Make every numeric hyperparameter of `factory`'s rule a schedule or a settable state value.

    As `optax.inject_hyperparams`: `inject_hyperparams(pn.optim.adamw)(lr=sched,
    weight_decay=wd_sched)` is an AdamW whose `lr` and `weight_decay` follow their
    schedules (`count -> value`, count from 0), read from the state at each update so
    that a compiled step never recompiles. Every callable argument not named in
    `static_args` is taken as a schedule, and every number as a hyperparameter that
    `pn.tree.set(state, "hyperparams.<name>", ...)` can change; `betas` splits into
    `beta1` and `beta2`. This works for rules that keep their hyperparameters in
    `state.hyperparams` (every `pn.optim` rule and combinator); numbers that a rule
    does not keep there stay fixed. A schedule whose value at count 0 is 0, and a
    `weight_decay` or `momentum` of 0, is built as a tiny positive value, so that the
    rule keeps the term and a later value takes effect (a term at 0 computes what its
    absence would, to rounding).

    Args:
        factory: a function returning a GradientTransformation (e.g. `pn.optim.adamw`).
        static_args: argument names never to inject (e.g. a `mask` function).

    Returns:
        A function with `factory`'s arguments that returns the injected rule.

    Example:
        >>> opt = pn.optim.inject_hyperparams(pn.optim.sgd)(
        ...     lr=pn.schedules.cosine_decay(0.1, 1000), momentum=0.9)
        >>> state = opt.init(params)
        >>> float(state.hyperparams["lr"]), float(state.hyperparams["momentum"])
        (0.1, 0.9)
    """
    if not callable(factory):
        raise TypeError(
            f"inject_hyperparams: factory must be callable, got {type(factory).__name__}"
        )
    static = frozenset(static_args)
    signature = inspect.signature(factory)

    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"inject_hyperparams({factory.__name__}): {error}") from None
        bound.apply_defaults()
        injected: dict[str, Any] = {}  # state key -> number or schedule
        construct: dict[str, Any] = dict(bound.arguments)
        switched: list[str] = []  # numbers at 0 that the rule is built with as _SWITCHED_ON
        zero = torch.zeros((), dtype=torch.int64)
        for name, value in bound.arguments.items():
            if name in static:
                continue
            parts = _SPLIT.get(name)
            values = list(value) if parts and isinstance(value, (tuple, list)) else None
            if parts and values is not None and len(values) == len(parts):
                if all(_is_number(v) or callable(v) for v in values):
                    injected.update(zip(parts, values, strict=True))
                    construct[name] = type(value)(_start(v, zero) for v in values)
            elif _is_number(value) or callable(value):
                injected[name] = value
                construct[name] = _start(value, zero)
                if value == 0 and name in _OFF_WHEN_ZERO:
                    switched.append(name)
        if "momentum" in switched and construct.get("dampening", 0) != 0:
            switched.remove("momentum")
        if switched:
            # The factory's own checks see the real zeros (nesterov needs a momentum).
            factory(**construct)
            construct.update(dict.fromkeys(switched, _SWITCHED_ON))
        rule = factory(**construct)
        check_rule(
            f"inject_hyperparams({getattr(factory, '__name__', factory)})", rule, "its result"
        )
        scheduled = {k for k, v in injected.items() if callable(v)}

        def init(params: Any) -> InjectHyperparamsState:
            inner = rule.init(params)
            kept = getattr(inner, "hyperparams", None)
            kept = kept if isinstance(kept, Params) else Params({})
            for key in sorted(scheduled):
                if key not in kept:
                    raise TypeError(
                        f"inject_hyperparams: {key!r} has a schedule, but the rule's state keeps no "
                        f"hyperparams[{key!r}] (it keeps {list(kept)}); pass a number, or list it in "
                        "static_args if it is not a schedule"
                    )
            values = {k: _value(v, zero) for k, v in injected.items() if k in kept}
            if values:
                inner = attrs.evolve(inner, hyperparams=_without(kept, values))
            return InjectHyperparamsState(count=zero, hyperparams=Params(values), inner=inner)

        def update(
            grads: Any, state: InjectHyperparamsState, params: Any = None
        ) -> tuple[Any, InjectHyperparamsState]:
            check_state("inject_hyperparams", state, InjectHyperparamsState)
            values = {
                key: _value(injected[key], state.count) if key in scheduled else stored
                for key, stored in state.hyperparams.items()
            }
            inner = state.inner
            if values:
                inner = attrs.evolve(inner, hyperparams=Params({**inner.hyperparams, **values}))
            updates, inner = rule.update(grads, inner, params)
            if values:
                inner = attrs.evolve(inner, hyperparams=_without(inner.hyperparams, values))
            return updates, attrs.evolve(
                state, count=state.count + 1, hyperparams=Params(values), inner=inner
            )

        return GradientTransformation(init, update)

    build.__name__ = f"inject_hyperparams({getattr(factory, '__name__', 'factory')})"
    build.__doc__ = factory.__doc__
    return build


def _without(hyperparams: Params, injected: Iterable[str]) -> Params:
    """The rule's `hyperparams` less the injected ones (kept in the injecting state instead)."""
    return Params({k: v for k, v in hyperparams.items() if k not in injected})


def _start(value: Any, zero: torch.Tensor) -> Any:
    """The value the rule is built with: the number, or the schedule's first value (0 made tiny)."""
    if not callable(value):
        return value
    first = float(_value(value, zero))
    return _SWITCHED_ON if first == 0.0 else first
