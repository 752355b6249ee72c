"""pn.optim.from_torch_state / to_torch_state: resume torch.optim in purenn and back, with identical trajectories."""

from __future__ import annotations

import io

import pytest
import torch
from test_optim import gradient, problem

import purenn as pn
from purenn import optim

TWINS = [
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (torch.optim.SGD, {"lr": 0.05}),
    (torch.optim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    (
        torch.optim.Adam,
        {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1, "fused": True},
    ),
    (torch.optim.AdamW, {"lr": 0.01, "maximize": True}),
    (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
    (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    (torch.optim.Adadelta, {"rho": 0.8, "weight_decay": 0.1}),
    (torch.optim.Adamax, {"lr": 0.01}),
    (torch.optim.NAdam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (torch.optim.RAdam, {"lr": 0.01, "weight_decay": 0.1}),
    (torch.optim.Adafactor, {"lr": 0.01, "weight_decay": 0.1}),
]
CASES = [pytest.param(cls, kw, id=f"{cls.__name__}-{i}") for i, (cls, kw) in enumerate(TWINS)]


def torch_steps(opt: torch.optim.Optimizer, tensors: list[torch.Tensor], steps: range) -> None:
    for t in steps:
        for p in tensors:
            p.grad = gradient(p.detach(), t)
        opt.step()


def purenn_steps(rule, params, state, steps: range):
    for t in steps:
        params, state = pn.step(
            rule, params, pn.tree.map(lambda p, t=t: gradient(p, t), params), state
        )
    return params, state


def as_tree(params: pn.Params, tensors: list[torch.Tensor]) -> pn.Params:
    return pn.tree.unflatten(pn.tree.structure(params), [p.detach().clone() for p in tensors])


def parameters(params: pn.Params) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(leaf.clone()) for leaf in pn.tree.leaves(params)]


@pytest.mark.parametrize("cls, kw", CASES)
def test_torch_to_purenn_continues_identically(cls, kw):
    tensors = parameters(problem())
    twin = cls(tensors, **kw)
    torch_steps(twin, tensors, range(7))
    params = as_tree(problem(), tensors)
    rule, state = optim.from_torch_state(twin, params)
    assert int(state.count) == (7 if cls is not torch.optim.SGD else int(kw.get("momentum", 0) > 0))
    torch_steps(twin, tensors, range(7, 15))
    ours, _ = purenn_steps(rule, params, state, range(7, 15))
    pn.testing.assert_tree_close(ours, as_tree(params, tensors), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, kw", CASES)
def test_purenn_to_torch_continues_identically(cls, kw):
    params = problem()
    source = parameters(params)
    rule, state = optim.from_torch_state(cls(source, **kw), params)  # the same options, fresh
    params, state = purenn_steps(rule, params, state, range(7))
    tensors = parameters(params)
    twin = cls(tensors, **kw)
    twin.load_state_dict(optim.to_torch_state(state, params, twin))
    torch_steps(twin, tensors, range(7, 15))
    ours, _ = purenn_steps(rule, params, state, range(7, 15))
    # torch's load_state_dict casts NAdam's float32 mu_product to the params' float64, so torch
    # resumed from its own checkpoint also leaves the uninterrupted trajectory by ~1e-12.
    rtol = 1e-10 if cls is torch.optim.NAdam else 1e-12
    pn.testing.assert_tree_close(ours, as_tree(params, tensors), rtol=rtol, atol=1e-14)
    # The state dict holds copies: torch's steps did not touch the purenn state.
    again, _ = purenn_steps(rule, params, state, range(7, 15))
    pn.testing.assert_tree_equal(again, ours)


def test_a_saved_torch_checkpoint_resumes_in_purenn():
    module = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()
    twin = torch.optim.AdamW(module.parameters(), lr=0.01, weight_decay=0.1)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        twin.zero_grad()
        module(x).square().mean().backward()
        twin.step()
    buffer = io.BytesIO()
    torch.save(twin.state_dict(), buffer)
    model, params = pn.from_torch(module)  # copies, so params are matched by order
    resumed = torch.optim.AdamW(module.parameters(), lr=0.01, weight_decay=0.1)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    rule, state = optim.from_torch_state(resumed, params)
    assert (
        isinstance(state, optim.AdamState)
        and int(state.count) == 5
        and state.decoupled_weight_decay
    )
    assert float(state.hyperparams["weight_decay"]) == 0.1
    loss = pn.loss(model.apply, lambda y, _: y.square().mean())
    for _ in range(3):
        params, state = pn.step(rule, params, pn.grad(loss)(params, x, None), state)
        resumed.zero_grad()
        module(x).square().mean().backward()
        resumed.step()
    reference = pn.Params.from_state_dict({k: v.detach() for k, v in module.named_parameters()})
    pn.testing.assert_tree_close(params, reference, rtol=1e-12, atol=1e-14)


def test_param_groups_become_a_multi_transform_and_go_back():
    params = problem()
    tensors = dict(zip(pn.tree.paths(params), parameters(params), strict=True))
    groups = [
        {"params": [tensors["0.weight"], tensors["1.weight"]], "lr": 0.05, "weight_decay": 0.1},
        {"params": [tensors["0.bias"], tensors["scale"]], "lr": 0.001},
    ]
    twin = torch.optim.Adam(groups)
    leaves = list(tensors.values())
    torch_steps(twin, leaves, range(5))
    live = pn.Params.from_state_dict(
        dict(tensors.items())
    )  # the optimizer's own tensors: by identity
    rule, state = optim.from_torch_state(twin, live)
    assert isinstance(state, optim.MultiTransformState)
    assert state.labels == ("group0", "group1", "group0", "group1")
    assert float(state.inner["group1"].hyperparams["lr"]) == 0.001
    params = as_tree(params, leaves)
    ours, state = purenn_steps(rule, params, state, range(5, 10))
    back = {
        k: torch.nn.Parameter(v.clone())
        for k, v in zip(pn.tree.paths(ours), pn.tree.leaves(ours), strict=True)
    }
    torch_steps(twin, leaves, range(5, 10))
    pn.testing.assert_tree_close(ours, as_tree(params, leaves), rtol=1e-12, atol=1e-14)
    resumed = torch.optim.Adam(
        [
            {"params": [back["0.weight"], back["1.weight"]]},
            {"params": [back["0.bias"], back["scale"]]},
        ]
    )
    resumed.load_state_dict(optim.to_torch_state(state, pn.Params.from_state_dict(back), resumed))
    assert resumed.param_groups[0]["lr"] == 0.05 and resumed.param_groups[1]["weight_decay"] == 0.0
    torch_steps(resumed, list(back.values()), range(10, 13))
    torch_steps(twin, leaves, range(10, 13))
    for path, p in back.items():
        torch.testing.assert_close(p.detach(), tensors[path].detach(), rtol=1e-12, atol=1e-14)


def test_a_schedule_continues_at_the_torch_step_count():
    params = problem()
    tensors = parameters(params)
    schedule = pn.schedules.cosine_decay(0.01, decay_steps=20)
    twin = torch.optim.Adam(tensors, lr=0.01)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(twin, T_max=20)
    for t in range(6):
        torch_steps(twin, tensors, range(t, t + 1))
        lr_scheduler.step()
    _, state = optim.from_torch_state(twin, as_tree(params, tensors))
    ours, _ = purenn_steps(optim.adam(schedule), as_tree(params, tensors), state, range(6, 12))
    for t in range(6, 12):
        torch_steps(twin, tensors, range(t, t + 1))
        lr_scheduler.step()
    pn.testing.assert_tree_close(ours, as_tree(params, tensors), rtol=1e-11, atol=1e-14)


def test_a_fresh_torch_optimizer_gives_the_rules_initial_state():
    params = problem()
    _, state = optim.from_torch_state(torch.optim.RMSprop(parameters(params), momentum=0.9), params)
    pn.testing.assert_tree_equal(state, optim.rmsprop(momentum=0.9).init(params))


def test_errors_name_what_does_not_fit():
    params = problem()
    with pytest.raises(
        TypeError, match=r"from_torch_state: no pn\.optim twin for torch\.optim\.asgd\.ASGD"
    ):
        optim.from_torch_state(torch.optim.ASGD(parameters(params)), params)
    with pytest.raises(TypeError, match=r"expected a torch\.optim\.Optimizer, got dict"):
        optim.from_torch_state({}, params)
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"the optimizer has 3 params \(in 1 groups\) but params has 4 leaves",
    ):
        optim.from_torch_state(torch.optim.Adam(parameters(params)[:3]), params)
    shuffled = pn.Params({"scale": params["scale"], "0": params["0"], "1": params["1"]})
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"param 'scale' has shape \(\) .* param 0 of group 0, matched to it by order, has \(4, 3\)",
    ):
        optim.from_torch_state(torch.optim.Adam(parameters(params)), shuffled)
    tensors = parameters(params)
    twin = torch.optim.Adam(tensors)
    torch_steps(twin, tensors, range(2))
    tensors[1].grad = None
    tensors[0].grad = torch.ones_like(tensors[0])
    twin.step()
    with pytest.raises(pn.StateError, match=r"param '0\.bias' has taken 2 steps but '0\.weight' 3"):
        optim.from_torch_state(twin, params)
    adam_state = optim.adam().init(params)
    with pytest.raises(TypeError, match=r"torch\.optim\.NAdam needs a NadamState, got a AdamState"):
        optim.to_torch_state(adam_state, params, torch.optim.NAdam(parameters(params)))
    with pytest.raises(
        TypeError,
        match=r"AdamW always decouples weight decay, but this is an adam \(coupled\) state",
    ):
        optim.to_torch_state(adam_state, params, torch.optim.AdamW(parameters(params)))
