"""Write your own update rule and property-test it with purenn.testing in a dozen lines.

The rule is signum (sign-SGD with momentum, Bernstein et al. 2018): keep a momentum
buffer `m <- beta * m + (1 - beta) * g` and step by `-lr * sign(m)`. The tests below
check it is pure, deterministic and well-shaped on random trees (every float dtype,
scalars, empty tensors, NaN gradients), that lr=0 leaves params alone, that it ignores
the gradient's scale, and that a step never moves an element by more than lr.

    python -m pytest examples/property_test_custom_rule.py
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import purenn as pn
from purenn import testing as pt
from purenn.testing import strategies as S


def signum(lr: float = 1e-3, beta: float = 0.9) -> pn.optim.GradientTransformation:
    """Sign-SGD with momentum: `m <- beta m + (1 - beta) g`, update `-lr sign(m)`."""

    def init(params):
        return pn.tree.zeros_like(params)  # the state is a params-shaped momentum buffer

    def update(grads, momentum, params=None):
        momentum = pn.tree.map(lambda m, g: beta * m + (1 - beta) * g, momentum, grads)
        return pn.tree.map(lambda m: -lr * torch.sign(m), momentum), momentum

    return pn.optim.GradientTransformation(init, update)


# The property tests: a dozen lines. Scale invariance needs momenta far from underflow: gradients
# of normal size, and beta 0 or not tiny (in float32, 1e-40 * 1.5 rounds to a subnormal but
# 1e-40 * 0.4 to 0, so scaling the gradients would flip sign(m) from 1 to 0).
problems = S.problems(steps=3, packed=None, grad_magnitudes=("normal", "sparse", "zero"))
hyper = {"lr": st.floats(1e-5, 1.0), "beta": st.just(0.0) | st.floats(1e-3, 0.99)}


@settings(max_examples=30, deadline=None, database=None)
@given(problem=S.problems(steps=3, dtypes=S.FLOAT_DTYPES, nonfinite=True), **hyper)
def test_pure_deterministic_and_shaped(problem, lr, beta):
    pt.check_update_rule(signum(lr, beta), problem.params, problem.grad_fn, steps=3)


@settings(max_examples=30, deadline=None, database=None)
@given(problem=problems, **hyper)
def test_zero_lr_scale_invariance_and_bounded_steps(problem, lr, beta):
    pt.check_zero_lr_identity(signum, problem.params, problem.grad_fn, beta=beta)
    # Powers of two scale exactly, so momenta that cancel to 0 do so at every scale (sign is
    # discontinuous there; a 0.01 scaling rounds differently and can miss the cancellation).
    pt.check_scale_invariance(signum(lr, beta), problem.params, problem.grad_fn, scales=(0.25, 8.0))
    pt.check_first_step_bounded(signum(lr, beta), problem.params, problem.grads[0], lr=lr)


def test_chain_and_donation():
    params = pn.Params({"w": torch.randn(3, 2), "b": torch.zeros(2)})
    grads = pn.tree.map(torch.cos, params)
    pt.check_chain_identity(signum(0.1), params, grads)
    opt = signum(0.1)
    pt.check_donation_equivalence(
        lambda p, s, g: pn.step(opt, p, g, s),
        (params, opt.init(params), grads),
        (0, 1),
        compile=False,
    )
