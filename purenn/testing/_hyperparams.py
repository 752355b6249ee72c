"""Hypothesis strategies for valid hyperparameters of each built-in rule, and params its torch twin takes."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import attrs
import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .. import optim
from .._params import Params
from ._tree_strategies import params

__all__ = ["hyperparams", "params_for", "supported_rules"]

Factory = Callable[..., optim.GradientTransformation]


def _floats(low: float, high: float) -> SearchStrategy[float]:
    # No subnormal hyperparameters: a beta of 1e-311 is no one's setting, and two correct
    # implementations may differ there only by where an intermediate underflows (a norm
    # computed with or without rescaling), which is not a property of the rule.
    return st.floats(low, high, allow_subnormal=False)


def _log_uniform(low: float, high: float) -> SearchStrategy[float]:
    return _floats(math.log10(low), math.log10(high)).map(lambda e: 10.0**e)


def _maybe_zero(strategy: SearchStrategy[float]) -> SearchStrategy[float]:
    # Zero and non-zero take different branches (momentum, decay), so draw zero often.
    return st.one_of(st.just(0.0), strategy)


@st.composite
def _betas(draw: Any, low: float) -> tuple[float, float]:
    # beta1^2 <= beta2 keeps Adam-type steps bounded; beyond it a step can be m / |g| with
    # |g| near 0, and trajectories become chaotic (rounding differences grow without bound).
    # Non-zero betas are at least `low` (the dtype's epsilon): below it `beta * m` is lost
    # against `(1 - beta) * g`, and in half precision such products fall among subnormals,
    # where two correct implementations round differently.
    beta2 = draw(st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999]), _floats(low, 0.999)))
    limit = min(0.999, math.sqrt(beta2))
    if limit < low:
        return 0.0, beta2
    beta1 = draw(st.one_of(st.sampled_from([0.0, limit]), _floats(low, limit)))
    return beta1, beta2


_DECAY = _maybe_zero(_floats(0.0, 0.1))


class _Pick:
    """Draws a hyperparameter: the caller's override (a value or a strategy) or the default strategy."""

    def __init__(self, draw: Any, overrides: dict[str, Any], dtype: torch.dtype) -> None:
        self.draw, self.overrides, self.dtype = draw, overrides, dtype

    def __call__(self, name: str, default: SearchStrategy[Any]) -> Any:
        value = self.overrides.get(name, default)
        return self.draw(value) if isinstance(value, SearchStrategy) else value

    def betas(self) -> SearchStrategy[tuple[float, float]]:
        """Adam-type `(beta1, beta2)` for the params' dtype (see `_betas`)."""
        return _betas(torch.finfo(self.dtype).eps)

    def eps(self, low: float = 1e-10, high: float = 1e-3) -> SearchStrategy[float]:
        """An epsilon that is a normal number in the params' dtype (1e-8 is 0 in float16)."""
        return _log_uniform(max(low, torch.finfo(self.dtype).tiny), high)


def _sgd(pick: _Pick) -> dict[str, Any]:
    # torch.optim.SGD: nesterov needs momentum > 0 and dampening == 0.
    any_momentum = _maybe_zero(_floats(0.0, 0.99))
    any_dampening = _maybe_zero(_floats(0.0, 0.9))
    if "momentum" in pick.overrides or "dampening" in pick.overrides:
        momentum, dampening = pick("momentum", any_momentum), pick("dampening", any_dampening)
        possible = momentum > 0 and dampening == 0
        nesterov = pick("nesterov", st.booleans() if possible else st.just(False))
    else:
        nesterov = pick("nesterov", st.booleans())
        momentum = pick("momentum", _floats(0.01, 0.99) if nesterov else any_momentum)
        dampening = pick("dampening", st.just(0.0) if nesterov else any_dampening)
    return {
        "lr": pick("lr", _log_uniform(1e-4, 0.1)),
        "momentum": momentum,
        "dampening": dampening,
        "weight_decay": pick("weight_decay", _DECAY),
        "nesterov": nesterov,
        "maximize": pick("maximize", st.booleans()),
    }


def _adam_like(pick: _Pick, lr_high: float = 0.1) -> dict[str, Any]:
    return {
        "lr": pick("lr", _log_uniform(1e-4, lr_high)),
        "betas": pick("betas", pick.betas()),
        "eps": pick("eps", pick.eps()),
        "weight_decay": pick("weight_decay", _DECAY),
        "maximize": pick("maximize", st.booleans()),
    }


def _adam(pick: _Pick) -> dict[str, Any]:
    return {
        **_adam_like(pick),
        "amsgrad": pick("amsgrad", st.booleans()),
        "decoupled_weight_decay": pick("decoupled_weight_decay", st.booleans()),
    }


def _adamw(pick: _Pick) -> dict[str, Any]:
    return {**_adam_like(pick), "amsgrad": pick("amsgrad", st.booleans())}


def _rmsprop(pick: _Pick) -> dict[str, Any]:
    centered = pick("centered", st.booleans())
    # Centered, the variance estimate is alpha (1 - alpha) g^2 after one step: for small alpha
    # it is all cancellation, and the update all rounding noise (divided by eps).
    alpha = pick("alpha", _floats(0.5, 0.999) if centered else _floats(0.0, 0.999))
    return {
        # The first step moves by about lr / sqrt(1 - alpha): keep it moderate.
        "lr": pick("lr", _log_uniform(1e-4, 0.01)),
        "alpha": alpha,
        "eps": pick("eps", pick.eps()),
        "weight_decay": pick("weight_decay", _DECAY),
        "momentum": pick("momentum", _maybe_zero(_floats(0.0, 0.99))),
        "centered": centered,
        "maximize": pick("maximize", st.booleans()),
    }


def _adagrad(pick: _Pick) -> dict[str, Any]:
    return {
        "lr": pick("lr", _log_uniform(1e-4, 0.1)),
        "lr_decay": pick("lr_decay", _maybe_zero(_floats(0.0, 0.1))),
        "weight_decay": pick("weight_decay", _DECAY),
        "initial_accumulator_value": pick(
            "initial_accumulator_value", _maybe_zero(_floats(0.0, 1.0))
        ),
        "eps": pick("eps", pick.eps()),
        "maximize": pick("maximize", st.booleans()),
    }


def _adadelta(pick: _Pick) -> dict[str, Any]:
    return {
        "lr": pick("lr", _log_uniform(0.01, 1.0)),
        "rho": pick("rho", _floats(0.0, 0.99)),
        "eps": pick("eps", pick.eps(low=1e-8)),
        "weight_decay": pick("weight_decay", _DECAY),
        "maximize": pick("maximize", st.booleans()),
    }


def _nadam(pick: _Pick) -> dict[str, Any]:
    return {
        **_adam_like(pick),
        "momentum_decay": pick("momentum_decay", _maybe_zero(_floats(0.0, 0.01))),
        "decoupled_weight_decay": pick("decoupled_weight_decay", st.booleans()),
    }


def _radam(pick: _Pick) -> dict[str, Any]:
    return {
        **_adam_like(pick),
        "decoupled_weight_decay": pick("decoupled_weight_decay", st.booleans()),
    }


def _lion(pick: _Pick) -> dict[str, Any]:
    return {
        "lr": pick("lr", _log_uniform(1e-5, 1e-2)),
        "betas": pick("betas", pick.betas()),
        "weight_decay": pick("weight_decay", _DECAY),
        "maximize": pick("maximize", st.booleans()),
    }


def _adafactor(pick: _Pick) -> dict[str, Any]:
    # eps1 (None: the dtype's machine epsilon) is used squared: keep eps1^2 a normal number.
    low = math.sqrt(torch.finfo(pick.dtype).tiny)
    eps1 = st.none() if low > 1e-6 else st.one_of(st.none(), _log_uniform(max(1e-12, low), 1e-6))
    return {
        "lr": pick("lr", _log_uniform(1e-4, 0.1)),
        "beta2_decay": pick("beta2_decay", _floats(-1.0, -0.1)),
        "eps": pick("eps", st.tuples(eps1, pick.eps())),
        "d": pick("d", _floats(1.0, 5.0)),
        "weight_decay": pick("weight_decay", _DECAY),
        "maximize": pick("maximize", st.booleans()),
    }


def _first_argument(
    factory: Factory, strategy: SearchStrategy[Any]
) -> Callable[[_Pick], dict[str, Any]]:
    """Draws for a combinator's one number (`clip`'s bound...), under whatever name it has."""
    name = next(iter(inspect.signature(factory).parameters))
    return lambda pick: {name: pick(name, strategy)}


@attrs.frozen
class _Spec:
    name: str
    draw_kwargs: Callable[[_Pick], dict[str, Any]]
    # torch.optim.Adafactor divides by a size and fails on empty tensors.
    twin_takes_empty: bool = True


_SPECS: dict[Any, _Spec] = {
    optim.sgd: _Spec("sgd", _sgd),
    optim.adam: _Spec("adam", _adam),
    optim.adamw: _Spec("adamw", _adamw),
    optim.rmsprop: _Spec("rmsprop", _rmsprop),
    optim.adagrad: _Spec("adagrad", _adagrad),
    optim.adadelta: _Spec("adadelta", _adadelta),
    optim.adamax: _Spec("adamax", lambda pick: _adam_like(pick)),
    optim.nadam: _Spec("nadam", _nadam),
    optim.radam: _Spec("radam", _radam),
    optim.lion: _Spec("lion", _lion),
    optim.lamb: _Spec("lamb", lambda pick: _adam_like(pick)),
    optim.adafactor: _Spec("adafactor", _adafactor, twin_takes_empty=False),
    optim.clip: _Spec("clip", _first_argument(optim.clip, _floats(0.0, 10.0))),
    optim.clip_by_global_norm: _Spec(
        "clip_by_global_norm", _first_argument(optim.clip_by_global_norm, _floats(0.0, 10.0))
    ),
    optim.add_decayed_weights: _Spec(
        "add_decayed_weights", _first_argument(optim.add_decayed_weights, _floats(0.0, 1.0))
    ),
    optim.ema: _Spec(
        "ema",
        lambda pick: {
            "decay": pick("decay", _floats(0.0, 0.999)),
            "debias": pick("debias", st.booleans()),
        },
    ),
}


def supported_rules() -> tuple[Factory, ...]:
    """The rule factories `hyperparams` knows, in `pn.optim` order."""
    return tuple(_SPECS)


def _spec(rule_factory: Factory | str, owner: str) -> _Spec:
    for factory, spec in _SPECS.items():
        if rule_factory is factory or rule_factory == spec.name:
            return spec
    names = ", ".join(spec.name for spec in _SPECS.values())
    got = getattr(rule_factory, "__qualname__", repr(rule_factory))
    raise ValueError(
        f"{owner}: no hyperparameter strategy for {got}; supported: {names}. "
        "For your own rule, build one with hypothesis (st.fixed_dictionaries)."
    )


def hyperparams(
    rule_factory: Factory | str, *, dtype: torch.dtype = torch.float32, **overrides: Any
) -> SearchStrategy[dict[str, Any]]:
    """Keyword arguments that `rule_factory` accepts (and its torch.optim twin validates alike).

    Draws every argument of the built-in rule: learning rates on a log scale in a range
    where short trajectories stay numerically tame, betas 0 or in `[epsilon of dtype,
    0.999]` with `beta1^2 <= beta2` (where Adam-type steps stay bounded), no
    subnormal values, eps in `[1e-10, 1e-3]` but a normal number in `dtype`, weight decays often exactly 0, flags either way,
    and only consistent combinations (nesterov with momentum > 0 and no dampening).

    Args:
        rule_factory: e.g. `pn.optim.adam` (or its name, `"adam"`).
        dtype: the least precise dtype of the params the rule will see: an eps that
            rounds to 0 there (1e-8 in float16) makes `0 / (0 + eps)` NaN, and a beta
            below its epsilon is lost in rounding.
        **overrides: fixed values or strategies for some arguments (`eps=0.0`,
            `lr=strategies.schedules()`); they replace the drawn ones.

    Raises:
        ValueError: `rule_factory` is not a built-in rule (the message lists those that
            are), or an override names an argument the factory does not take.

    Example:
        >>> @given(kwargs=strategies.hyperparams(pn.optim.adamw, maximize=False))
        ... def test_adamw(kwargs):
        ...     opt = pn.optim.adamw(**kwargs)
    """
    spec = _spec(rule_factory, "hyperparams")
    factory = next(f for f, s in _SPECS.items() if s is spec)
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"hyperparams: {spec.name} takes no argument(s) {unknown}; it takes {list(accepted)}"
        )

    @st.composite
    def kwargs(draw: Any) -> dict[str, Any]:
        pick = _Pick(draw, overrides, dtype)
        drawn = spec.draw_kwargs(pick)
        return {
            **drawn,
            **{name: pick(name, st.nothing()) for name in overrides if name not in drawn},
        }

    return kwargs()


def params_for(rule_factory: Factory | str, **options: Any) -> SearchStrategy[Params]:
    """`strategies.params(**options)` restricted to trees the rule's torch.optim twin also accepts.

    Every built-in rule's twin takes float16, bfloat16, float32 and float64 on CPU (for
    loop, foreach and, where offered, fused); `torch.optim.Adafactor` fails on empty
    tensors, so for `adafactor` no leaf has a dimension of size 0.

    Example:
        >>> @given(params=strategies.params_for(pn.optim.adafactor))
        ... def test_adafactor_vs_torch(params): ...
    """
    spec = _spec(rule_factory, "params_for")
    if not spec.twin_takes_empty:
        options["empty"] = False
    return params(**options)
