"""pn.optim against torch.optim (one shared table of rules), properties, and bad input."""

from __future__ import annotations

import math
import re
from unittest import mock

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import purenn as pn
from purenn import optim
from purenn.optim._kernel import moving_average


class LionReference(torch.optim.Optimizer):
    """Lion as written in Chen et al. (2023), Algorithm 2, independently of purenn's code."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
        super().__init__(
            params, {"lr": lr, "betas": betas, "weight_decay": weight_decay, "maximize": maximize}
        )

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                g = -p.grad if group["maximize"] else p.grad
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                c = beta1 * m + (1 - beta1) * g
                sign = torch.where(c.isnan(), c, c.sign())  # sign(NaN) = NaN, as in NumPy and JAX
                p.add_(-group["lr"] * (sign + group["weight_decay"] * p))
                m.copy_(beta2 * m + (1 - beta2) * g)


class LambReference(torch.optim.Optimizer):
    """LAMB as You et al. (2020), Algorithm 2, with optax.lamb's choices (per-tensor trust ratio
    ||p|| / ||r||, ratio 1 where either norm is 0, eps outside the square root, decay inside r)."""

    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, maximize=False
    ):
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.copy_(beta1 * m + (1 - beta1) * g)
                v.copy_(beta2 * v + (1 - beta2) * g * g)
                m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
                r = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
                p_norm, r_norm = p.norm(), r.norm()
                ratio = 1.0 if p_norm == 0 or r_norm == 0 else p_norm / r_norm
                p.add_(-group["lr"] * ratio * r)


LOOP_AND_FOREACH = ({"foreach": False}, {"foreach": True})
WITH_FUSED = (*LOOP_AND_FOREACH, {"fused": True})  # torch.optim's fused CPU kernels


@attrs.frozen
class Rule:
    name: str
    make: object
    twin: type[torch.optim.Optimizer]
    grid: tuple[dict, ...]
    variants: tuple[dict, ...] = LOOP_AND_FOREACH
    # Settings under which updates are invariant to scaling the gradient (None: not invariant).
    scale_invariant: dict | None = None


RULES = (
    Rule(
        "sgd",
        pn.optim.sgd,
        torch.optim.SGD,
        (
            {"lr": 0.05},
            {"lr": 0.05, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
            {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
            {"lr": 0.05, "momentum": 0.5, "maximize": True},
        ),
        WITH_FUSED,
    ),
    Rule(
        "adam",
        pn.optim.adam,
        torch.optim.Adam,
        (
            {},
            {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
            {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
            {"lr": 0.01, "maximize": True, "weight_decay": 0.05},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        WITH_FUSED,
        {"eps": 0.0},
    ),
    Rule(
        "adamw",
        pn.optim.adamw,
        torch.optim.AdamW,
        (
            {},
            {"lr": 0.01, "weight_decay": 0.3},
            {"lr": 0.01, "amsgrad": True, "betas": (0.5, 0.9)},
            {"lr": 0.01, "maximize": True},
        ),
        WITH_FUSED,
        {"eps": 0.0, "weight_decay": 0.0},
    ),
    Rule(
        "rmsprop",
        pn.optim.rmsprop,
        torch.optim.RMSprop,
        (
            {},
            {"lr": 0.01, "momentum": 0.9},
            {"lr": 0.01, "centered": True, "weight_decay": 0.1},
            {"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True},
            {"lr": 0.01, "maximize": True},
        ),
        scale_invariant={"eps": 0.0},
    ),
    Rule(
        "adagrad",
        pn.optim.adagrad,
        torch.optim.Adagrad,
        (
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},
            {"lr": 0.05, "initial_accumulator_value": 0.5, "eps": 1e-6},
            {"lr": 0.1, "maximize": True},
        ),
        WITH_FUSED,
        {"eps": 0.0},
    ),
    Rule(
        "adadelta",
        pn.optim.adadelta,
        torch.optim.Adadelta,
        (
            {},
            {"lr": 0.5, "rho": 0.5, "weight_decay": 0.1},
            {"eps": 1e-4, "maximize": True},
        ),
    ),
    Rule(
        "adamax",
        pn.optim.adamax,
        torch.optim.Adamax,
        (
            {},
            {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1},
            {"lr": 0.01, "maximize": True},
        ),
        scale_invariant={"eps": 0.0},
    ),
    Rule(
        "nadam",
        pn.optim.nadam,
        torch.optim.NAdam,
        (
            {},
            {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": 0.01, "betas": (0.8, 0.9), "maximize": True},
        ),
        scale_invariant={"eps": 0.0},
    ),
    Rule(
        "radam",
        pn.optim.radam,
        torch.optim.RAdam,
        (
            {},
            {"lr": 0.01, "betas": (0.9, 0.9), "weight_decay": 0.1},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": 0.01, "maximize": True},
        ),
    ),
    Rule(
        "adafactor",
        pn.optim.adafactor,
        torch.optim.Adafactor,
        (
            {},
            {"lr": 0.01, "weight_decay": 0.1, "eps": (1e-30, 1e-3)},
            {"lr": 0.01, "d": 2.0, "beta2_decay": -0.5},
            {"lr": 0.01, "maximize": True},
        ),
    ),
    Rule(
        "lion",
        pn.optim.lion,
        LionReference,
        (
            {},
            {"lr": 1e-3, "betas": (0.8, 0.9), "weight_decay": 0.1},
            {"lr": 1e-3, "maximize": True},
        ),
        ({},),
        {},
    ),
    Rule(
        "lamb",
        pn.optim.lamb,
        LambReference,
        (
            {},
            {"lr": 0.01, "weight_decay": 0.1},
            {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-8, "maximize": True},
        ),
        ({},),
        {"eps": 0.0},
    ),
)
CASES = [
    pytest.param(rule, kw, id=f"{rule.name}-{i}")
    for rule in RULES
    for i, kw in enumerate(rule.grid)
]


def problem(dtype: torch.dtype = torch.float64, seed: int = 0) -> pn.Params:
    """A small tree with every leaf kind the rules meet: matrices, a vector, a 3-d block, a scalar."""
    g = torch.Generator().manual_seed(seed)
    return pn.Params(
        {
            "0": {
                "weight": torch.randn(4, 3, generator=g, dtype=dtype),
                "bias": torch.randn(4, generator=g, dtype=dtype),
            },
            "1": {"weight": torch.randn(2, 2, 2, generator=g, dtype=dtype)},
            "scale": torch.randn((), generator=g, dtype=dtype),
        }
    )


def gradient(p: torch.Tensor, step: int) -> torch.Tensor:
    """A deterministic, state-dependent gradient so that errors feed back into later steps."""
    return torch.sin(3.0 * p) + 0.3 * p + 0.1 * math.cos(step)


def run_purenn(opt: pn.optim.GradientTransformation, params: pn.Params, steps: int) -> pn.Params:
    state = opt.init(params)
    for t in range(steps):
        grads = pn.tree.map(lambda p, t=t: gradient(p, t), params)
        params, state = pn.step(opt, params, grads, state)
    return params


def run_torch(cls: type[torch.optim.Optimizer], params: pn.Params, steps: int, **kw) -> pn.Params:
    tensors = [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]
    opt = cls(tensors, **kw)
    for t in range(steps):
        for p in tensors:
            p.grad = gradient(p.detach(), t)
        opt.step()
    return pn.tree.unflatten(pn.tree.structure(params), [p.detach() for p in tensors])


TOLERANCE = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-6, "atol": 1e-6},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rule, kw", CASES)
def test_trajectory_matches_torch_optim_for_loop_foreach_and_fused(
    rule, kw, dtype, assert_tree_close
):
    params = problem(dtype)
    ours = run_purenn(rule.make(**kw), params, steps=50)
    for variant in rule.variants:
        reference = run_torch(rule.twin, params, steps=50, **variant, **kw)
        assert_tree_close(ours, reference, **TOLERANCE[dtype])
    assert not pn.tree.allclose(ours, params), "the trajectory should move the params"


@pytest.mark.parametrize("rule, kw", CASES)
def test_update_is_pure_deterministic_and_structured(rule, kw):
    opt = rule.make(**kw)
    params = problem(torch.float32)
    state = opt.init(params)
    grads = pn.tree.map(lambda p: gradient(p, 0), params)
    for _ in range(2):  # the second update exercises the non-initial branches
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
        state = new_state
    assert int(state.count) == 2


@st.composite
def random_params(draw) -> pn.Params:
    """A random tree: 1-4 leaves of rank 0-3, each float32 or float64, with seeded values."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    leaves = {}
    for i in range(draw(st.integers(1, 4))):
        shape = draw(st.lists(st.integers(1, 4), max_size=3))
        dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        leaves[f"p{i}"] = torch.randn(shape, generator=g, dtype=dtype)
    return pn.Params({"a": leaves}) if draw(st.booleans()) else pn.Params(leaves)


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
@given(data=st.data())
def test_random_trees_and_settings_keep_updates_pure_finite_and_shaped(rule, data):
    params = data.draw(random_params())
    opt = rule.make(**data.draw(st.sampled_from(rule.grid)))
    state = opt.init(params)
    for step in range(2):
        grads = pn.tree.map(lambda p, step=step: gradient(p, step), params)
        before = [(leaf.clone(), leaf._version) for leaf in pn.tree.leaves((grads, state, params))]
        updates, new_state = opt.update(grads, state, params)
        for (old, version), leaf in zip(
            before, pn.tree.leaves((grads, state, params)), strict=True
        ):
            assert leaf._version == version and torch.equal(old, leaf)
        assert pn.tree.structure(new_state) == pn.tree.structure(state)
        for u, p in zip(pn.tree.leaves(updates), pn.tree.leaves(params), strict=True):
            assert (u.shape, u.dtype) == (p.shape, p.dtype) and bool(torch.isfinite(u).all())
        params, state = pn.apply_updates(params, updates), new_state


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
def test_every_state_is_named_and_reads_its_count_and_hyperparameters(rule):
    params = problem(torch.float32)
    opt = rule.make(**rule.grid[-1])
    state = opt.init(params)
    params, state = pn.step(opt, params, pn.tree.map(lambda p: gradient(p, 0), params), state)
    assert type(state).__name__.lower() == rule.name.removesuffix("w") + "state"
    assert attrs.has(type(state)) and state.count.dtype == torch.int64 and int(state.count) == 1
    assert float(state.hyperparams["lr"]) == rule.grid[-1].get(
        "lr", float(opt.init(params).hyperparams["lr"])
    )
    for value in state.hyperparams.values():
        assert value.dtype == torch.float64 and value.shape == ()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.count = torch.tensor(0)
    table = str(pn.tree.summary(state))
    assert "hyperparams.lr" in table and all(path in table for path in pn.tree.paths(state))


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
def test_a_non_finite_gradient_propagates_exactly_as_in_torch(rule):
    """Rules do not filter NaN or inf (as torch.optim); `apply_if_finite` is the filter."""
    params = problem(torch.float64)
    kw = rule.grid[-1]
    bad = torch.sin(3.0 * params["0.weight"])
    bad[1, 2] = float("nan")
    bad[3, 0] = float("inf")
    grads = pn.tree.set(pn.tree.map(lambda p: gradient(p, 0), params), "0.weight", bad)
    opt = rule.make(**kw)
    ours, _ = pn.step(opt, params, grads, opt.init(params))
    tensors = [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]
    twin = rule.twin(tensors, **kw)
    for p, g in zip(tensors, pn.tree.leaves(grads), strict=True):
        p.grad = g.clone()
    twin.step()
    reference = pn.tree.unflatten(pn.tree.structure(params), [p.detach() for p in tensors])
    for a, b in zip(pn.tree.leaves(ours), pn.tree.leaves(reference), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)
    assert not torch.isfinite(ours["0.weight"]).all()


@pytest.mark.parametrize("rule, kw", CASES)
def test_zero_learning_rate_leaves_params_unchanged(rule, kw):
    kw = {**kw, "lr": 0.0}
    params = problem(torch.float64)
    pn.testing.assert_tree_equal(run_purenn(rule.make(**kw), params, steps=3), params)


@given(lr=st.floats(1e-6, 10.0), seed=st.integers(0, 2**31 - 1))
def test_plain_sgd_is_exactly_p_minus_lr_g(lr, seed):
    params = problem(torch.float32, seed)
    grads = pn.tree.map(lambda p: gradient(p, seed), params)
    opt = pn.optim.sgd(lr)
    new, _ = pn.step(opt, params, grads, opt.init(params))
    pn.testing.assert_tree_equal(new, pn.tree.map(lambda p, g: p - lr * g, params, grads))


INVARIANT = [pytest.param(rule, id=rule.name) for rule in RULES if rule.scale_invariant is not None]
# Rules whose every first-step element moves by at most lr (RMSprop's moves by lr / sqrt(1 - alpha),
# NAdam's by up to ~1.9 lr, RAdam's first steps are momentum SGD, LAMB rescales by a norm ratio).
FIRST_STEP_BOUNDED = {"adam", "adamw", "adamax", "adagrad", "lion"}


@pytest.mark.parametrize("rule", INVARIANT)
@given(c=st.floats(1e-2, 1e2), seed=st.integers(0, 2**31 - 1))
def test_invariant_to_gradient_scale_and_first_step_bounded_by_lr(rule, c, seed):
    params = problem(torch.float64, seed)
    grads = pn.tree.map(lambda p: gradient(p, seed), params)
    opt = rule.make(lr=0.1, **rule.scale_invariant)  # eps breaks exact invariance by eps/|g|
    state = scaled_state = opt.init(params)
    for step in range(3):
        updates, state = opt.update(grads, state, params)
        scaled, scaled_state = opt.update(pn.tree.scale(grads, c), scaled_state, params)
        pn.testing.assert_tree_close(scaled, updates, rtol=1e-12, atol=1e-15)
        if rule.name in FIRST_STEP_BOUNDED and step == 0:
            assert all(float(u.abs().max()) <= 0.1 * (1 + 1e-12) for u in pn.tree.leaves(updates))
        grads = pn.tree.map(lambda p, g: 0.5 * g + torch.cos(p), params, grads)


def test_learning_rate_schedule_sees_the_count_from_zero():
    seen = []

    def schedule(count):
        seen.append(int(count))
        return 0.1 / (1 + count.double())  # int64 / int would give float32

    params = problem(torch.float64)
    ours = run_purenn(pn.optim.sgd(schedule, momentum=0.9), params, steps=4)
    assert seen == [0, 0, 1, 2, 3]  # init records lr(0) in the state, then one call per update
    tensors = [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]
    opt = torch.optim.SGD(tensors, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 1 / (1 + n))
    for t in range(4):
        for p in tensors:
            p.grad = gradient(p.detach(), t)
        opt.step()
        sched.step()
    pn.testing.assert_tree_close(
        ours,
        pn.tree.unflatten(pn.tree.structure(params), [p.detach() for p in tensors]),
        rtol=1e-12,
        atol=1e-14,
    )


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
def test_every_rule_takes_a_schedule_like_torch_with_a_changing_group_lr(rule):
    schedule = pn.schedules.warmup_cosine_decay(0.001, 0.02, warmup_steps=4, decay_steps=12)
    kw = rule.grid[-1]
    params = problem(torch.float64)
    ours = run_purenn(rule.make(**{**kw, "lr": schedule}), params, steps=12)
    tensors = [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]
    twin = rule.twin(tensors, **{**kw, "lr": 1.0})
    for t in range(12):
        twin.param_groups[0]["lr"] = float(schedule(t))
        for p in tensors:
            p.grad = gradient(p.detach(), t)
        twin.step()
    reference = pn.tree.unflatten(pn.tree.structure(params), [p.detach() for p in tensors])
    pn.testing.assert_tree_close(ours, reference, **TOLERANCE[torch.float64])


def test_state_fields_are_named_and_inspectable():
    params = problem(torch.float32)
    state = pn.optim.adam(amsgrad=True).init(params)
    assert isinstance(state, pn.optim.AdamState)
    assert state.count.dtype == torch.int64 and int(state.count) == 0
    assert pn.tree.structure(state.exp_avg) == pn.tree.structure(params)
    assert state.max_exp_avg_sq is not None and pn.optim.adam().init(params).max_exp_avg_sq is None
    assert pn.optim.sgd(0.1).init(params).momentum_buffer is None
    assert "exp_avg_sq.0.weight" in repr(state) and "count" in str(pn.tree.summary(state))


def test_chain_of_one_equals_the_rule_and_chains_associate():
    params = problem(torch.float64)
    a, b, c = pn.optim.sgd(0.1, momentum=0.9), pn.optim.adam(0.01), pn.optim.sgd(0.5)
    pn.testing.assert_tree_equal(run_purenn(pn.optim.chain(b), params, 5), run_purenn(b, params, 5))
    nested = run_purenn(pn.optim.chain(a, pn.optim.chain(b, c)), params, 5)
    pn.testing.assert_tree_equal(nested, run_purenn(pn.optim.chain(a, b, c), params, 5))
    with pytest.raises(
        TypeError, match="chain: rule 1 must be a GradientTransformation, got function"
    ):
        pn.optim.chain(a, lambda g: g)
    with pytest.raises(
        pn.StateError, match="state must be the tuple from its init, got a tuple of 1"
    ):
        pn.optim.chain(a, b).update(params, (a.init(params),), params)


def test_user_defined_rule_with_empty_state():
    def init(params):
        return pn.optim.EmptyState()

    def update(grads, state, params=None):
        return pn.tree.scale(grads, -0.5), state

    rule = pn.optim.GradientTransformation(init=init, update=update)
    params = problem(torch.float64)
    new, state = pn.step(rule, params, params, rule.init(params))
    pn.testing.assert_tree_equal(new, pn.tree.scale(params, 0.5))
    assert pn.tree.leaves(state) == [] and isinstance(state, pn.optim.EmptyState)
    assert state == pn.optim.EmptyState() and hash(state) == hash(pn.optim.EmptyState())
    assert state != pn.optim.GradientTransformation(init, update) and state != ()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: pn.optim.sgd(-0.1), "Invalid learning rate: -0.1"),
        (lambda: pn.optim.sgd(0.1, momentum=-1), "Invalid momentum value: -1"),
        (lambda: pn.optim.sgd(0.1, weight_decay=-1), "Invalid weight_decay value: -1"),
        (
            lambda: pn.optim.sgd(0.1, nesterov=True),
            "Nesterov momentum requires a momentum and zero dampening",
        ),
        (
            lambda: pn.optim.sgd(0.1, momentum=0.9, dampening=0.1, nesterov=True),
            "Nesterov momentum requires",
        ),
        (lambda: pn.optim.adam(betas=(1.0, 0.999)), r"Invalid beta parameter at index 0: 1\.0"),
        (lambda: pn.optim.adamw(betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0\.1"),
        (lambda: pn.optim.adam(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (lambda: pn.optim.adamw(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (lambda: pn.optim.adam(betas=(0.9,)), r"betas must be a pair \(beta1, beta2\)"),
        (lambda: pn.optim.adam(lr=torch.ones(2)), r"Tensor lr must be 1-element"),
        (lambda: pn.optim.rmsprop(alpha=-0.1), r"Invalid alpha value: -0\.1"),
        (lambda: pn.optim.rmsprop(momentum=-0.1), r"Invalid momentum value: -0\.1"),
        (lambda: pn.optim.adagrad(lr_decay=-1.0), r"Invalid lr_decay value: -1\.0"),
        (
            lambda: pn.optim.adagrad(initial_accumulator_value=-1.0),
            r"Invalid initial_accumulator_value value: -1\.0",
        ),
        (lambda: pn.optim.adadelta(rho=1.5), r"Invalid rho value: 1\.5"),
        (lambda: pn.optim.adamax(betas=(0.9, 1.0)), r"Invalid beta parameter at index 1: 1\.0"),
        (lambda: pn.optim.nadam(momentum_decay=-1.0), r"Invalid momentum_decay value: -1\.0"),
        (lambda: pn.optim.radam(eps=-1.0), r"Invalid epsilon value: -1\.0"),
        (lambda: pn.optim.adafactor(lr=-1.0), r"Learning rate should be >= 0 but is: -1\.0"),
        (lambda: pn.optim.adafactor(d=0.5), r"Clipping threshold d should be >= 1 but is: 0\.5"),
        (lambda: pn.optim.adafactor(eps=1e-3), r"eps must be a pair \(eps1 or None, eps2\)"),
        (lambda: pn.optim.lion(betas=(0.9, 1.0)), r"Invalid beta parameter at index 1: 1\.0"),
        (lambda: pn.optim.lion(weight_decay=-1.0), r"Invalid weight_decay value: -1\.0"),
        (lambda: pn.optim.lamb(lr=-1.0), r"Invalid learning rate: -1\.0"),
        (lambda: pn.optim.lamb(eps=-1.0), r"Invalid epsilon value: -1\.0"),
    ],
)
def test_invalid_hyperparameters_use_torch_optim_wording(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def _param():
    return [torch.zeros(1, requires_grad=True)]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: pn.optim.sgd(-0.1), lambda: torch.optim.SGD(_param(), lr=-0.1)),
        (
            lambda: pn.optim.sgd(0.1, momentum=-1.0),
            lambda: torch.optim.SGD(_param(), lr=0.1, momentum=-1.0),
        ),
        (
            lambda: pn.optim.sgd(0.1, nesterov=True),
            lambda: torch.optim.SGD(_param(), lr=0.1, nesterov=True),
        ),
        (
            lambda: pn.optim.adam(betas=(1.0, 0.9)),
            lambda: torch.optim.Adam(_param(), betas=(1.0, 0.9)),
        ),
        (lambda: pn.optim.adamw(eps=-1.0), lambda: torch.optim.AdamW(_param(), eps=-1.0)),
        (
            lambda: pn.optim.adam(weight_decay=-1.0),
            lambda: torch.optim.Adam(_param(), weight_decay=-1.0),
        ),
        *[
            (lambda ours=ours, kw=kw: ours(**kw), lambda twin=twin, kw=kw: twin(_param(), **kw))
            for ours, twin, bad in [
                (
                    pn.optim.rmsprop,
                    torch.optim.RMSprop,
                    ["lr", "alpha", "eps", "momentum", "weight_decay"],
                ),
                (
                    pn.optim.adagrad,
                    torch.optim.Adagrad,
                    ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
                ),
                (pn.optim.adadelta, torch.optim.Adadelta, ["lr", "rho", "eps", "weight_decay"]),
                (pn.optim.adamax, torch.optim.Adamax, ["lr", "eps", "weight_decay"]),
                (
                    pn.optim.nadam,
                    torch.optim.NAdam,
                    ["lr", "eps", "weight_decay", "momentum_decay"],
                ),
                (pn.optim.radam, torch.optim.RAdam, ["lr", "eps", "weight_decay"]),
                (
                    pn.optim.adafactor,
                    torch.optim.Adafactor,
                    ["lr", "beta2_decay", "d", "weight_decay"],
                ),
            ]
            for name in bad
            for kw in [
                {name: 2.0 if name in ("rho", "beta2_decay") else (0.5 if name == "d" else -1.5)}
            ]
        ],
        *[
            (lambda ours=ours, b=b: ours(betas=b), lambda twin=twin, b=b: twin(_param(), betas=b))
            for ours, twin in [
                (pn.optim.adamax, torch.optim.Adamax),
                (pn.optim.nadam, torch.optim.NAdam),
                (pn.optim.radam, torch.optim.RAdam),
            ]
            for b in [(1.0, 0.9), (0.9, -0.5)]
        ],
        (
            lambda: pn.optim.adafactor(eps=(-1.0, 1e-3)),
            lambda: torch.optim.Adafactor(_param(), eps=(-1.0, 1e-3)),
        ),
        (
            lambda: pn.optim.adafactor(eps=(None, -1.0)),
            lambda: torch.optim.Adafactor(_param(), eps=(None, -1.0)),
        ),
    ],
)
def test_invalid_hyperparameter_messages_equal_torch_optims(ours, theirs):
    with pytest.raises(ValueError) as ours_error:
        ours()
    with pytest.raises(ValueError) as theirs_error:
        theirs()
    assert str(ours_error.value) == str(theirs_error.value)


def test_lr_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="lr must be a float, a 1-element tensor or a schedule"):
        pn.optim.adam(lr="0.1")


def test_grads_that_do_not_fit_the_state_are_rejected_naming_the_path():
    params = problem(torch.float32)
    opt = pn.optim.adam()
    state = opt.init(params)
    missing = pn.Params({"0": params["0"], "1": params["1"]})
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"grads does not have the structure of the optimizer state.*at 'scale'",
    ):
        opt.update(missing, state, params)
    wrong_shape = pn.tree.set(params, "0.bias", torch.zeros(5))
    with pytest.raises(
        pn.ShapeError, match=r"adam: grads '0\.bias' has shape \(5,\) but the param has \(4,\)"
    ):
        opt.update(wrong_shape, state, params)
    wrong_dtype = pn.tree.map(lambda p: p.double(), params)
    with pytest.raises(
        pn.ShapeError,
        match=r"adam: grads '0\.weight' has dtype torch\.float64 but the param has torch\.float32",
    ):
        opt.update(wrong_dtype, state, params)


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
def test_state_from_another_rule_or_tree_is_rejected(rule):
    params = problem(torch.float32)
    opt = rule.make(**rule.grid[-1])
    other_rule = pn.optim.sgd(0.1) if rule.name != "sgd" else pn.optim.adam()
    with pytest.raises(pn.StateError, match=rf"{rule.name}: got a \w+State as the optimizer state"):
        opt.update(params, other_rule.init(params), params)
    other_params = pn.Params({"0": params["0"], "1": params["1"], "extra": torch.zeros(3)})
    with pytest.raises(pn.TreeMismatchError, match=r"'(extra|scale)'"):
        opt.update(params, opt.init(other_params), params)


@pytest.mark.parametrize(
    "rule, made_by, message",
    [
        (optim.adam(amsgrad=True), optim.adam(), "adam: the state was made with amsgrad=False"),
        (
            optim.adamw(),
            optim.adam(),
            "adamw: the state was made with decoupled_weight_decay=False",
        ),
        (optim.sgd(0.1, momentum=0.9), optim.sgd(0.1), "sgd: the state was made with momentum=0,"),
        (
            optim.sgd(0.1),
            optim.sgd(0.1, momentum=0.9),
            "sgd: the state was made with momentum=non-zero",
        ),
        (
            optim.rmsprop(centered=True),
            optim.rmsprop(),
            "rmsprop: the state was made with centered=False",
        ),
        (
            optim.rmsprop(momentum=0.9),
            optim.rmsprop(),
            "rmsprop: the state was made with momentum=0,",
        ),
        (
            optim.radam(decoupled_weight_decay=True),
            optim.radam(),
            "radam: the state was made with decoupled",
        ),
        (optim.lion(maximize=True), optim.lion(), "lion: the state was made with maximize=False"),
        (optim.ema(0.9, debias=False), optim.ema(0.9), "ema: the state was made with debias=True"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_state_made_with_other_settings_is_rejected(rule, made_by, message):
    # The state fixes what shapes it (buffers, flags): following it silently would run plain
    # Adam under adam(amsgrad=True), or crash inside the kernel for a missing momentum buffer.
    params = problem(torch.float32)
    with pytest.raises(pn.StateError, match=re.escape(message)):
        rule.update(params, made_by.init(params), params)


def test_integer_params_and_missing_params_for_weight_decay_are_rejected():
    with pytest.raises(
        TypeError,
        match=r"adam: param 'steps' has dtype torch\.int64; update rules need floating-point",
    ):
        pn.optim.adam().init(
            pn.Params({"w": torch.zeros(2), "steps": torch.zeros(2, dtype=torch.int64)})
        )
    params = problem(torch.float32)
    opt = pn.optim.adamw()
    with pytest.raises(
        pn.TreeMismatchError, match=r"adamw: this rule needs params \(for weight decay\)"
    ):
        opt.update(params, opt.init(params))


def test_step_rejects_non_rules_and_mutated_inputs():
    params = problem(torch.float32)
    with pytest.raises(TypeError, match="opt must be a GradientTransformation, got function"):
        pn.step(lambda g: g, params, params, None)
    opt = pn.optim.adam()
    state = opt.init(params)
    state.exp_avg["0.bias"].add_(1.0)
    with pytest.raises(pn.MutatedError, match=r"opt_state\.exp_avg\.0\.bias was modified in place"):
        pn.step(opt, params, params, state)


def test_apply_updates_checks_shapes_and_keeps_dtypes():
    params = pn.Params({"w": torch.ones(3, dtype=torch.bfloat16)})
    new = pn.apply_updates(params, pn.Params({"w": torch.full((3,), 0.5, dtype=torch.float32)}))
    assert new["w"].dtype == torch.bfloat16 and torch.equal(new["w"].float(), torch.full((3,), 1.5))
    with pytest.raises(
        pn.ShapeError, match=r"apply_updates: update 'w' has shape \(1,\) but the param has \(3,\)"
    ):
        pn.apply_updates(params, pn.Params({"w": torch.ones(1, dtype=torch.bfloat16)}))
    with pytest.raises(
        pn.TreeMismatchError, match=r"updates does not have the structure of params: at 'v'"
    ):
        pn.apply_updates(params, pn.Params({"w": torch.ones(3), "v": torch.ones(1)}))


def test_hyperparameters_live_in_state_and_can_be_changed_mid_training():
    params = problem(torch.float64)
    opt = pn.optim.adamw(0.01, weight_decay=0.1)
    state = opt.init(params)
    assert {k: float(v) for k, v in state.hyperparams.items()} == {
        "lr": 0.01,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.1,
    }
    tensors = [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]
    twin = torch.optim.AdamW(tensors, lr=0.01, weight_decay=0.1)
    for t in range(6):
        if t == 3:
            state = pn.tree.set(state, "hyperparams.lr", torch.tensor(0.002, dtype=torch.float64))
            twin.param_groups[0]["lr"] = 0.002
        grads = pn.tree.map(lambda p, t=t: gradient(p, t), params)
        params, state = pn.step(opt, params, grads, state)
        for p in tensors:
            p.grad = gradient(p.detach(), t)
        twin.step()
    assert float(state.hyperparams["lr"]) == 0.002 and state.decoupled_weight_decay
    reference = pn.tree.unflatten(pn.tree.structure(params), [p.detach() for p in tensors])
    pn.testing.assert_tree_close(params, reference, rtol=1e-12, atol=1e-14)


class CountingBackend:
    """A torch.compile backend that runs graphs eagerly and counts how many it was given."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def compiled_trajectory(opt, params, steps: int):
    backend = CountingBackend()
    step = pn.jit(lambda p, s, g: pn.step(opt, p, g, s), backend=backend)
    state = opt.init(params)
    for t in range(steps):
        params, state = step(params, state, pn.tree.map(lambda p, t=t: gradient(p, t), params))
    return params, state, backend.graphs


@given(
    decay=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_moving_average_compiled_form_equals_lerp_to_rounding_and_is_exact_at_both_ends(
    decay, seed, dtype
):
    gen = torch.Generator().manual_seed(seed)
    average = torch.randn(64, generator=gen, dtype=dtype)
    x = torch.randn(64, generator=gen, dtype=dtype)
    eager = moving_average(average, x, decay, 1.0 - decay)
    assert torch.equal(eager, torch.lerp(average, x, 1.0 - decay))  # torch.optim's op, eagerly
    # The form traced under torch.compile (test_scalars checks the generated loop itself).
    with mock.patch("torch.compiler.is_compiling", return_value=True):
        compiled_form = moving_average(average, x, decay, 1.0 - decay)
        assert torch.equal(moving_average(average, x, 0.0, 1.0), x)
        assert torch.equal(moving_average(average, x, 1.0, 0.0), average)
    torch.testing.assert_close(compiled_form, eager)


@pytest.mark.slow
def test_a_compiled_step_with_a_schedule_compiles_once():
    schedule = pn.schedules.warmup_cosine_decay(0.0, 0.01, warmup_steps=5, decay_steps=20)
    params = problem(torch.float32)
    compiled, state, graphs = compiled_trajectory(pn.optim.adam(schedule), params, 20)
    assert graphs == 1  # the count and the learning rate are tensors in the state
    assert float(state.hyperparams["lr"]) == float(schedule(19))
    eager = run_purenn(pn.optim.adam(schedule), params, 20)
    pn.testing.assert_tree_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_a_rule_unpacks_like_a_pair():
    init, update = pn.optim.sgd(0.1)
    params = pn.Params({"w": torch.ones(2)})
    updates, _ = update(pn.Params({"w": torch.ones(2)}), init(params), params)
    assert torch.equal(updates["w"], torch.full((2,), -0.1))


COMPLEX_TWINS = [
    (pn.optim.sgd, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
    (pn.optim.adam, torch.optim.Adam, {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1}),
    (pn.optim.adamw, torch.optim.AdamW, {"lr": 0.1}),
    (pn.optim.rmsprop, torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5}),
    (pn.optim.adagrad, torch.optim.Adagrad, {"lr": 0.1}),
    (pn.optim.adamax, torch.optim.Adamax, {"lr": 0.1}),
    (pn.optim.nadam, torch.optim.NAdam, {"lr": 0.1}),
    (pn.optim.radam, torch.optim.RAdam, {"lr": 0.1}),
    (pn.optim.adadelta, torch.optim.Adadelta, {"lr": 1.0}),
]


@pytest.mark.parametrize("packed", [False, True], ids=["per_leaf", "packed"])
@pytest.mark.parametrize(
    ("ours", "twin", "kwargs"), COMPLEX_TWINS, ids=[f"{r.__name__}" for r, _, _ in COMPLEX_TWINS]
)
def test_complex_params_update_as_torch_optim_does(ours, twin, kwargs, packed):
    # torch.optim treats a complex param as pairs of reals (view_as_real); so must the rules.
    gen = torch.Generator().manual_seed(0)

    def draw(*shape):
        return torch.randn(shape, dtype=torch.complex128, generator=gen)

    start = {"w": draw(3, 2), "s": draw()}
    params = pn.Params({k: v.clone() for k, v in start.items()})
    params = pn.tree.pack(params) if packed else params
    opt = ours(**kwargs)
    state = opt.init(params)
    tensors = [torch.nn.Parameter(v.clone()) for v in start.values()]
    reference = twin(tensors, **kwargs)
    for _ in range(4):
        grads = {"w": draw(3, 2), "s": draw()}
        given_grads = pn.Params(grads)
        params, state = pn.step(
            opt, params, pn.tree.pack(given_grads) if packed else given_grads, state
        )
        for p, g in zip(tensors, grads.values(), strict=True):
            p.grad = g.clone()
        reference.step()
    for p, name in zip(tensors, start, strict=True):
        assert params[name].dtype == torch.complex128
        torch.testing.assert_close(params[name], p.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", [pn.optim.lion(0.1), pn.optim.lamb(0.1), pn.optim.adafactor()])
def test_rules_without_complex_semantics_refuse_complex_params(rule):
    params = pn.Params({"ok": torch.ones(2), "z": torch.ones(2, 2, dtype=torch.complex64)})
    with pytest.raises(
        TypeError, match=r"param 'z' has dtype torch\.complex64; \w+ does not support complex"
    ):
        rule.init(params)


@pytest.mark.parametrize(
    "rule",
    [
        pn.optim.adamw(0.1),
        pn.optim.sgd(0.1, momentum=0.9),
        pn.optim.lion(0.1, weight_decay=0.1),
        pn.optim.lamb(0.1),
    ],
    ids=["adamw", "sgd", "lion", "lamb"],
)
def test_params_that_do_not_fit_the_state_are_named_not_broadcast(rule):
    grads = pn.Params({"w": torch.ones(2)})
    state = rule.init(grads)
    with pytest.raises(
        pn.ShapeError, match=r"params 'w' has shape \(2, 1\) but its optimizer state has \(2,\)"
    ):
        rule.update(grads, state, pn.Params({"w": torch.ones(2, 1)}))
    with pytest.raises(
        pn.ShapeError,
        match=r"params 'w' has dtype torch\.float64 but its optimizer state has torch\.float32",
    ):
        rule.update(grads, state, pn.Params({"w": torch.ones(2, dtype=torch.float64)}))


def test_a_term_the_rule_was_built_without_cannot_be_switched_on_through_the_state():
    params = grads = pn.Params({"w": torch.ones(3)})
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    for rule, name in (
        (pn.optim.adam(0.1), "weight_decay"),
        (pn.optim.lion(0.1), "weight_decay"),
        (pn.optim.sgd(0.1), "momentum"),
        (pn.optim.rmsprop(0.1), "momentum"),
    ):
        state = pn.tree.set(rule.init(params), f"hyperparams.{name}", f64(0.5))
        with pytest.raises(
            pn.StateError, match=rf"built with {name}=0, which leaves that term out"
        ):
            rule.update(grads, state, params)
    # Built with the term, it can go to 0 and back.
    rule = pn.optim.adamw(0.1, weight_decay=0.1)
    state = pn.tree.set(rule.init(params), "hyperparams.weight_decay", f64(0.0))
    state = pn.tree.set(rule.update(grads, state, params)[1], "hyperparams.weight_decay", f64(0.5))
    rule.update(grads, state, params)


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (pn.optim.sgd, {"lr": 0.1}, "weight_decay"),
        (pn.optim.sgd, {"lr": 0.1}, "momentum"),
        (pn.optim.lion, {"lr": 0.1}, "weight_decay"),
        (pn.optim.rmsprop, {"lr": 0.01}, "momentum"),
    ],
)
def test_inject_hyperparams_keeps_a_zero_term_settable_and_exact(factory, kwargs, name):
    params = problem(torch.float64)
    opt = pn.optim.inject_hyperparams(factory)(**kwargs, **{name: 0.0})
    plain = factory(**kwargs, **{name: 0.0})
    state, plain_state = opt.init(params), plain.init(params)
    ours, theirs = params, params
    for t in range(3):
        grads = pn.tree.map(lambda p, t=t: gradient(p, t), params)
        ours, state = pn.step(opt, ours, grads, state)
        theirs, plain_state = pn.step(plain, theirs, grads, plain_state)
    # At 0 the kept term adds nothing (RMSprop's buffer reorders a product: one rounding).
    pn.testing.assert_tree_close(ours, theirs, rtol=1e-15, atol=1e-16)
    state = pn.tree.set(state, f"hyperparams.{name}", torch.tensor(0.5, dtype=torch.float64))
    grads = pn.tree.map(lambda p: gradient(p, 3), params)
    switched = factory(**kwargs, **{name: 0.5})
    ours, _ = pn.step(opt, ours, grads, state)
    assert not pn.tree.allclose(ours, pn.step(plain, theirs, grads, plain_state)[0])
    if name == "weight_decay":  # the step equals one of a rule built with 0.5, from the same state
        expected, _ = pn.step(
            switched, theirs, grads, pn.tree.set(plain_state, f"hyperparams.{name}", 0.5)
        )
        pn.testing.assert_tree_close(ours, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "rule",
    [pn.optim.sgd(0.1), pn.optim.adam(0.1), pn.optim.lion(0.1), pn.optim.rmsprop(0.01)],
    ids=["sgd", "adam", "lion", "rmsprop"],
)
def test_an_eager_step_vmaps_over_an_ensemble_of_states(rule):
    # The check that a left-out term stays at 0 must not read vmapped hyperparameters.
    members = [problem(torch.float64, seed=s) for s in range(3)]
    params = pn.tree.stack(members)
    states = pn.tree.stack([rule.init(m) for m in members])
    grads = pn.tree.map(lambda p: gradient(p, 0), params)
    new, _ = torch.func.vmap(lambda p, g, s: pn.step(rule, p, g, s))(params, grads, states)
    for i, member in enumerate(members):
        alone, _ = pn.step(
            rule, member, pn.tree.map(lambda p: gradient(p, 0), member), rule.init(member)
        )
        pn.testing.assert_tree_close(pn.tree.unstack(new)[i], alone, rtol=1e-12, atol=1e-14)
