"""purenn.testing itself: each check catches a planted bug (and passes the bug-free rule),
the strategies generate what they claim, the pytest plugin works, and the example runs."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from test_optim import RULES, LambReference

import purenn as pn
from purenn import testing as pt
from purenn.optim import GradientTransformation
from purenn.testing import _reference as reference
from purenn.testing import strategies as S

ROOT = Path(__file__).resolve().parent.parent


def params64(seed: int = 0) -> pn.Params:
    g = torch.Generator().manual_seed(seed)
    return pn.Params(
        {
            "0": {"weight": torch.randn(3, 2, generator=g, dtype=torch.float64)},
            "1": {"bias": torch.randn(4, generator=g, dtype=torch.float64)},
            "scale": torch.randn((), generator=g, dtype=torch.float64),
        }
    )


def grads_of(params: Any, step: int = 0) -> Any:
    return pn.tree.map(lambda p: torch.cos(2.0 * p) + 0.1 * step, params)


# ---------------------------------------------------------------------------------------------
# Small rules written the way a user would, each with a switch that plants one bug.


@pn.tree.node
class TinyAdamState:
    count: torch.Tensor
    m: Any
    v: Any


def tiny_adam(
    lr: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    decoupled: bool = False,
    bias_correction_error: float = 0.0,
    forget_weight_decay: bool = False,
    freeze_count: bool = False,
    abs_second_moment: bool = False,
    decay_without_lr: bool = False,
) -> GradientTransformation:
    """Adam/AdamW in a dozen lines; each keyword after `*` but `decoupled` plants a bug."""
    b1, b2 = betas
    decay = 0.0 if forget_weight_decay else weight_decay

    def init(params):
        zeros = pn.tree.zeros_like(params)
        return TinyAdamState(torch.zeros((), dtype=torch.int64), zeros, zeros)

    def update(grads, state, params=None):
        count = state.count if freeze_count else state.count + 1
        t = int(state.count) + 1
        if decay and not decoupled:
            grads = pn.tree.map(lambda g, p: g + decay * p, grads, params)
        m = pn.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.m, grads)
        square = (lambda g: g.abs()) if abs_second_moment else (lambda g: g * g)
        v = pn.tree.map(lambda v, g: b2 * v + (1 - b2) * square(g), state.v, grads)
        step_size = lr / ((1 - b1**t) * (1 + bias_correction_error))
        bc2_sqrt = math.sqrt(1 - b2**t)
        updates = pn.tree.map(lambda m, v: -step_size * m / (v.sqrt() / bc2_sqrt + eps), m, v)
        if decay and decoupled:
            rate = decay if decay_without_lr else lr * decay
            updates = pn.tree.map(lambda u, p: u - rate * p, updates, params)
        return updates, TinyAdamState(count, m, v)

    return GradientTransformation(init, update)


def momentum(
    lr: float = 0.1, beta: float = 0.9, *, bug: str | None = None
) -> GradientTransformation:
    """Heavy-ball momentum with its buffer in a Params; `bug` plants an impurity."""

    def init(params):
        return pn.tree.zeros_like(params)

    def update(grads, buf, params=None):
        if bug == "inplace_state":
            for b, g in zip(pn.tree.leaves(buf), pn.tree.leaves(grads), strict=True):
                b.mul_(beta).add_(g)
            new = buf
        elif bug == "inplace_grads":
            for g in pn.tree.leaves(grads):
                g.clamp_(-1.0, 1.0)
            new = pn.tree.map(lambda b, g: beta * b + g, buf, grads)
        elif bug == "data_write":
            for p in pn.tree.leaves(params):
                p.data.mul_(0.5)
            new = pn.tree.map(lambda b, g: beta * b + g, buf, grads)
        else:
            new = pn.tree.map(lambda b, g: beta * b + g, buf, grads)
        if bug == "global_rng":
            new = pn.tree.map(lambda b: b + 1e-3 * torch.randn_like(b), new)
        updates = pn.tree.map(lambda b: -lr * b, new)
        if bug == "float64_updates":
            updates = pn.tree.map(lambda u: u.double(), updates)
        return updates, new

    return GradientTransformation(init, update)


float32_params = pn.Params({"w": torch.ones(3), "b": torch.zeros(2)})


# ---------------------------------------------------------------------------------------------
# Item 5: planted bugs are caught, and the bug-free twins pass.


def test_bug_free_rules_pass_every_check():
    params = params64()
    pt.check_update_rule(momentum(), params, grads_of)
    pt.check_update_rule(tiny_adam(weight_decay=0.1, decoupled=True), params, grads_of)
    for kw, torch_kw, cls in [
        ({}, {}, torch.optim.Adam),
        ({"weight_decay": 0.1}, {"weight_decay": 0.1}, torch.optim.Adam),
        ({"weight_decay": 0.1, "decoupled": True}, {"weight_decay": 0.1}, torch.optim.AdamW),
    ]:
        pt.check_matches_torch(tiny_adam(**kw), cls, lr=1e-2, **torch_kw)
    pt.check_scale_invariance(tiny_adam(eps=0.0), params, grads_of)
    pt.check_first_step_bounded(tiny_adam(), params, grads_of(params), lr=1e-2)
    pt.check_zero_lr_identity(tiny_adam, params, grads_of, weight_decay=0.1, decoupled=True)


def test_an_in_place_write_into_the_state_is_caught_by_its_version_counter():
    with pytest.raises(
        AssertionError,
        match=r"check_pure: step 1: opt\.update\(grads, state, params\) modified state\.w in place "
        r"\(its version counter went \d+ -> \d+\)",
    ):
        pt.check_pure(momentum(bug="inplace_state"), float32_params, float32_params)


def test_an_in_place_write_into_the_grads_is_caught():
    with pytest.raises(AssertionError, match=r"step 1: .* modified grads\.w in place"):
        pt.check_pure(momentum(bug="inplace_grads"), float32_params, float32_params)


def test_a_write_through_data_is_caught_by_value():
    params = pn.Params({"w": torch.tensor([1.0, 2.0])})
    with pytest.raises(
        AssertionError,
        match=r"changed the values of params\.w without bumping its version counter .*"
        r"at 'params\.w' \[0\]: before 1\.0, after 0\.5",
    ):
        pt.check_pure(momentum(bug="data_write"), params, pn.tree.zeros_like(params))


def test_a_bias_correction_wrong_by_a_tenth_of_a_percent_is_caught_at_step_1():
    with pytest.raises(
        AssertionError,
        match=r"check_matches_torch: the rule and Adam\(foreach=False\) diverge at step 1 of 50: "
        r"param at '0\.weight' \[0, 0\]: torch -?[\d.e-]+, purenn -?[\d.e-]+ \(\|diff\| [\d.e-]+ > ",
    ):
        pt.check_matches_torch(tiny_adam(bias_correction_error=1e-3), torch.optim.Adam, lr=1e-2)


def test_a_divergence_after_an_empty_leaf_is_reported_not_crashed_on():
    # strategies.params draws empty leaves by default; the rounding judge must pass over them.
    params = pn.Params(
        {"e": torch.zeros(0, dtype=torch.float64), "w": torch.randn(3, dtype=torch.float64)}
    )
    with pytest.raises(AssertionError, match=r"diverge at step 1 of 3: param at 'w'"):
        pt.check_matches_torch(
            tiny_adam(bias_correction_error=1e-3), torch.optim.Adam, lr=1e-2, steps=3, params=params
        )


def test_trajectories_share_gradients_so_an_unstable_loop_does_not_amplify_rounding():
    # LAMB with small betas takes sign-like steps that oscillate around the optimum of the default
    # gradient; when each side took the gradient at its own params, a one-ulp difference at step 3
    # (the trust ratio's norms round differently) grew to 4e-6 by step 7, 3x the float32 tolerance.
    start = [float.fromhex(h) for h in ("0x1.8a7eb8p+0", "-0x1.2c78a0p-2", "-0x1.16e292p+1")]
    params = pn.Params({"w": torch.tensor(start, dtype=torch.float32)})
    kwargs = {"lr": 0.1, "betas": (0.125**0.5, 0.125), "eps": 1e-4}
    pt.check_matches_torch(
        pn.optim.lamb(**kwargs), LambReference, params=params, steps=10, variants=({},), **kwargs
    )


def check_sign_like_adam_from_zero(dtype, gradients, eps, variants=None):
    """check_matches_torch for Adam with betas 0 (steps of about lr * sign(g)) and coupled weight
    decay, from a 0-d param at 0, fed `gradients` in turn."""
    grads = [pn.Params({"w": torch.tensor(g, dtype=dtype)}) for g in gradients]
    kwargs = {"lr": 0.1, "betas": (0.0, 0.0), "eps": eps, "weight_decay": 0.0625}
    pt.check_matches_torch(
        pn.optim.adam(**kwargs),
        torch.optim.Adam,
        params=pn.Params({"w": torch.zeros((), dtype=dtype)}),
        steps=len(gradients),
        grad_fn=lambda p, t: grads[t],
        variants=variants,
        **kwargs,
    )


def test_an_ill_conditioned_problem_is_judged_by_its_sensitivity_to_rounding(monkeypatch):
    # Adam with betas 0 steps by lr * sign(g): the param goes 0 -> -0.1 -> ~1e-11 (cancellation),
    # then a zero gradient leaves g = weight_decay * p, 1e-2 of eps, so lr * wd / eps = 6e6 times
    # the param's rounding error lands in the step. torch and purenn differ there by 8.7e-11,
    # 870x float64's tolerance; one rounding difference per step moves torch by twice that.
    values = (1.5409960746765137, -1.77817, 0.0, 1.5409960746765137, 0.0)
    check_sign_like_adam_from_zero(torch.float64, values, eps=1e-9)
    monkeypatch.setattr(reference, "ROUNDING_SLACK", 0.0)
    with pytest.raises(AssertionError, match=r"diverge at step 3 of 5: .* so it is not rounding"):
        check_sign_like_adam_from_zero(torch.float64, values, eps=1e-9)


def test_a_rounding_difference_in_an_increment_counts_where_the_sum_cancels(monkeypatch):
    # bfloat16 Adam with betas 0: the param steps 0 -> -0.1 -> ~0 -> -0.1 -> ~0, where purenn's
    # sum cancels to exactly 0 and torch's leaves 1e-4, and a zero gradient then steps by
    # lr * sign(weight_decay * p): 0 against 0.038. The error of a cancelling sum is that of
    # its increment (0.1 * eps), not of its result, and the perturbed run models it so.
    values = (1.53906, -1.60156, 1.53906, 0.0, 0.0)
    loop_only = ({"foreach": False},)
    check_sign_like_adam_from_zero(torch.bfloat16, values, eps=1e-5, variants=loop_only)
    monkeypatch.setattr(reference, "ROUNDING_SLACK", 0.0)
    with pytest.raises(AssertionError, match=r"diverge at step 5 of 5: .* so it is not rounding"):
        check_sign_like_adam_from_zero(torch.bfloat16, values, eps=1e-5, variants=loop_only)


def test_in_float32_a_small_bug_is_not_taken_for_rounding():
    with pytest.raises(
        AssertionError,
        match=r"Adam\(foreach=False\) diverge at step 1 of 50: .* moves the torch run at '[\w.]+' "
        r"by at most [\d.e-]+, purenn differs by [\d.e-]+, more than 4x that",
    ):
        pt.check_matches_torch(
            tiny_adam(bias_correction_error=1e-2), torch.optim.Adam, lr=1e-2, dtype=torch.float32
        )


def test_a_forgotten_weight_decay_is_caught():
    opt = tiny_adam(weight_decay=0.1, decoupled=True, forget_weight_decay=True)
    with pytest.raises(AssertionError, match=r"AdamW\(foreach=False\) diverge at step 1 of 50"):
        pt.check_matches_torch(opt, torch.optim.AdamW, lr=1e-2, weight_decay=0.1)


def test_a_state_count_that_does_not_advance_is_caught_at_step_2():
    with pytest.raises(AssertionError, match=r"Adam\(foreach=False\) diverge at step 2 of 50"):
        pt.check_matches_torch(tiny_adam(freeze_count=True), torch.optim.Adam, lr=1e-2)


def test_randomness_from_the_global_rng_is_caught_twice():
    rule = momentum(bug="global_rng")
    with pytest.raises(
        AssertionError,
        match=r"check_deterministic: step 1: two calls of opt\.update on the same inputs give "
        r"different updates, at 'w' \[0\]: first call -?[\d.e-]+, second call",
    ):
        pt.check_deterministic(rule, float32_params, float32_params)
    with pytest.raises(AssertionError, match=r"step 1: .* advanced the global random number"):
        pt.check_pure(rule, float32_params, float32_params)


def test_wrong_dtypes_of_updates_or_state_are_caught():
    with pytest.raises(
        AssertionError,
        match=r"check_structure: step 1: updates 'w' has dtype torch\.float64, but params has "
        r"torch\.float32",
    ):
        pt.check_structure(momentum(bug="float64_updates"), float32_params, float32_params)

    drifting = tiny_adam()
    floating_count = GradientTransformation(
        drifting.init,
        lambda g, s, p=None: (lambda u, s: (u, attrs.evolve(s, count=s.count.float())))(
            *drifting.update(g, s, p)
        ),
    )
    with pytest.raises(
        AssertionError,
        match=r"step 1: the new state 'count' has dtype torch\.float32, but the old state has "
        r"torch\.int64",
    ):
        pt.check_structure(floating_count, params64(), grads_of)


def test_a_second_moment_of_abs_g_breaks_scale_invariance_and_is_caught():
    with pytest.raises(
        AssertionError,
        match=r"check_scale_invariance: gradients scaled by 0\.01, step 1: update at '0\.weight'",
    ):
        pt.check_scale_invariance(tiny_adam(eps=0.0, abs_second_moment=True), params64(), grads_of)


def test_decoupled_decay_not_scaled_by_lr_is_caught_by_the_zero_lr_check():
    with pytest.raises(
        AssertionError,
        match=r"check_zero_lr_identity: step 1: with lr=0 the params moved, param at '0\.weight'",
    ):
        pt.check_zero_lr_identity(
            tiny_adam, params64(), grads_of, weight_decay=0.1, decoupled=True, decay_without_lr=True
        )


def test_an_uncorrected_second_moment_makes_the_first_step_too_long():
    def no_bc2(**kw):
        rule = tiny_adam(**kw)
        # Dividing by sqrt(v) instead of sqrt(v / (1 - beta2^t)) scales the step by 1/sqrt(1 - beta2).
        return pn.optim.chain(rule, scale(1.0 / math.sqrt(1 - 0.999)))

    with pytest.raises(
        AssertionError,
        match=r"check_first_step_bounded: the first update at '0\.weight' \[0, 0\] is "
        r"-?[\d.e-]+, larger in size than 1 \* lr = 0\.01",
    ):
        pt.check_first_step_bounded(no_bc2(), params64(), grads_of(params64()), lr=1e-2)


def scale(c: float) -> GradientTransformation:
    return GradientTransformation(
        lambda params: pn.optim.EmptyState(),
        lambda g, s, p=None: (pn.tree.scale(g, c), s),
    )


def test_sgd_with_a_hidden_weight_decay_is_not_exact():
    params, grads = params64(), grads_of(params64())
    pt.check_sgd_exact(params, grads, 0.1)
    with pytest.raises(AssertionError, match=r"check_sgd_exact: step 1: param at '0\.weight'"):
        pt.check_sgd_exact(params, grads, 0.1, opt=pn.optim.sgd(0.1, weight_decay=1e-4))


def per_leaf_clip(max_norm: float) -> GradientTransformation:
    def clip_leaf(g):
        n = torch.linalg.vector_norm(g)
        return torch.where(n > max_norm, g * (max_norm / n), g)

    return GradientTransformation(
        lambda params: pn.optim.EmptyState(),
        lambda g, s, p=None: (pn.tree.map(clip_leaf, g), s),
    )


def test_clipping_each_leaf_instead_of_the_global_norm_is_caught():
    grads = pn.tree.scale(grads_of(params64()), 10.0)
    pt.check_clip_by_global_norm(1.0, grads)
    with pytest.raises(
        AssertionError,
        match=r"check_clip_by_global_norm: the output's global norm is [\d.]+, expected "
        r"min\(norm, max_norm\) = min\([\d.]+, 1\.0\) = 1\.0",
    ):
        pt.check_clip_by_global_norm(1.0, grads, rule=per_leaf_clip(1.0))


def test_accumulating_the_sum_instead_of_the_mean_is_caught():
    params = params64()
    grads = [grads_of(params, t) for t in range(6)]
    rule = pn.optim.adam(0.01, amsgrad=True)
    pt.check_accumulate(rule, 3, params, grads)

    def summing(rule, k):
        return pn.optim.accumulate(pn.optim.chain(scale(k), rule), k)

    with pytest.raises(
        AssertionError,
        match=r"check_accumulate: after micro-step 3 \(update 1, k=3\) the params differ from one "
        r"step of the rule on the mean gradient, param at '0\.weight'",
    ):
        pt.check_accumulate(pn.optim.sgd(0.1), 3, params, grads, accumulate=summing)


def test_a_skipped_update_that_still_advances_the_inner_state_is_caught():
    params = params64()
    rule = pn.optim.adam(0.01)
    pt.check_apply_if_finite(rule, params, grads_of(params))

    def leaky(rule, max_errors):
        good = pn.optim.apply_if_finite(rule, max_errors)

        def update(g, s, p=None):
            updates, new = good.update(g, s, p)
            _, inner = rule.update(g, s.inner, p)
            return updates, attrs.evolve(new, inner=inner)

        return GradientTransformation(good.init, update)

    with pytest.raises(
        AssertionError,
        match=r"check_apply_if_finite: a gradient with nan at '0\.weight' changed the inner state "
        r"at 'count': before 1, after 2",
    ):
        pt.check_apply_if_finite(rule, params, grads_of(params), apply_if_finite=leaky)


def test_chains_that_drop_states_or_rules_are_caught():
    params, a, b, c = params64(), pn.optim.sgd(0.1, momentum=0.9), pn.optim.adam(0.01), scale(2.0)
    pt.check_chain_identity(a, params, grads_of)
    pt.check_chain_associativity(a, b, c, params, grads_of)

    def stateless_chain(*rules):
        inner = pn.optim.chain(*rules)
        return GradientTransformation(
            inner.init, lambda g, s, p=None: (inner.update(g, s, p)[0], s)
        )

    with pytest.raises(
        AssertionError, match=r"check_chain_identity: step 2: update at '0\.weight' \[0, 0\]"
    ):
        pt.check_chain_identity(a, params, grads_of, chain=stateless_chain)

    def first_two(*rules):
        return pn.optim.chain(*rules[:2])

    with pytest.raises(
        AssertionError,
        match=r"check_chain_associativity: step 1: update at '0\.weight' \[0, 0\]: "
        r"chain\(a, b, c\) -?[\d.e-]+, chain\(a, chain\(b, c\)\)",
    ):
        pt.check_chain_associativity(a, b, c, params, grads_of, chain=first_two)


def test_schedules_with_a_wrong_end_or_a_bump_are_caught():
    good = pn.schedules.warmup_cosine_decay(0.0, 1.0, warmup_steps=10, decay_steps=100)
    pt.check_schedule(good, {0: 0.0, 10: 1.0, 100: 0.0})
    pt.check_schedule(good, {}, "increasing", over=range(0, 11))
    pt.check_schedule(good, {}, "decreasing", over=range(10, 120))

    def off_by_one(t):  # decays over decay_steps + 1
        return 0.5 * (1 + torch.cos(math.pi * torch.as_tensor(t, dtype=torch.float64) / 101))

    with pytest.raises(
        AssertionError, match=r"check_schedule: at count 100: expected 0\.0, got 0\.000241\d+"
    ):
        pt.check_schedule(off_by_one, {0: 1.0, 100: 0.0})

    def bump(t):
        return torch.as_tensor(1.0 if int(t) != 5 else 1.5, dtype=torch.float64)

    with pytest.raises(
        AssertionError,
        match=r"check_schedule: not non-increasing: count 5 gives 1\.5, count 4 gave 1\.0",
    ):
        pt.check_schedule(bump, {0: 1.0}, "decreasing", over=range(10))
    with pytest.raises(AssertionError, match=r"1\.0 for an int count but 2\.0 for a 0-d tensor"):
        pt.check_schedule(lambda t: 2.0 if torch.is_tensor(t) else 1.0, {3: 1.0})
    with pytest.raises(ValueError, match=r"monotone must be 'increasing', 'decreasing' or None"):
        pt.check_schedule(good, {}, "up")


def test_a_function_whose_result_depends_on_donation_is_caught():
    def step(params, state, grads):
        return pn.step(pn.optim.sgd(0.1), params, grads, state)

    params = params64()
    args = (params, pn.optim.sgd(0.1).init(params), grads_of(params))
    pt.check_donation_equivalence(step, args, (0,), steps=3, compile=False)

    def peeks(params, state, grads):  # behaves differently on the packed layout donation makes
        bump = 1.0 if params._packed is not None else 0.0
        return pn.tree.map(lambda p: p + bump, params), state

    with pytest.raises(
        AssertionError,
        match=r"check_donation_equivalence: call 1: the result with donation differs from the "
        r"result without, output at '0\.0\.weight' \[0, 0\]: without donation",
    ):
        pt.check_donation_equivalence(peeks, args, (0,), steps=2, compile=False)


def test_a_donated_argument_left_alive_is_caught(monkeypatch):
    monkeypatch.setattr(pn.Params, "_kill", lambda self, message: None)
    params = params64()
    with pytest.raises(
        AssertionError, match=r"call 1: donated argument 0 is still usable after the call"
    ):
        pt.check_donation_equivalence(lambda p: pn.tree.scale(p, 2.0), (params,), 0, compile=False)


def test_check_messages_for_structure_and_misuse():
    with pytest.raises(TypeError, match=r"check_pure: opt must be a GradientTransformation, got"):
        pt.check_pure(pn.optim.adam, float32_params, float32_params)
    with pytest.raises(ValueError, match=r"grads_seq must hold a positive multiple of k=2 trees"):
        pt.check_accumulate(pn.optim.sgd(0.1), 2, float32_params, [float32_params])
    with pytest.raises(ValueError, match=r"scales must be > 0, got -1"):
        pt.check_scale_invariance(pn.optim.adam(), float32_params, float32_params, scales=(-1,))
    with pytest.raises(ValueError, match=r"grads have no element to make non-finite"):
        empty = pn.Params({"w": torch.zeros(0)})
        pt.check_apply_if_finite(pn.optim.sgd(0.1), empty, empty)
    with pytest.raises(ValueError, match=r"output 1 must be the new value of donated argument 1"):
        pt.check_donation_equivalence(
            lambda p, q: pn.tree.scale(q, 2.0), (params64(), params64()), (1,), compile=False
        )


# ---------------------------------------------------------------------------------------------
# Strategies generate what they claim.

SEARCH = settings(database=None, max_examples=500, suppress_health_check=list(HealthCheck))


@given(
    data=st.data(),
    dtypes=st.lists(st.sampled_from(S.FLOAT_DTYPES), min_size=1, max_size=3, unique=True),
)
def test_params_respect_their_bounds(data, dtypes):
    p = data.draw(S.params(dtypes=dtypes, max_leaves=3, max_depth=2, max_ndim=2, max_side=3))
    assert isinstance(p, pn.Params) and p._packed is None
    paths = pn.tree.paths(p)
    assert 1 <= len(paths) <= 3 and all(path.count(".") <= 1 for path in paths)
    leaves = pn.tree.leaves(p)
    assert len({leaf.dtype for leaf in leaves}) == 1 and leaves[0].dtype in dtypes
    assert all(leaf.dim() <= 2 and all(s <= 3 for s in leaf.shape) for leaf in leaves)
    assert all(bool(torch.isfinite(leaf).all()) for leaf in leaves)


def test_params_reach_scalars_empty_dims_mixed_dtypes_packing_and_zeros():
    find(S.params(), lambda p: any(x.dim() == 0 for x in pn.tree.leaves(p)), settings=SEARCH)
    find(
        S.params(),
        lambda p: any(x.numel() == 0 and x.dim() for x in pn.tree.leaves(p)),
        settings=SEARCH,
    )
    find(
        S.params(max_depth=3),
        lambda p: any(x.count(".") == 2 for x in pn.tree.paths(p)),
        settings=SEARCH,
    )
    mixed = S.params(dtypes=S.FLOAT_DTYPES, mixed_dtypes=True, min_leaves=4)
    find(mixed, lambda p: len({x.dtype for x in pn.tree.leaves(p)}) > 1, settings=SEARCH)
    find(S.params(packed=None), lambda p: p._packed is not None, settings=SEARCH)
    find(
        S.params(),
        lambda p: any(x.numel() and not x.any() for x in pn.tree.leaves(p)),
        settings=SEARCH,
    )


@pytest.mark.parametrize("dtypes", [(torch.int64,), (torch.float32, torch.bool), ()])
def test_params_names_dtypes_it_cannot_draw(dtypes):
    with pytest.raises(ValueError, match=r"strategies\.params: dtypes must be floating dtypes"):
        find(S.params(dtypes=dtypes), lambda p: True)


@given(p=S.params(scalars=False, empty=False, packed=True))
def test_params_without_scalars_or_empty_dims_and_packed(p):
    assert all(x.dim() and x.numel() for x in pn.tree.leaves(p)) and p._packed is not None


@given(data=st.data())
def test_grads_are_shaped_like_params_and_finite_unless_asked(data):
    p = data.draw(S.params(dtypes=S.FLOAT_DTYPES, mixed_dtypes=True, packed=None))
    g = data.draw(S.grads_like(p))
    assert pn.tree.structure(g) == pn.tree.structure(p)
    for a, b in zip(pn.tree.leaves(g), pn.tree.leaves(p), strict=True):
        assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
        assert bool(torch.isfinite(a).all())
    assert (g._packed is not None) == (p._packed is not None)


def test_grads_reach_zeros_tiny_huge_and_non_finite_values():
    p = pn.Params({"w": torch.zeros(8), "v": torch.zeros(3, dtype=torch.float16)})
    tiny, huge = (
        math.sqrt(torch.finfo(torch.float32).tiny),
        math.sqrt(torch.finfo(torch.float32).max),
    )

    def w(g):
        return g["w"].abs()

    find(S.grads_like(p), lambda g: not w(g).any(), settings=SEARCH)
    find(S.grads_like(p), lambda g: 0 < float(w(g).max()) < 100 * tiny, settings=SEARCH)
    find(S.grads_like(p), lambda g: huge / 1e3 < float(w(g).max()) < huge, settings=SEARCH)
    find(S.grads_like(p, nonfinite=True), lambda g: bool(g["w"].isnan().any()), settings=SEARCH)
    find(S.grads_like(p, nonfinite=True), lambda g: bool(g["v"].isinf().any()), settings=SEARCH)


@given(g=S.grads_like(pn.Params({"w": torch.zeros(8)}), magnitudes=("normal",)))
def test_grads_of_normal_magnitude_only(g):
    assert bool(g["w"].any()) and float(g["w"].abs().max()) < 10


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
@settings(max_examples=20)
@given(data=st.data())
def test_hyperparams_are_valid_for_the_rule_and_its_torch_twin(rule, data):
    dtype = data.draw(st.sampled_from(S.FLOAT_DTYPES))
    kwargs = data.draw(S.hyperparams(rule.make, dtype=dtype))
    rule.make(**kwargs)
    rule.twin([torch.zeros(2, requires_grad=True)], **kwargs)  # raises on what torch rejects
    for name in ("eps",):
        value = kwargs.get(name)
        for eps in value if isinstance(value, tuple) else [value]:
            assert eps is None or eps >= torch.finfo(dtype).tiny


@given(data=st.data())
def test_hyperparams_cover_the_combinators_and_take_overrides(data):
    for factory in S.supported_rules():
        factory(**data.draw(S.hyperparams(factory)))
    kwargs = data.draw(S.hyperparams("sgd", momentum=0.0, lr=st.sampled_from([0.5, 0.25])))
    assert kwargs["momentum"] == 0.0 and kwargs["lr"] in (0.5, 0.25) and not kwargs["nesterov"]
    nesterov = data.draw(S.hyperparams(pn.optim.sgd, nesterov=True))
    assert nesterov["momentum"] > 0 and nesterov["dampening"] == 0


def test_hyperparams_for_unknown_rules_or_arguments_say_what_is_supported():
    with pytest.raises(
        ValueError,
        match=r"hyperparams: no hyperparameter strategy for test_hyperparams_for_unknown.*<locals>"
        r"\.mine; supported: sgd, adam, adamw, rmsprop, .*, lamb, adafactor",
    ):

        def mine(lr):
            return pn.optim.sgd(lr)

        S.hyperparams(mine)
    with pytest.raises(
        ValueError, match=r"hyperparams: adam takes no argument\(s\) \['momentum'\]"
    ):
        S.hyperparams(pn.optim.adam, momentum=0.9)
    with pytest.raises(ValueError, match=r"params_for: no hyperparameter strategy for 'novel'"):
        S.params_for("novel")


def test_params_for_other_rules_may_have_empty_dimensions():
    find(
        S.params_for(pn.optim.adam),
        lambda p: any(x.numel() == 0 for x in pn.tree.leaves(p)),
        settings=SEARCH,
    )


@given(p=S.params_for(pn.optim.adafactor, min_leaves=4))
def test_params_for_adafactor_have_no_empty_leaves(p):
    assert all(x.numel() for x in pn.tree.leaves(p))


@given(case=S.schedule_cases(kinds=("linear", "exponential_decay")))
def test_schedule_cases_are_of_the_asked_kinds(case):
    assert type(case.schedule).__name__ in ("Linear", "ExponentialDecay")
    assert case.points and all(isinstance(t, int) for t in case.points)


def test_schedule_strategies_reject_unknown_kinds_and_give_callables():
    with pytest.raises(ValueError, match=r"schedule_cases: unknown kinds \['sawtooth'\]"):
        S.schedule_cases(kinds=("sawtooth",))
    assert callable(find(S.schedules(), callable, settings=SEARCH))
    lr = find(S.hyperparams(pn.optim.sgd, lr=S.schedules()), lambda kw: True, settings=SEARCH)["lr"]
    assert float(lr(0)) >= 0.0


@given(problem=S.problems(steps=3, packed=True))
def test_problems_carry_one_gradient_per_step(problem):
    assert len(problem.grads) == 3 and problem.params._packed is not None
    assert problem.grad_fn(problem.params, 4) is problem.grads[1]


def test_problems_take_a_params_strategy_or_options_not_both():
    with pytest.raises(ValueError, match=r"pass params_strategy or params options, not both"):
        find(S.problems(params_strategy=S.params(), max_leaves=2), bool, settings=SEARCH)


# ---------------------------------------------------------------------------------------------
# The pytest plugin and the example.


def test_the_plugin_turns_on_the_mutation_guard():
    assert pn.config.debug
    opt, params = pn.optim.adam(), pn.Params({"w": torch.zeros(2)})
    state = opt.init(params)
    pn.tree.leaves(state.exp_avg)[0].add_(1.0)
    with pytest.raises(pn.MutatedError, match=r"opt_state\.exp_avg\.w was modified in place"):
        pn.step(opt, params, params, state)


def test_the_plugin_fixtures(pn_key, assert_tree_close):
    assert torch.equal(pn_key, pn.random.key(0))
    assert assert_tree_close is pt.assert_tree_close
    assert_tree_close(pn.Params({"w": torch.ones(2)}), pn.Params({"w": torch.ones(2)}))


def test_the_plugin_is_registered_as_an_entry_point(pytester):
    pytester.makepyfile(
        """
        import purenn as pn
        import torch

        def test_fixtures_without_imports(pn_key, assert_tree_close):
            assert pn.config.debug
            assert_tree_close(pn_key, pn.random.key(0))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_example_property_tests_run():
    path = ROOT / "examples" / "property_test_custom_rule.py"
    spec = importlib.util.spec_from_file_location("property_test_custom_rule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    assert len(tests) >= 3
    for test in tests:
        test()


def test_pn_testing_is_reachable_after_a_plain_import_without_loading_hypothesis_first():
    # Outside pytest (no plugin), `import purenn` must not import hypothesis, and the
    # docstrings' `pn.testing.check_pure(...)` must still work.
    code = (
        "import sys, purenn as pn\n"
        "assert 'hypothesis' not in sys.modules\n"
        "assert pn.testing.check_pure is pn.testing._purity.check_pure\n"
        "try:\n    pn.no_such_name\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "no attribute 'no_such_name'" in out.stdout
