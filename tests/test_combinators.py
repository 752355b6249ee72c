"""pn.optim combinators: clipping, decay, masks and labels, accumulation, finiteness, EMA, lookahead, injection."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_optim import gradient, problem

import purenn as pn
from purenn import optim
from purenn import schedules as S


def grads_at(params: pn.Params, step: int) -> pn.Params:
    return pn.tree.map(lambda p: gradient(p, step), params)


def run(opt, params, steps: int, start: int = 0):
    state = opt.init(params)
    for t in range(start, start + steps):
        params, state = pn.step(opt, params, grads_at(params, t), state)
    return params, state


def not_bias(params):
    return pn.tree.map(lambda p: p.dim() > 1, params)


SCHEDULE = S.warmup_cosine_decay(0.0, 0.01, warmup_steps=3, decay_steps=20)

# Every combinator, built around real rules: the shared table for purity, structure and summaries.
COMBINATORS = {
    "clip": lambda: optim.clip(0.5),
    "clip_by_global_norm": lambda: optim.clip_by_global_norm(1.0),
    "add_decayed_weights": lambda: optim.add_decayed_weights(0.1),
    "add_decayed_weights_masked": lambda: optim.add_decayed_weights(
        0.1, mask={"*.bias": False, "*": True}
    ),
    "masked": lambda: optim.masked(optim.adam(0.01), not_bias),
    "multi_transform": lambda: optim.multi_transform(
        {"decay": optim.adamw(0.01, weight_decay=0.1), "plain": optim.sgd(0.05, momentum=0.9)},
        {"*.bias": "plain", "scale": "plain", "*": "decay"},
    ),
    "freeze": lambda: optim.chain(optim.adam(0.01), optim.freeze({"1.*": True, "*": False})),
    "accumulate": lambda: optim.accumulate(optim.adam(SCHEDULE), every_k=3),
    "accumulate_1": lambda: optim.accumulate(optim.sgd(0.1, momentum=0.9), every_k=1),
    "apply_if_finite": lambda: optim.apply_if_finite(optim.adam(0.01), max_consecutive_errors=2),
    "ema": lambda: optim.chain(optim.sgd(0.1), optim.ema(0.9)),
    "lookahead": lambda: optim.lookahead(optim.adam(0.01), sync_period=2, slow_step_size=0.5),
    "inject_hyperparams": lambda: optim.inject_hyperparams(optim.adamw)(
        lr=SCHEDULE, weight_decay=S.linear(0.0, 0.1, 10)
    ),
    "chain": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(SCHEDULE)),
}
ALL = [pytest.param(make, id=name) for name, make in COMBINATORS.items()]


@pytest.mark.parametrize("make", ALL)
def test_update_is_pure_deterministic_and_structured(make):
    opt = make()
    params = problem(torch.float32)
    state = opt.init(params)
    for step in range(4):  # past accumulate's and lookahead's boundaries
        grads = grads_at(params, step)
        before = [(leaf.clone(), leaf._version) for leaf in pn.tree.leaves((grads, state, params))]
        updates, new_state = opt.update(grads, state, params)
        after = pn.tree.leaves((grads, state, params))
        for (old, version), leaf in zip(before, after, strict=True):
            assert leaf._version == version and torch.equal(old, leaf)
        again, again_state = opt.update(grads, state, params)
        pn.testing.assert_tree_equal(again, updates)
        pn.testing.assert_tree_equal(again_state, new_state)
        assert pn.tree.structure(updates) == pn.tree.structure(params)
        assert pn.tree.structure(new_state) == pn.tree.structure(state)
        for u, p in zip(pn.tree.leaves(updates), pn.tree.leaves(params), strict=True):
            assert (u.shape, u.dtype, u.device) == (p.shape, p.dtype, p.device)
        params, state = pn.apply_updates(params, updates), new_state
    table = str(pn.tree.summary(state))  # every intermediate is a named, printable leaf
    assert all(path in table for path in pn.tree.paths(state))


@pytest.mark.parametrize("make", ALL)
def test_state_from_another_rule_is_rejected_naming_the_combinator(make):
    params = problem()
    opt = make()
    wrong = optim.lion().init(params)
    with pytest.raises((pn.StateError, TypeError), match=r"got a LionState|tuple from its init"):
        opt.update(grads_at(params, 0), wrong, params)


@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.1, 10.0), seed=st.integers(0, 1000))
def test_clip_by_global_norm_gives_min_of_norm_and_max_norm_and_keeps_direction(
    scale, max_norm, seed
):
    grads = pn.tree.scale(problem(seed=seed), scale)
    opt = optim.clip_by_global_norm(max_norm)
    clipped, _ = opt.update(grads, opt.init(grads))
    norm = float(pn.tree.global_norm(grads))
    assert float(pn.tree.global_norm(clipped)) == pytest.approx(min(norm, max_norm), rel=1e-12)
    factor = min(1.0, max_norm / norm)
    pn.testing.assert_tree_close(clipped, pn.tree.scale(grads, factor), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_clip_by_global_norm_of_zero_gradients_is_zero_not_nan(max_norm):
    # Regression: `norm < max_norm` sent norm = max_norm = 0 to the 0 / 0 branch (the
    # property suite found it with a float16 scalar).
    grads = pn.tree.zeros_like(problem())
    opt = optim.clip_by_global_norm(max_norm)
    clipped, _ = opt.update(grads, opt.init(grads))
    pn.testing.assert_tree_equal(clipped, grads)


def test_clip_equals_torch_clip_grad_value():
    grads = pn.tree.scale(problem(), 2.0)
    opt = optim.clip(0.7)
    ours, _ = opt.update(grads, opt.init(grads))
    tensors = [torch.nn.Parameter(torch.zeros_like(g)) for g in pn.tree.leaves(grads)]
    for t, g in zip(tensors, pn.tree.leaves(grads), strict=True):
        t.grad = g.clone()
    torch.nn.utils.clip_grad_value_(tensors, 0.7)
    reference = pn.tree.unflatten(pn.tree.structure(grads), [t.grad for t in tensors])
    pn.testing.assert_tree_equal(ours, reference)


def test_add_decayed_weights_before_sgd_is_sgds_coupled_weight_decay():
    params = problem()
    chained, _ = run(
        optim.chain(optim.add_decayed_weights(0.1), optim.sgd(0.05, momentum=0.9)), params, 10
    )
    built_in, _ = run(optim.sgd(0.05, momentum=0.9, weight_decay=0.1), params, 10)
    pn.testing.assert_tree_equal(chained, built_in)


def test_add_decayed_weights_mask_decays_only_masked_leaves():
    params = problem()
    grads = pn.tree.zeros_like(params)
    opt = optim.add_decayed_weights(0.5, mask={"*.bias": False, "scale": False, "*": True})
    updates, state = opt.update(grads, opt.init(params), params)
    assert torch.equal(updates["0.weight"], 0.5 * params["0.weight"])
    assert torch.equal(updates["1.weight"], 0.5 * params["1.weight"])
    assert torch.equal(updates["0.bias"], grads["0.bias"]) and torch.equal(
        updates["scale"], grads["scale"]
    )
    assert state.mask == (True, False, True, False) and state.paths == (
        "0.weight",
        "0.bias",
        "1.weight",
        "scale",
    )
    assert float(state.inner.hyperparams["weight_decay"]) == 0.5


def test_masked_runs_the_rule_on_masked_leaves_and_passes_the_rest():
    params = problem()
    grads = grads_at(params, 0)
    opt = optim.masked(optim.adam(0.01), not_bias)
    state = opt.init(params)
    assert pn.tree.paths(state.inner.exp_avg) == ["0.weight", "1.weight"]  # no state for the rest
    updates, _ = opt.update(grads, state, params)
    sub = pn.Params({"0": {"weight": params["0.weight"]}, "1": {"weight": params["1.weight"]}})
    sub_grads = pn.tree.map(lambda p: gradient(p, 0), sub)
    adam = optim.adam(0.01)
    expected, _ = adam.update(sub_grads, adam.init(sub), sub)
    assert torch.equal(updates["0.weight"], expected["0.weight"])
    assert torch.equal(updates["1.weight"], expected["1.weight"])
    assert torch.equal(updates["0.bias"], grads["0.bias"]) and torch.equal(
        updates["scale"], grads["scale"]
    )


def test_multi_transform_equals_torch_param_groups():
    params = problem()
    opt = optim.multi_transform(
        {"fast": optim.adam(0.05, weight_decay=0.1), "slow": optim.adam(0.001)},
        lambda p: pn.tree.map(lambda x: "fast" if x.dim() > 1 else "slow", p),
    )
    ours, state = run(opt, params, 30)
    assert state.labels == ("fast", "slow", "fast", "slow")
    assert pn.tree.paths(state.inner["slow"].exp_avg) == ["0.bias", "scale"]
    tensors = {
        path: torch.nn.Parameter(leaf.clone())
        for path, leaf in zip(pn.tree.paths(params), pn.tree.leaves(params), strict=True)
    }
    fast = [tensors["0.weight"], tensors["1.weight"]]
    slow = [tensors["0.bias"], tensors["scale"]]
    twin = torch.optim.Adam(
        [{"params": fast, "lr": 0.05, "weight_decay": 0.1}, {"params": slow, "lr": 0.001}]
    )
    for t in range(30):
        for p in tensors.values():
            p.grad = gradient(p.detach(), t)
        twin.step()
    reference = pn.Params.from_state_dict({k: v.detach() for k, v in tensors.items()})
    pn.testing.assert_tree_close(ours, reference, rtol=1e-12, atol=1e-14)


def test_multi_transform_labels_by_tree_pattern_or_function_agree():
    params = problem()
    rules = {"a": optim.sgd(0.1), "b": optim.adam(0.01)}
    tree = pn.tree.map(lambda p: "a" if p.dim() == 1 else "b", params)
    by_tree, _ = run(optim.multi_transform(rules, tree), params, 3)
    by_pattern, _ = run(optim.multi_transform(rules, {"0.bias": "a", "*": "b"}), params, 3)
    by_function, _ = run(optim.multi_transform(rules, lambda p: tree), params, 3)
    pn.testing.assert_tree_equal(by_tree, by_pattern)
    pn.testing.assert_tree_equal(by_tree, by_function)


def test_multi_transform_and_masks_reject_unlabelled_or_unknown():
    params = problem()
    rules = {"a": optim.sgd(0.1)}
    with pytest.raises(
        pn.TreeMismatchError, match=r"multi_transform: no pattern matches param '0\.bias'"
    ):
        optim.multi_transform(rules, {"*.weight": "a", "scale": "a"}).init(params)
    with pytest.raises(
        ValueError,
        match=r"param '0\.weight' has label 'b', which has no rule in transforms \(labels: \['a'\]\)",
    ):
        optim.multi_transform(rules, {"*": "b"}).init(params)
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"multi_transform: the label tree has no entry for param '0\.bias'",
    ):
        optim.multi_transform(rules, pn.Params({"0": {"weight": params["0.weight"]}})).init(params)
    with pytest.raises(
        TypeError, match=r"masked: the mask for param '0\.weight' must be a bool, got str"
    ):
        optim.masked(optim.sgd(0.1), {"*": "yes"}).init(params)
    with pytest.raises(
        TypeError,
        match=r"multi_transform: transforms\['a'\] must be a GradientTransformation, got function \(call the factory",
    ):
        optim.multi_transform({"a": optim.sgd}, {"*": "a"})
    with pytest.raises(TypeError, match="transforms must be a non-empty mapping"):
        optim.multi_transform({}, {"*": "a"})
    state = optim.multi_transform(rules, {"*": "a"}).init(params)
    fewer = pn.Params({"0": params["0"], "scale": params["scale"]})
    with pytest.raises(pn.TreeMismatchError, match=r"'1\.weight' is in the state but not in grads"):
        optim.multi_transform(rules, {"*": "a"}).update(fewer, state, fewer)


def test_freeze_keeps_frozen_params_exactly():
    params = problem()
    moved, _ = run(
        optim.chain(optim.adamw(0.01), optim.freeze({"0.*": True, "*": False})), params, 5
    )
    assert torch.equal(moved["0.weight"], params["0.weight"]) and torch.equal(
        moved["0.bias"], params["0.bias"]
    )
    free, _ = run(optim.adamw(0.01), params, 5)
    assert torch.equal(moved["1.weight"], free["1.weight"]) and torch.equal(
        moved["scale"], free["scale"]
    )


@pytest.mark.parametrize(
    "make",
    [lambda: optim.adam(0.01, amsgrad=True), lambda: optim.sgd(0.1, momentum=0.9, nesterov=True)],
    ids=["adam", "sgd"],
)
@given(k=st.integers(1, 4), seed=st.integers(0, 1000))
def test_accumulate_k_micro_steps_equal_one_step_on_the_mean(make, k, seed):
    params = problem(seed=seed)
    acc = optim.accumulate(make(), every_k=k)
    plain = make()
    acc_state, plain_state = acc.init(params), plain.init(params)
    acc_params = plain_params = params
    for step in range(2):  # two full cycles
        micro = [grads_at(acc_params, 10 * step + i) for i in range(k)]
        for i, grads in enumerate(micro):
            before = acc_params
            acc_params, acc_state = pn.step(acc, acc_params, grads, acc_state)
            if i < k - 1:
                pn.testing.assert_tree_equal(acc_params, before)
        mean = pn.tree.map(lambda *gs: sum(gs[1:], gs[0]) / k, *micro)
        plain_params, plain_state = pn.step(plain, plain_params, mean, plain_state)
        pn.testing.assert_tree_equal(acc_params, plain_params)
        pn.testing.assert_tree_equal(acc_state.inner, plain_state)
        assert int(acc_state.count) == 0


def test_accumulate_every_1_allocates_no_params_sized_buffer():
    params = problem()
    inner = optim.adam()
    one = optim.accumulate(inner, every_k=1).init(params)
    assert one.grad_sum is None
    assert (
        len(pn.tree.leaves(one)) == len(pn.tree.leaves(inner.init(params))) + 1
    )  # just the counter
    four = optim.accumulate(inner, every_k=4).init(params)
    assert pn.tree.structure(four.grad_sum) == pn.tree.structure(params)


def test_apply_if_finite_skips_and_counts_then_gives_up_after_max_errors():
    params = problem()
    opt = optim.apply_if_finite(optim.adam(0.01), max_consecutive_errors=2)
    state = opt.init(params)
    params, state = pn.step(opt, params, grads_at(params, 0), state)
    bad = pn.tree.set(
        grads_at(params, 1), "1.weight", torch.full((2, 2, 2), float("nan"), dtype=torch.float64)
    )
    for errors in (1, 2):
        new_params, new_state = pn.step(opt, params, bad, state)
        pn.testing.assert_tree_equal(new_params, params)
        pn.testing.assert_tree_equal(new_state.inner, state.inner)
        assert int(new_state.notfinite_count) == errors and int(new_state.total_notfinite) == errors
        assert not bool(new_state.last_finite)
        state = new_state
    given_up, state = pn.step(opt, params, bad, state)  # the third in a row is applied
    assert torch.isnan(given_up["1.weight"]).all() and int(state.inner.count) == 2
    _, state = pn.step(opt, params, grads_at(params, 2), state)
    assert (
        int(state.notfinite_count) == 0
        and int(state.total_notfinite) == 3
        and bool(state.last_finite)
    )
    inf = pn.tree.set(grads_at(params, 3), "scale", torch.tensor(float("inf"), dtype=torch.float64))
    pn.testing.assert_tree_equal(pn.step(opt, params, inf, opt.init(params))[0], params)


def test_ema_is_the_debiased_moving_average_of_updates():
    params = problem()
    opt = optim.ema(0.8)
    state = opt.init(params)
    average = pn.tree.zeros_like(params)
    for t in range(1, 5):
        grads = grads_at(params, t)
        updates, state = opt.update(grads, state)
        average = pn.tree.map(lambda a, g: 0.2 * g + 0.8 * a, average, grads)
        pn.testing.assert_tree_close(
            updates, pn.tree.scale(average, 1 / (1 - 0.8**t)), rtol=1e-14, atol=0
        )
    pn.testing.assert_tree_close(state.ema, average, rtol=1e-15, atol=0)
    raw_opt = optim.ema(0.8, debias=False)
    raw, _ = raw_opt.update(grads_at(params, 1), raw_opt.init(params))
    pn.testing.assert_tree_close(raw, pn.tree.scale(grads_at(params, 1), 0.2), rtol=1e-15, atol=0)


def test_lookahead_follows_the_paper():
    params = problem()
    k, alpha = 3, 0.4
    ours, state = run(optim.lookahead(optim.sgd(0.05, momentum=0.9), k, alpha), params, 10)
    # Zhang et al. (2019), Algorithm 1, with the inner SGD state kept across syncs.
    inner = optim.sgd(0.05, momentum=0.9)
    fast, slow, inner_state = params, params, inner.init(params)
    for t in range(10):
        fast, inner_state = pn.step(inner, fast, grads_at(fast, t), inner_state)
        if (t + 1) % k == 0:
            slow = pn.tree.map(lambda s, f: s + alpha * (f - s), slow, fast)
            fast = slow
    pn.testing.assert_tree_close(ours, fast, rtol=1e-13, atol=1e-15)
    pn.testing.assert_tree_close(state.slow, slow, rtol=1e-13, atol=1e-15)


def test_inject_hyperparams_schedules_any_hyperparameter_like_torch_with_manual_groups():
    params = problem()
    wd = S.linear(0.0, 0.2, transition_steps=10)
    opt = optim.inject_hyperparams(optim.adamw)(lr=SCHEDULE, weight_decay=wd, betas=(0.8, 0.99))
    ours, state = run(opt, params, 15)
    assert set(state.hyperparams) == {"lr", "beta1", "beta2", "eps", "weight_decay"}
    assert float(state.hyperparams["lr"]) == float(SCHEDULE(14)) and float(
        state.hyperparams["weight_decay"]
    ) == float(wd(14))
    tensors = [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]
    twin = torch.optim.AdamW(tensors, betas=(0.8, 0.99))
    for t in range(15):
        twin.param_groups[0]["lr"] = float(SCHEDULE(t))
        twin.param_groups[0]["weight_decay"] = float(wd(t))
        for p in tensors:
            p.grad = gradient(p.detach(), t)
        twin.step()
    reference = pn.tree.unflatten(pn.tree.structure(params), [p.detach() for p in tensors])
    pn.testing.assert_tree_close(ours, reference, rtol=1e-12, atol=1e-14)


def test_inject_hyperparams_numbers_live_in_state_and_can_be_set():
    params = problem()
    opt = optim.inject_hyperparams(optim.sgd)(0.1, momentum=0.9)
    state = opt.init(params)
    assert {k: float(v) for k, v in state.hyperparams.items()} == {
        "lr": 0.1,
        "momentum": 0.9,
        "dampening": 0.0,
        "weight_decay": 0.0,
    }
    halved = pn.tree.set(state, "hyperparams.lr", torch.tensor(0.05, dtype=torch.float64))
    grads = grads_at(params, 0)
    pn.testing.assert_tree_equal(
        opt.update(grads, halved, params)[0],
        optim.sgd(0.05, momentum=0.9).update(
            grads, optim.sgd(0.05, momentum=0.9).init(params), params
        )[0],
    )
    clip = optim.inject_hyperparams(optim.clip_by_global_norm)(S.linear(1.0, 0.1, 5))
    clipped_state = clip.init(params)
    assert float(clipped_state.hyperparams["max_norm"]) == 1.0


@pytest.mark.parametrize("factory", [optim.sgd, optim.adam])
def test_inject_hyperparams_state_holds_each_value_once_so_it_can_be_donated(factory):
    params = problem()
    opt = optim.inject_hyperparams(factory)(lr=S.linear(0.1, 0.01, 5))
    state = opt.init(params)
    assert "lr" in state.hyperparams and "lr" not in state.inner.hyperparams
    step = pn.jit(lambda p, s, g: pn.step(opt, p, g, s), donate_argnums=(0, 1), compile=False)
    reference_params, reference_state = params, state
    params, state = pn.tree.map(torch.clone, params), pn.tree.map(torch.clone, state)
    for t in range(3):
        grads = grads_at(reference_params, t)
        reference_params, reference_state = pn.step(opt, reference_params, grads, reference_state)
        params, state = step(params, state, grads)  # shared buffers would raise ValueError
    pn.testing.assert_tree_equal(params, reference_params)
    pn.testing.assert_tree_equal(state, reference_state)


def test_inject_hyperparams_errors():
    params = problem()

    def scaled(factor):  # a user rule that keeps its factor out of its state
        return optim.GradientTransformation(
            lambda p: optim.EmptyState(), lambda g, s, p=None: (pn.tree.scale(g, factor), s)
        )

    with pytest.raises(
        TypeError,
        match=r"'factor' has a schedule, but the rule's state keeps no hyperparams\['factor'\] \(it keeps \[\]\)",
    ):
        optim.inject_hyperparams(scaled)(S.linear(1.0, 0.0, 5)).init(params)
    fixed = optim.inject_hyperparams(scaled)(0.5)  # a number it does not keep stays fixed
    pn.testing.assert_tree_equal(
        fixed.update(params, fixed.init(params))[0], pn.tree.scale(params, 0.5)
    )
    with pytest.raises(
        TypeError, match=r"inject_hyperparams\(sgd\): got an unexpected keyword argument 'momentun'"
    ):
        optim.inject_hyperparams(optim.sgd)(0.1, momentun=0.9)
    masked_decay = optim.inject_hyperparams(optim.add_decayed_weights, static_args=("mask",))(
        0.1, mask=not_bias
    )
    assert masked_decay.init(params).inner.mask == (True, False, True, False)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: optim.clip(-1.0), ValueError, "clip: value must be >= 0, got -1.0"),
        (lambda: optim.clip_by_global_norm(-1.0), ValueError, "max_norm must be >= 0, got -1.0"),
        (lambda: optim.add_decayed_weights(-0.1), ValueError, "Invalid weight_decay value: -0.1"),
        (
            lambda: optim.accumulate(optim.sgd(0.1), 0),
            ValueError,
            "accumulate: every_k must be an int >= 1, got 0",
        ),
        (
            lambda: optim.accumulate(optim.sgd(0.1), 2.0),
            ValueError,
            "every_k must be an int >= 1, got 2.0",
        ),
        (
            lambda: optim.accumulate(optim.sgd, 2),
            TypeError,
            "accumulate: rule must be a GradientTransformation, got function",
        ),
        (
            lambda: optim.apply_if_finite(optim.sgd(0.1), -1),
            ValueError,
            "max_consecutive_errors must be an int >= 0, got -1",
        ),
        (lambda: optim.ema(1.5), ValueError, r"ema: decay must be in \[0, 1\], got 1.5"),
        (
            lambda: optim.lookahead(optim.sgd(0.1), 0, 0.5),
            ValueError,
            "sync_period must be an int >= 1, got 0",
        ),
        (
            lambda: optim.lookahead(optim.sgd(0.1), 5, 1.5),
            ValueError,
            r"slow_step_size must be in \[0, 1\], got 1.5",
        ),
        (
            lambda: optim.masked("adam", {"*": True}),
            TypeError,
            "masked: rule must be a GradientTransformation, got str",
        ),
        (
            lambda: optim.inject_hyperparams(3),
            TypeError,
            "inject_hyperparams: factory must be callable, got int",
        ),
    ],
)
def test_bad_arguments_are_rejected_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_rules_that_read_params_say_so_without_them():
    params = problem()
    for name, opt in [
        ("add_decayed_weights", optim.add_decayed_weights(0.1)),
        ("lookahead", optim.lookahead(optim.sgd(0.1), 2, 0.5)),
    ]:
        with pytest.raises(pn.TreeMismatchError, match=rf"{name}: this rule needs params"):
            opt.update(params, opt.init(params))


def test_accumulate_state_from_another_every_k_is_rejected():
    params = problem()
    state = optim.accumulate(optim.sgd(0.1), 2).init(params)
    with pytest.raises(
        pn.StateError,
        match="accumulate: the state was made with every_k=2, but this rule has every_k=3",
    ):
        optim.accumulate(optim.sgd(0.1), 3).update(params, state, params)


BRANCH_FREE = [
    "accumulate",
    "apply_if_finite",
    "lookahead",
    "multi_transform",
    "inject_hyperparams",
    "chain",
]


@pytest.mark.slow
@pytest.mark.parametrize("make", [pytest.param(COMBINATORS[n], id=n) for n in BRANCH_FREE])
def test_a_compiled_step_compiles_once_and_matches_eager(make):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    opt = make()
    step = pn.jit(lambda p, s, g: pn.step(opt, p, g, s), backend=backend)
    params = eager = problem(torch.float32)
    state = eager_state = opt.init(params)
    for t in range(8):
        params, state = step(params, state, grads_at(params, t))
        eager, eager_state = pn.step(opt, eager, grads_at(eager, t), eager_state)
    assert len(graphs) == 1
    pn.testing.assert_tree_close(params, eager, rtol=1e-5, atol=1e-6)


def test_argument_names_follow_the_api_contract():
    # API.md names: clip(value), add_decayed_weights(wd, mask=None), multi_transform(rules, labels).
    params = pn.Params({"w": torch.ones(2), "b": torch.ones(1)})
    grads = pn.Params({"w": torch.full((2,), 5.0), "b": torch.full((1,), -5.0)})
    updates, _ = optim.clip(value=1.0).update(grads, optim.clip(value=1.0).init(params), params)
    assert torch.equal(updates["w"], torch.ones(2)) and torch.equal(updates["b"], -torch.ones(1))
    decay = optim.add_decayed_weights(wd=0.5, mask=None)
    updates, _ = decay.update(grads, decay.init(params), params)
    assert torch.equal(updates["w"], torch.full((2,), 5.5))
    rule = optim.multi_transform(
        {"a": optim.sgd(1.0), "z": optim.sgd(0.0)}, labels={"w": "a", "*": "z"}
    )
    updates, _ = rule.update(grads, rule.init(params), params)
    assert torch.equal(updates["w"], torch.full((2,), -5.0)) and torch.equal(
        updates["b"], torch.zeros(1)
    )
