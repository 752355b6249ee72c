"""Checks of property 6: `chain` of one rule is the rule, and chains associate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._step import apply_updates
from ..optim import GradientTransformation, chain
from ._compare import describe_difference
from ._problem import Grads, grads_at

__all__ = ["check_chain_associativity", "check_chain_identity"]

Chain = Callable[..., GradientTransformation]


def _same_runs(
    rules: dict[str, GradientTransformation], params: Any, grads: Grads, steps: int, check: str
) -> None:
    """Run every rule `steps` steps from `params`; all updates must be bitwise those of the first."""
    names = list(rules)
    states = {name: rule.init(params) for name, rule in rules.items()}
    current = params
    for step in range(steps):
        g = grads_at(grads, current, step)
        reference, states[names[0]] = rules[names[0]].update(g, states[names[0]], current)
        for name in names[1:]:
            updates, states[name] = rules[name].update(g, states[name], current)
            found = describe_difference(updates, reference, bitwise=True, names=(names[0], name))
            if found is not None:
                raise AssertionError(f"{check}: step {step + 1}: update {found}")
        current = apply_updates(current, reference)


def check_chain_identity(
    rule: GradientTransformation,
    params: Any,
    grads: Grads,
    *,
    steps: int = 3,
    chain: Chain = chain,
) -> None:
    """Property 6: `chain(rule)` gives bitwise the updates of `rule`, step after step.

    Args:
        chain: the chain under test (default `pn.optim.chain`).

    Raises:
        AssertionError: naming the step, the update path and element, and both values.

    Example:
        >>> pn.testing.check_chain_identity(pn.optim.adam(1e-3), params, grads)
    """
    _same_runs(
        {"rule": rule, "chain(rule)": chain(rule)}, params, grads, steps, "check_chain_identity"
    )


def check_chain_associativity(
    a: GradientTransformation,
    b: GradientTransformation,
    c: GradientTransformation,
    params: Any,
    grads: Grads,
    *,
    steps: int = 3,
    chain: Chain = chain,
) -> None:
    """Property 6: `chain(a, chain(b, c))`, `chain(chain(a, b), c)` and `chain(a, b, c)` agree bitwise.

    Raises:
        AssertionError: naming the step, the two chains, the update path and element.

    Example:
        >>> opt_a, opt_b = pn.optim.clip_by_global_norm(1.0), pn.optim.add_decayed_weights(0.1)
        >>> pn.testing.check_chain_associativity(opt_a, opt_b, pn.optim.sgd(0.1), params, grads)
    """
    rules = {
        "chain(a, b, c)": chain(a, b, c),
        "chain(a, chain(b, c))": chain(a, chain(b, c)),
        "chain(chain(a, b), c)": chain(chain(a, b), c),
    }
    _same_runs(rules, params, grads, steps, "check_chain_associativity")
