"""pn.jit: donation semantics, DonatedError, alias checks, equivalences, no recompilation, eager fallback."""

from __future__ import annotations

import math
import warnings

import attrs
import pytest
import torch

import purenn as pn


class CountingBackend:
    """A torch.compile backend that runs graphs eagerly and counts how many it was given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return gm.forward


def problem(n_leaves: int = 5, seed: int = 0) -> tuple[pn.Params, pn.Params]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 2, 2), (), (5,)]
    params = pn.Params(
        {f"l{i}": torch.randn(shapes[i % len(shapes)], generator=g) for i in range(n_leaves)}
    )
    grads = pn.tree.map(lambda p: torch.randn(p.shape, generator=g), params)
    return params, grads


OPT = pn.optim.adamw(1e-2, weight_decay=0.1)


def update(params, state, grads):
    return pn.step(OPT, params, grads, state)


def run(fn, params, state, grads, steps):
    for _ in range(steps):
        params, state = fn(params, state, grads)
    return params, state


def test_donated_outputs_reuse_the_donated_buffers_from_the_second_call():
    backend = CountingBackend()
    step = pn.jit(update, donate_argnums=(0, 1), backend=backend)
    params, grads = problem()
    params, state = step(params, OPT.init(params), grads)  # first call packs params and state
    before = (
        [b.data_ptr() for b in params._packed.buffers],
        [b.data_ptr() for b in state.exp_avg._packed.buffers],
    )
    leaf_ptrs = [leaf.data_ptr() for leaf in pn.tree.leaves(params)]
    params, state = step(params, state, grads)
    assert [b.data_ptr() for b in params._packed.buffers] == before[0]
    assert [b.data_ptr() for b in state.exp_avg._packed.buffers] == before[1]
    assert [leaf.data_ptr() for leaf in pn.tree.leaves(params)] == leaf_ptrs
    assert backend.graphs == 1 and step.cache_size == 1


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
def test_donated_arguments_are_dead_after_the_call(compile):
    step = pn.jit(update, donate_argnums=(0, 1), compile=compile, backend=CountingBackend())
    params, grads = problem()
    state = OPT.init(params)
    inner = state.exp_avg
    new_params, new_state = step(params, state, grads)
    message = r"argument 0 \(params\) was donated to update \(call 1\).*Use the value that call returned, or pass a copy"
    for use in (
        lambda: params["l0"],
        lambda: pn.tree.leaves(params),
        lambda: repr(params),
        lambda: len(params),
        lambda: pn.step(OPT, params, grads, new_state),
        lambda: step(params, new_state, grads),
        # Putting it into a new tree fails there, not at some later use of that tree.
        lambda: pn.Params({"inner": params}),
        lambda: pn.tree.set(new_params, "l0", params),
        lambda: pn.Params.from_state_dict({"a.b": params}),
        lambda: attrs.evolve(new_state, exp_avg=params),
    ):
        with pytest.raises(pn.DonatedError, match=message):
            use()
    with pytest.raises(
        pn.DonatedError, match=r"argument 1 \(state\) was donated to update \(call 1\)"
    ):
        _ = state.exp_avg
    with pytest.raises(pn.DonatedError, match=r"argument 1 \(state\)"):
        inner["l0"]  # a subtree taken out before the call shares the donated buffers
    pn.check_unmodified(grads)  # a non-donated argument stays usable
    assert pn.tree.paths(new_params) == ["l0", "l1", "l2", "l3", "l4"]


def test_donated_tensors_outside_purenn_trees_are_named_once_since_they_cannot_die():
    fn = pn.jit(lambda a: {"w": a["w"] + 1}, donate_argnums=0, compile=False)
    with pytest.warns(
        UserWarning, match=r"donated argument 0 \(a\)\['w'\] is not inside a pn\.Params"
    ):
        out = fn({"w": torch.zeros(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(out)  # the same variant: warned once
        params, grads = problem()
        step = pn.jit(update, donate_argnums=(0, 1), compile=False)
        step(params, OPT.init(params), grads)  # Params and states can be marked dead: no warning


def test_passing_a_dead_tree_names_the_argument_of_the_new_call():
    step = pn.jit(update, donate_argnums=(0, 1), backend=CountingBackend())
    params, grads = problem()
    state = OPT.init(params)
    step(params, state, grads)
    other = pn.jit(lambda g, p: pn.tree.add(g, p), backend=CountingBackend())
    with pytest.raises(
        pn.DonatedError,
        match=r"<lambda>: argument 1 \(p\) cannot be used: argument 0 \(params\) was donated to update \(call 1\)",
    ):
        other(grads, params)


def test_aliasing_is_refused_before_anything_runs():
    step = pn.jit(
        lambda a, b: (pn.tree.scale(a, 2.0), b), donate_argnums=(0,), backend=CountingBackend()
    )
    w = torch.ones(4)
    with pytest.raises(
        ValueError,
        match=r"donated inputs 'argument 0 \(a\)\.x' and 'argument 0 \(a\)\.y' share memory",
    ):
        step(pn.Params({"x": w, "y": w}), pn.Params({}))
    base = torch.ones(8)
    with pytest.raises(
        ValueError,
        match=r"donated input 'argument 0 \(a\)\.x' shares memory with the non-donated input 'argument 1 \(b\)\.z'",
    ):
        step(pn.Params({"x": base[:6]}), pn.Params({"z": base[4:]}))
    # Disjoint views of one storage are fine.
    out, _ = step(pn.Params({"x": base[:4]}), pn.Params({"z": base[4:]}))
    assert torch.equal(out["x"], torch.full((4,), 2.0))


@pytest.mark.filterwarnings("ignore:.*cannot be marked dead:UserWarning")
def test_calls_after_the_first_refuse_what_the_first_call_refuses():
    # Once a variant is built, calls take a faster path; it must keep every check.
    fn = pn.jit(lambda x, y: x * 2 + y, donate_argnums=0, backend=CountingBackend())
    fn(torch.ones(4), torch.ones(4))
    base = torch.ones(8)
    assert torch.equal(fn(base[:4], base[4:]), torch.full((4,), 3.0))  # disjoint views are fine
    with pytest.raises(
        ValueError,
        match=r"donated input 'argument 0 \(x\)' shares memory with the non-donated input 'argument 1 \(y\)'",
    ):
        fn(base[:4], base[2:6])
    with pytest.raises(ValueError, match=r"donated input 'argument 0 \(x\)' requires grad"):
        fn(torch.ones(4, requires_grad=True), torch.ones(4))
    step = pn.jit(update, donate_argnums=(0, 1), backend=CountingBackend())
    params, grads = problem()
    new_params, new_state = step(pn.tree.map(torch.clone, params), OPT.init(params), grads)
    step(new_params, new_state, grads)
    with pytest.raises(
        pn.DonatedError,
        match=r"update: argument 1 \(state\) cannot be used: argument 1 \(state\) was donated to update \(call 2\)",
    ):
        step(pn.tree.map(torch.clone, params), new_state, grads)
    fresh_params, fresh_state = step(pn.tree.map(torch.clone, params), OPT.init(params), grads)
    with pytest.raises(
        ValueError,
        match=r"donated inputs 'argument 0 \(params\)\.<packed float32 cpu buffer>' and "
        r"'argument 1 \(state\)\.exp_avg\.<packed float32 cpu buffer>' share memory",
    ):
        step(fresh_params, pn.tree.set(fresh_state, "exp_avg", fresh_params), grads)
    assert step.cache_size == 1


def test_donating_a_tensor_that_requires_grad_is_refused():
    step = pn.jit(lambda a: pn.tree.scale(a, 2.0), donate_argnums=0, backend=CountingBackend())
    with pytest.raises(ValueError, match=r"donated input 'argument 0 \(a\)\.w' requires grad"):
        step(pn.Params({"w": torch.ones(2, requires_grad=True)}))


def test_unusable_donated_buffer_warns_once_naming_the_path():
    step = pn.jit(lambda a: a["w"].sum(), donate_argnums=0, backend=CountingBackend())
    with pytest.warns(
        UserWarning,
        match=r"no output matches the shape, dtype and device of donated \['argument 0 \(a\)\.<packed float32 cpu buffer>'\]",
    ):
        step(pn.Params({"w": torch.ones(3)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(pn.Params({"w": torch.ones(3)}))


def test_results_with_donation_equal_results_without_bitwise():
    params, grads = problem(seed=1)
    donating = pn.jit(update, donate_argnums=(0, 1), backend=CountingBackend())
    plain = pn.jit(update, backend=CountingBackend())
    a = run(donating, pn.tree.map(torch.clone, params), OPT.init(params), grads, 4)
    b = run(plain, params, OPT.init(params), grads, 4)
    pn.testing.assert_tree_equal(a, b)
    # Compiled and eager agree to rounding (PROPERTIES 5): traced, Adam's moving average is a
    # convex sum where eager code calls lerp (optim._kernel.moving_average).
    eager = run(update, params, OPT.init(params), grads, 4)
    pn.testing.assert_tree_close(b, eager, rtol=1e-5, atol=1e-6)


def test_no_recompilation_across_steps_with_a_schedule_and_a_changed_lr():
    backend = CountingBackend()
    opt = pn.optim.sgd(lambda count: 0.1 / (1.0 + count.double()), momentum=0.9)
    step = pn.jit(lambda p, s, g: pn.step(opt, p, g, s), donate_argnums=(0, 1), backend=backend)
    params, grads = problem()
    state = opt.init(params)
    for i in range(20):
        params, state = step(params, state, grads)
        if i == 10:
            state = pn.tree.set(
                state, "hyperparams.momentum", torch.tensor(0.5, dtype=torch.float64)
            )
    assert backend.graphs == 1 and int(state.count) == 20


def test_changed_structure_builds_a_new_variant():
    backend = CountingBackend()
    fn = pn.jit(lambda p: pn.tree.scale(p, 3.0), backend=backend)
    fn(pn.Params({"a": torch.ones(2)}))
    fn(pn.Params({"a": torch.zeros(2)}))
    fn(pn.Params({"b": torch.ones(2)}))
    assert fn.cache_size == 2 and backend.graphs == 2


def test_static_leaves_are_constants_and_unhashable_ones_are_refused():
    fn = pn.jit(lambda p, k: pn.tree.scale(p, k["factor"]), backend=CountingBackend())
    out = fn(pn.Params({"a": torch.ones(2)}), {"factor": 2.5})
    assert torch.equal(out["a"], torch.full((2,), 2.5))
    with pytest.raises(
        TypeError, match=r"leaf 'argument 1 \(k\)\.factor' is a set, neither a tensor nor hashable"
    ):
        fn(pn.Params({"a": torch.ones(2)}), {"factor": {2.5}})


def test_autograd_through_a_non_donated_compiled_function():
    fn = pn.jit(lambda p, x: (x @ p["w"]).tanh().sum(), backend=CountingBackend())
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    fn(pn.Params({"w": w}), x).backward()
    expected = torch.autograd.grad((x @ w).tanh().sum(), w)[0]
    torch.testing.assert_close(w.grad, expected)


def test_config_jit_false_runs_eagerly_with_the_same_semantics():
    backend = CountingBackend()
    step = pn.jit(update, donate_argnums=(0, 1), backend=backend)
    params, grads = problem()
    expected = run(update, params, OPT.init(params), grads, 3)
    with pn.config.override(jit=False):
        got = run(step, pn.tree.map(torch.clone, params), OPT.init(params), grads, 3)
    assert backend.graphs == 0
    pn.testing.assert_tree_equal(got, expected)


def test_setting_config_jit_takes_effect_on_the_next_call_of_a_compiled_function():
    backend = CountingBackend()

    def double(x):
        # Tells the two apart: the trace sees is_compiling() True, an eager call False.
        return x * 2 + (0.0 if torch.compiler.is_compiling() else 1.0)

    fn = pn.jit(double, backend=backend)
    x = torch.ones(3)
    assert fn(x).tolist() == [2.0] * 3 and backend.graphs == 1
    with pn.config.override(jit=False):
        assert fn(x).tolist() == [3.0] * 3
    assert fn(x).tolist() == [2.0] * 3
    assert backend.graphs == 1 and fn.cache_size == 2


def test_guards_on_pn_jits_own_variant_constants_are_dropped_and_the_callers_filter_composes():
    seen = []

    def keep_all_but_count(entries):
        seen.append([e.name for e in entries])
        return [e.name != "fn" for e in entries]  # a drop of the caller's own

    step = pn.jit(
        update,
        donate_argnums=(0, 1),
        backend=CountingBackend(),
        options={"guard_filter_fn": keep_all_but_count},
    )
    params, grads = problem()
    run(step, params, OPT.init(params), grads, 3)
    (names,) = seen  # one compilation, and the caller's filter saw every guard
    own = [n for n in names if n.startswith(("arg_descs", "donated_layouts"))]
    assert len(own) > 100 and "fn" in names
    code = torch._dynamo.eval_frame._debug_get_cache_entry_list(
        next(iter(step._cache.values())).fn.__wrapped__.__code__
    )
    (cache_entry,) = code  # one graph: the dropped guards cost no recompiles
    kept = cache_entry.guard_manager.code_parts
    # A few guards reach the constants through a derived source (a node class's method code).
    assert sum("L['arg_descs']" in line or "L['donated_layouts']" in line for line in kept) < 10
    assert not any("L['fn'].__code__" in line for line in kept)  # the caller's filter's drop


def test_guards_on_the_callers_closure_still_recompile_when_it_changes():
    class Knob:
        scale = 2.0

    backend = CountingBackend()
    fn = pn.jit(lambda x: x * Knob.scale, backend=backend)
    x = torch.ones(2)
    assert fn(x).tolist() == [2.0, 2.0]
    Knob.scale = 3.0
    assert fn(x).tolist() == [3.0, 3.0] and backend.graphs == 2


def test_bad_donate_argnums_are_rejected():
    with pytest.raises(ValueError, match="donate_argnums must be non-negative ints"):
        pn.jit(update, donate_argnums=(-1,))
    with pytest.raises(ValueError, match="lists an argument twice"):
        pn.jit(update, donate_argnums=(0, 0))
    step = pn.jit(update, donate_argnums=(2,), backend=CountingBackend())
    params, _ = problem()
    with pytest.raises(TypeError, match=r"donate_argnums has 2, but the call passed 1 positional"):
        step(params)


def test_packed_trees_behave_like_unpacked_ones():
    params, grads = problem()
    packed = pn.tree.pack(params)
    assert pn.tree.structure(packed) == pn.tree.structure(params)
    assert pn.tree.paths(packed) == pn.tree.paths(params)
    pn.testing.assert_tree_equal(packed, params)
    assert len(packed._packed.buffers) == 1 and packed._packed.buffers[0].numel() == 30
    for opt in (
        pn.optim.adam(1e-2, amsgrad=True),
        pn.optim.sgd(0.1, momentum=0.9, weight_decay=0.1),
    ):
        a = run(lambda p, s, g, opt=opt: pn.step(opt, p, g, s), params, opt.init(params), grads, 3)
        b = run(
            lambda p, s, g, opt=opt: pn.step(opt, p, g, s),
            packed,
            opt.init(packed),
            pn.tree.pack(grads),
            3,
        )
        assert (
            b[0]._packed is not None and b[1].exp_avg is not None
            if hasattr(b[1], "exp_avg")
            else True
        )
        pn.testing.assert_tree_equal(b, a)


def test_pn_grad_of_packed_params_is_packed_and_equal():
    model = pn.nn.mlp(4, [6], 3)
    params = model.init(pn.random.key(0))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss_fn = pn.loss(model.apply, pn.losses.cross_entropy)
    packed = pn.tree.pack(params)
    g = pn.grad(loss_fn)(packed, x, y)
    assert g._packed is not None and g._packed.layout == packed._packed.layout
    pn.testing.assert_tree_equal(g, pn.grad(loss_fn)(params, x, y))
    (v, aux), g2 = pn.value_and_grad(lambda p: (loss_fn(p, x, y), torch.ones(())), has_aux=True)(
        packed
    )
    pn.testing.assert_tree_equal(g2, g)
    assert torch.equal(v, loss_fn(params, x, y)) and torch.equal(aux, torch.ones(()))


def test_packed_tree_mutation_is_caught_by_the_guard():
    packed = pn.tree.pack(problem()[0])
    packed["l1"].add_(1.0)
    # One version counter serves the whole buffer, so the error lists the leaves it holds.
    with pytest.raises(
        pn.MutatedError,
        match=r"params\.<packed float32 cpu buffer> \(the flat buffer of params\.l0, params\.l1, "
        r"params\.l2, params\.l3, params\.l4: one of these leaves\) was modified in place",
    ):
        pn.check_unmodified(packed, "params")


@pytest.mark.slow
def test_inductor_training_step_donates_matches_eager_and_does_not_recompile():
    model = pn.nn.mlp(8, [16], 4)
    opt = pn.optim.adamw(1e-2)
    loss_fn = pn.loss(model.apply, pn.losses.cross_entropy)

    def train_step(params, opt_state, x, y):
        loss, grads = pn.value_and_grad(loss_fn)(params, x, y)
        params, opt_state = pn.step(opt, params, grads, opt_state)
        return params, opt_state, loss

    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    params = model.init(pn.random.key(0))
    donating = pn.jit(train_step, donate_argnums=(0, 1))
    plain = pn.jit(train_step)
    p_a, s_a = pn.tree.map(torch.clone, params), opt.init(params)
    p_b, s_b = params, opt.init(params)
    p_e, s_e = params, opt.init(params)
    torch._dynamo.utils.counters.clear()
    for i in range(5):
        p_a, s_a, loss_a = donating(p_a, s_a, x, y)
        if i == 1:
            ptrs = [b.data_ptr() for b in p_a._packed.buffers]
        p_b, s_b, loss_b = plain(p_b, s_b, x, y)
        p_e, s_e, _ = train_step(p_e, s_e, x, y)
    assert [b.data_ptr() for b in p_a._packed.buffers] == ptrs
    pn.testing.assert_tree_equal(p_a, p_b)
    pn.testing.assert_tree_equal(s_a, s_b)
    assert torch.equal(loss_a, loss_b)
    pn.testing.assert_tree_close(p_a, p_e, rtol=1e-5, atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # one per jitted function


RULE_FACTORIES = [
    lambda: pn.optim.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: pn.optim.adam(1e-2, amsgrad=True, weight_decay=0.1),
    lambda: pn.optim.adamw(1e-2),
    lambda: pn.optim.rmsprop(1e-2, momentum=0.9, centered=True, weight_decay=0.1),
    lambda: pn.optim.adagrad(1e-2, lr_decay=0.01, weight_decay=0.1),
    lambda: pn.optim.adadelta(1.0, weight_decay=0.1),
    lambda: pn.optim.adamax(1e-2, weight_decay=0.1),
    lambda: pn.optim.nadam(1e-2, weight_decay=0.1),
    lambda: pn.optim.radam(1e-2, weight_decay=0.1),
    lambda: pn.optim.lion(1e-3, weight_decay=0.1),
    lambda: pn.optim.lamb(1e-2),
    lambda: pn.optim.adafactor(1e-2),
]


@pytest.mark.parametrize("make", RULE_FACTORIES, ids=[str(i) for i in range(len(RULE_FACTORIES))])
def test_every_rule_compiles_into_one_graph_and_matches_eager(make):
    opt = make()
    backend = CountingBackend()
    step = pn.jit(
        lambda p, s, g: pn.step(opt, p, g, s),
        donate_argnums=(0, 1),
        backend=backend,
        fullgraph=True,
    )
    params, grads = problem()
    expected = run(lambda p, s, g: pn.step(opt, p, g, s), params, opt.init(params), grads, 3)
    got = run(step, pn.tree.map(torch.clone, params), opt.init(params), grads, 3)
    assert backend.graphs == 1
    pn.testing.assert_tree_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:.*cannot be marked dead:UserWarning")
@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
def test_a_donated_input_returned_unchanged_keeps_its_values(compile):
    # The new output of the same shape must not be written over the passed-through input.
    fn = pn.jit(lambda x: (x * 2, x), donate_argnums=0, compile=compile, backend=CountingBackend())
    doubled, same = fn(torch.ones(3))
    assert torch.equal(doubled, torch.full((3,), 2.0)) and torch.equal(same, torch.ones(3))


class AotEagerCounter:
    """The aot_eager backend (AOT autograd, whose passes can restart dynamo's trace), counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.calls += 1
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)


def test_0d_float64_inputs_are_traced_once_and_stay_inputs():
    # Dynamo gives 0-d CPU float64 inputs (a rule's hyperparameters) a symbolic value that
    # AOT autograd then specializes by restarting the trace; pn.jit passes them as 1-element
    # views so a step compiles in one pass, and changing them neither recompiles nor is ignored.
    backend = AotEagerCounter()
    step = pn.jit(update, donate_argnums=(0, 1), backend=backend)
    params, grads = problem()
    state = OPT.init(params)
    expected = run(update, params, state, grads, 2)
    params, state = run(step, pn.tree.map(torch.clone, params), OPT.init(params), grads, 2)
    pn.testing.assert_tree_close((params, state), expected, rtol=1e-5, atol=1e-6)  # PROPERTIES 5
    state = pn.tree.set(state, "hyperparams.lr", torch.tensor(0.5, dtype=torch.float64))
    new_params, _ = step(params, state, grads)
    assert backend.calls == 1
    assert not torch.allclose(new_params["l0"], expected[0]["l0"], atol=0.1)


@pytest.mark.filterwarnings("ignore:.*cannot be marked dead:UserWarning")
@pytest.mark.parametrize("compile", [True, False])
def test_0d_inputs_returned_unchanged_are_the_callers_tensors(compile):
    scale = torch.tensor(3.0, dtype=torch.float64)
    count = torch.tensor(4)
    fn = pn.jit(
        lambda x, s, c: (x * s, s, c + 1),
        donate_argnums=2,
        compile=compile,
        backend=AotEagerCounter(),
    )
    count_ptr = count.data_ptr()
    y, s, c = fn(torch.ones(2), scale, count)
    assert s is scale and torch.equal(y, torch.full((2,), 3.0))
    assert int(c) == 5 and c.shape == () and c.data_ptr() == count_ptr


def test_gradients_reach_0d_inputs_of_a_compiled_function():
    lr = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64)
    fn = pn.jit(lambda p, lr: (p["w"] * lr).square().sum(), backend=AotEagerCounter())
    fn(pn.Params({"w": w}), lr).backward()
    torch.testing.assert_close(lr.grad, 2 * lr.detach() * w.square().sum())


@pytest.mark.filterwarnings("ignore:.*cannot be marked dead:UserWarning")
def test_donate_argnums_may_be_passed_positionally():
    fn = pn.jit(lambda x: x * 2, (0,), compile=False)
    x = torch.ones(2)
    ptr = x.data_ptr()
    assert fn(x).data_ptr() == ptr and fn.donate_argnums == (0,)


def test_a_self_overlapping_donated_tensor_is_refused_by_path():
    # vmap(opt.init) stacks a rule's 0-d count and hyperparameters as stride-0 expands.
    opt = pn.optim.adam(0.1)
    ensemble = pn.tree.stack([pn.Params({"w": torch.ones(2)}) for _ in range(3)])
    states = torch.func.vmap(opt.init)(ensemble)
    step = pn.jit(lambda p, s: pn.step(opt, p, p, s), donate_argnums=(0, 1), compile=False)
    with pytest.raises(
        ValueError, match=r"donated input 'argument 1 \(s\)\.count' of shape \(3,\) has stride 0"
    ):
        step(ensemble, states)
    assert torch.equal(pn.tree.leaves(ensemble)[0], torch.ones(3, 2))  # nothing was written
    pn.tree.leaves(states)  # and the refused arguments are still alive


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
def test_static_arguments_that_compare_equal_but_differ_get_their_own_variant(compile):
    options = {"backend": CountingBackend()} if compile else {"compile": False}
    as_tensor = pn.jit(lambda k: torch.tensor(k), **options)
    assert [as_tensor(k).dtype for k in (1, True, 1.0)] == [torch.int64, torch.bool, torch.float32]
    divide = pn.jit(lambda x, k: x / k, **options)
    assert divide(torch.ones(1), 0.0).item() == math.inf
    assert divide(torch.ones(1), -0.0).item() == -math.inf


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
def test_a_returned_view_of_a_donated_leaf_keeps_the_values_it_had(compile):
    options = {"backend": CountingBackend()} if compile else {"compile": False}

    def double_and_keep(p):
        return pn.tree.map(lambda t: t * 2, p), p["w"]  # p["w"] views p's (packed) buffer

    donating = pn.jit(double_and_keep, donate_argnums=0, **options)
    plain = pn.jit(double_and_keep, **options)
    a, b = (pn.Params({"w": torch.arange(4.0), "b": torch.ones(3)}) for _ in range(2))
    kept = []
    for _ in range(3):
        a, old_a = donating(a)
        b, old_b = plain(b)
        assert torch.equal(old_a, old_b)
        kept.append((old_a, old_b.clone()))
    assert all(torch.equal(x, y) for x, y in kept)  # later calls did not write into them
    pointers = [leaf.data_ptr() for leaf in pn.tree.leaves(a)]
    a, _ = donating(a)
    assert [leaf.data_ptr() for leaf in pn.tree.leaves(a)] == pointers  # buffers still reused
