"""Non-finite values: pn.check_finite, pn.config.check_finite in pn.step, and apply_if_finite with it."""

from __future__ import annotations

import pytest
import torch

import purenn as pn

NAN, INF = float("nan"), float("inf")


def problem():
    params = pn.Params({"w": torch.ones(3), "sub": {"b": torch.ones(2)}})
    return params, pn.tree.map(torch.ones_like, params)


@pytest.fixture
def checking():
    with pn.config.override(check_finite=True):
        yield


def test_check_finite_names_the_first_bad_leaf_and_what_it_holds():
    params, _ = problem()
    pn.check_finite(params)  # fine
    pn.check_finite(pn.Params({"i": torch.tensor([2**62]), "e": torch.zeros(0)}))  # ints, empties
    for value, kind in ((NAN, "NaN"), (INF, "inf"), (-INF, "-inf")):
        bad = pn.tree.set(params, "sub.b", torch.tensor([1.0, value]))
        with pytest.raises(pn.NonFiniteError, match=rf"^params\.sub\.b holds {kind}$"):
            pn.check_finite(bad, "params")
    with pytest.raises(FloatingPointError, match=r"^tree holds NaN$"):
        pn.check_finite(torch.tensor(NAN))
    with pytest.raises(pn.NonFiniteError, match=r"state\.1\.z holds inf"):
        pn.check_finite((torch.ones(1), {"z": torch.tensor(complex(INF, 0))}), "state")


def test_step_reports_the_path_and_the_step_where_params_became_nan(checking):
    opt = pn.optim.adam(1e-2)
    params, grads = problem()
    state = opt.init(params)
    for _ in range(3):
        params, state = pn.step(opt, params, grads, state)
    bad = pn.tree.set(grads, "sub.b", torch.tensor([NAN, 1.0]))
    with pytest.raises(
        pn.NonFiniteError,
        match=r"pn\.step: params 'sub\.b' became NaN at step 4 \(the optimizer state's count after "
        r"this update\); the gradients were not finite \(first: grads 'sub\.b' holds NaN\)",
    ):
        pn.step(opt, params, bad, state)


def test_step_blames_the_rule_when_gradients_were_finite(checking):
    opt = pn.optim.sgd(INF)
    params, grads = problem()
    with pytest.raises(
        pn.NonFiniteError,
        match=r"params 'w' became -inf at step 1 .*the gradients were finite, so the update rule "
        r"produced it",
    ):
        pn.step(opt, params, grads, opt.init(params))


def test_step_says_when_a_param_was_already_non_finite(checking):
    opt = pn.optim.sgd(0.1)
    params, grads = problem()
    params = pn.tree.set(params, "w", torch.tensor([INF, 0.0, 0.0]))
    with pytest.raises(
        pn.NonFiniteError,
        match=r"params 'w' holds inf at step 1 .*it was already non-finite in the params passed",
    ):
        pn.step(opt, params, grads, opt.init(params))


def test_step_checks_the_optimizer_state_too(checking):
    opt = pn.optim.adam(1e-3)
    params, grads = problem()
    state = opt.init(params)
    state = pn.tree.set(state, "hyperparams.eps", torch.tensor(NAN, dtype=torch.float64))
    with pytest.raises(pn.NonFiniteError, match=r"params 'w' became NaN at step 1"):
        pn.step(opt, params, grads, state)
    huge = pn.tree.map(lambda g: torch.full_like(g, 1e30), grads)  # squares overflow float32
    with pytest.raises(
        pn.NonFiniteError,
        match=r"opt_state 'exp_avg_sq\.w' became inf at step 1 .*gradients were finite",
    ):
        pn.step(opt, params, huge, opt.init(params))


def test_a_rule_without_count_still_names_the_path(checking):
    def update(grads, state, params=None):
        return pn.tree.map(lambda g: g * NAN, grads), state

    opt = pn.optim.GradientTransformation(lambda p: pn.optim.EmptyState(), update)
    params, grads = problem()
    with pytest.raises(
        pn.NonFiniteError,
        match=r"params 'w' became NaN in this pn\.step \(the optimizer state has no count",
    ):
        pn.step(opt, params, grads, opt.init(params))


def test_off_by_default_and_nan_passes_silently():
    assert pn.config.check_finite is False
    opt = pn.optim.sgd(0.1)
    params, grads = problem()
    bad = pn.tree.set(grads, "w", torch.full((3,), NAN))
    new, _ = pn.step(opt, params, bad, opt.init(params))
    assert torch.isnan(new["w"]).all()


def test_apply_if_finite_skips_bad_steps_so_the_check_stays_quiet_until_it_gives_up(checking):
    """apply_if_finite rejects non-finite gradients (params unchanged) up to its error budget."""
    opt = pn.optim.apply_if_finite(pn.optim.sgd(0.1), max_consecutive_errors=2)
    params, grads = problem()
    state = opt.init(params)
    bad = pn.tree.set(grads, "w", torch.tensor([1.0, NAN, 1.0]))
    params, state = pn.step(opt, params, grads, state)
    for skipped in (1, 2):
        new_params, state = pn.step(opt, params, bad, state)
        assert all(
            torch.equal(a, b)
            for a, b in zip(pn.tree.leaves(new_params), pn.tree.leaves(params), strict=True)
        )
        assert int(state.notfinite_count) == skipped and int(state.total_notfinite) == skipped
        params = new_params
    with pytest.raises(
        pn.NonFiniteError, match=r"params 'w' became NaN at step 2 .*grads 'w' holds NaN"
    ):
        pn.step(opt, params, bad, state)  # the third in a row is applied: it fails visibly
    params, state = pn.step(opt, params, grads, state)  # a finite gradient resets the run
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2


def test_no_check_inside_compiled_code(checking):
    """Under pn.jit (torch.compile) the check is skipped; pn.check_finite on the results reports it."""
    opt = pn.optim.sgd(0.1)
    params, grads = problem()
    bad = pn.tree.set(grads, "w", torch.full((3,), NAN))
    compiled = pn.jit(lambda p, s, g: pn.step(opt, p, g, s), backend="eager")
    new, _ = compiled(params, opt.init(params), bad)
    with pytest.raises(pn.NonFiniteError, match=r"params\.w holds NaN"):
        pn.check_finite(new, "params")
