"""Tests for pn.grad, pn.value_and_grad and pn.loss: against torch.autograd, composed, vmapped, pure."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import vmap

import purenn as pn
from purenn.testing import assert_tree_close, assert_tree_equal

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def versions(*trees):
    return [leaf._version for tree in trees for leaf in pn.tree.leaves(tree)]


def tanh_mlp():
    """A float64 pn mlp and its torch twin (same params loaded)."""
    model = pn.nn.mlp(3, [6], 2, activation=pn.nn.tanh, dtype=F64)
    params = model.init(pn.random.key(0))
    twin = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    twin.load_state_dict(params.to_state_dict(), strict=True)
    return model, params, twin


def data(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, dtype=F64, generator=g), torch.randn(n, 2, dtype=F64, generator=g)


def twin_grads(twin, x, y, wrt_x=False):
    """`torch.autograd.grad` of the twin's MSE loss, as Params (and the input gradient)."""
    names = [name for name, _ in twin.named_parameters()]
    inputs = list(twin.parameters())
    if wrt_x:
        x = x.clone().requires_grad_()
        inputs.append(x)
    loss = F.mse_loss(twin(x), y)
    grads = torch.autograd.grad(loss, inputs)
    tree = pn.Params.from_state_dict(dict(zip(names, grads[: len(names)], strict=True)))
    return (tree, grads[-1]) if wrt_x else tree


# ---------------------------------------------------------------------------------------------
# first order against autograd
# ---------------------------------------------------------------------------------------------


def test_grad_equals_autograd():
    model, params, twin = tanh_mlp()
    x, y = data()
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    grads = pn.grad(loss_fn)(params, x, y)
    assert isinstance(grads, pn.Params)
    assert pn.tree.paths(grads) == pn.tree.paths(params)
    assert all(not g.requires_grad for g in pn.tree.leaves(grads))
    assert_tree_close(grads, twin_grads(twin, x, y), **TIGHT)


@given(
    widths=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_grad_equals_autograd_random_mlps(widths, batch, seed):
    model = pn.nn.mlp(3, widths, 2, activation=pn.nn.sigmoid, dtype=F64)
    params = model.init(pn.random.key(seed))
    layers = []
    for fan_in, fan_out in zip([3, *widths], [*widths, 2], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.Sigmoid()]
    twin = nn.Sequential(*layers[:-1]).double()
    twin.load_state_dict(params.to_state_dict(), strict=True)
    x, y = data(batch, seed % 1000)
    grads = pn.grad(pn.loss(model.apply, pn.losses.mse))(params, x, y)
    assert_tree_close(grads, twin_grads(twin, x, y), **TIGHT)


def test_grad_argnums_tuple_returns_tuple():
    model, params, twin = tanh_mlp()
    x, y = data()
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    out = pn.grad(loss_fn, argnums=(0, 1))(params, x, y)
    assert isinstance(out, tuple) and len(out) == 2
    g_params, g_x = out
    ref_params, ref_x = twin_grads(twin, x, y, wrt_x=True)
    assert_tree_close(g_params, ref_params, **TIGHT)
    assert g_x.shape == x.shape
    torch.testing.assert_close(g_x, ref_x, **TIGHT)
    only_x = pn.grad(loss_fn, argnums=1)(params, x, y)
    torch.testing.assert_close(only_x, ref_x, **TIGHT)


def test_grad_has_aux_returns_grads_and_aux():
    model, params, twin = tanh_mlp()
    x, y = data()

    def loss_with_aux(p, x, y):
        out = model.apply(p, x)
        return F.mse_loss(out, y), {"out": out, "n": torch.tensor(len(x))}

    grads, aux = pn.grad(loss_with_aux, has_aux=True)(params, x, y)
    assert_tree_close(grads, twin_grads(twin, x, y), **TIGHT)
    assert set(aux) == {"out", "n"}
    torch.testing.assert_close(aux["out"], model.apply(params, x), rtol=0, atol=0)
    assert aux["n"].item() == 7


def test_value_and_grad():
    model, params, twin = tanh_mlp()
    x, y = data()
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    value, grads = pn.value_and_grad(loss_fn)(params, x, y)
    with torch.no_grad():
        torch.testing.assert_close(value, F.mse_loss(twin(x), y), **TIGHT)
    assert value.shape == ()
    assert not value.requires_grad
    assert_tree_close(grads, twin_grads(twin, x, y), **TIGHT)


def test_value_and_grad_has_aux():
    model, params, twin = tanh_mlp()
    x, y = data()

    def loss_with_aux(p, x, y):
        out = model.apply(p, x)
        return F.mse_loss(out, y), out.detach().argmax(-1)

    (value, aux), grads = pn.value_and_grad(loss_with_aux, has_aux=True)(params, x, y)
    with torch.no_grad():
        torch.testing.assert_close(value, F.mse_loss(twin(x), y), **TIGHT)
        assert torch.equal(aux, twin(x).argmax(-1))
    assert_tree_close(grads, twin_grads(twin, x, y), **TIGHT)
    (value2, _), g_tuple = pn.value_and_grad(loss_with_aux, argnums=(0, 1), has_aux=True)(
        params, x, y
    )
    assert isinstance(g_tuple, tuple) and len(g_tuple) == 2
    assert_tree_close(g_tuple[0], grads, **TIGHT)
    torch.testing.assert_close(value2, value)


# ---------------------------------------------------------------------------------------------
# second order: MAML and Hessian-vector products
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.7])
def test_maml_one_inner_sgd_step_matches_closed_form(alpha):
    d, n, m = 4, 9, 6
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(n, d, dtype=F64, generator=g), torch.randn(n, dtype=F64, generator=g)
    xq, yq = torch.randn(m, d, dtype=F64, generator=g), torch.randn(m, dtype=F64, generator=g)
    layer = pn.nn.linear(d, 1, bias=False, dtype=F64)
    p0 = layer.init(pn.random.key(3))
    opt = pn.optim.sgd(alpha)

    def least_squares(p, x, y):
        residual = layer.apply(p, x)[:, 0] - y
        return 0.5 * (residual**2).sum() / len(y)

    def outer(p0, xs, ys, xq, yq):
        g0 = pn.grad(least_squares)(p0, xs, ys)
        p1, _ = pn.step(opt, p0, g0, opt.init(p0))
        return least_squares(p1, xq, yq)

    meta_grad = pn.grad(outer)(p0, xs, ys, xq, yq)

    w = p0["weight"][0]
    p1 = w - alpha * xs.T @ (xs @ w - ys) / n
    jacobian = torch.eye(d, dtype=F64) - alpha * xs.T @ xs / n
    expected = jacobian @ (xq.T @ (xq @ p1 - yq) / m)
    assert pn.tree.paths(meta_grad) == ["weight"]
    torch.testing.assert_close(meta_grad["weight"], expected[None, :], rtol=0, atol=1e-10)
    if alpha:
        # The second-order term matters: first-order MAML would give a different answer.
        first_order = xq.T @ (xq @ p1 - yq) / m
        assert not torch.allclose(expected, first_order, atol=1e-6)


def test_hessian_vector_product_equals_autograd_hvp():
    model, params, _ = tanh_mlp()
    x, y = data()
    paths = pn.tree.paths(params)
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    g = torch.Generator().manual_seed(5)
    v = pn.tree.map(lambda leaf: torch.randn(leaf.shape, dtype=F64, generator=g), params)

    def grad_dot_v(p):
        grads = pn.grad(loss_fn)(p, x, y)
        return sum(
            (a * b).sum() for a, b in zip(pn.tree.leaves(grads), pn.tree.leaves(v), strict=True)
        )

    hvp = pn.grad(grad_dot_v)(params)

    def flat_loss(*leaves):
        return loss_fn(pn.Params.from_state_dict(dict(zip(paths, leaves, strict=True))), x, y)

    _, expected = torch.autograd.functional.hvp(
        flat_loss, tuple(pn.tree.leaves(params)), tuple(pn.tree.leaves(v))
    )
    expected = pn.Params.from_state_dict(dict(zip(paths, expected, strict=True)))
    assert_tree_close(hvp, expected, **TIGHT)
    assert pn.tree.global_norm(hvp).item() > 1e-3


# ---------------------------------------------------------------------------------------------
# vmap: ensembles and per-example gradients
# ---------------------------------------------------------------------------------------------


def test_vmap_grad_over_stacked_params_equals_loop():
    model, _, _ = tanh_mlp()
    members = [model.init(k) for k in pn.random.split(pn.random.key(4), 4)]
    x, y = data()
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    batched = vmap(pn.grad(loss_fn), in_dims=(0, None, None))(pn.tree.stack(members), x, y)
    loop = pn.tree.stack([pn.grad(loss_fn)(p, x, y) for p in members])
    assert_tree_close(batched, loop, **TIGHT)
    assert not torch.allclose(loop["0.weight"][0], loop["0.weight"][1])


def test_per_example_grads_via_vmap_equal_loop():
    model, params, _ = tanh_mlp()
    x, y = data(n=5)
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    per_example = vmap(pn.grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
    loop = pn.tree.stack([pn.grad(loss_fn)(params, x[i], y[i]) for i in range(len(x))])
    assert pn.tree.paths(per_example) == pn.tree.paths(params)
    assert per_example["0.weight"].shape == (5, 6, 3)
    assert_tree_close(per_example, loop, **TIGHT)
    # The batch MSE is the mean of the per-example MSEs, so its gradient is their mean.
    mean = pn.tree.map(lambda leaf: leaf.mean(0), per_example)
    assert_tree_close(mean, pn.grad(loss_fn)(params, x, y), **TIGHT)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", [pn.grad, pn.value_and_grad])
def test_non_scalar_output_raises_shape_error(transform):
    model, params, _ = tanh_mlp()
    x, _ = data()
    with pytest.raises(
        pn.ShapeError, match=r"must return a scalar \(0-d\) tensor, got shape \(7, 2\)"
    ):
        transform(model.apply)(params, x)
    with pytest.raises(pn.ShapeError, match=r"scalar"):
        transform(lambda p, x: (model.apply(p, x), 0), has_aux=True)(params, x)


@pytest.mark.parametrize("transform", [pn.grad, pn.value_and_grad])
def test_tuple_without_has_aux_raises(transform):
    model, params, _ = tanh_mlp()
    x, y = data()

    def loss_and_out(p, x, y):
        out = model.apply(p, x)
        return F.mse_loss(out, y), out

    with pytest.raises(TypeError, match=r"returned a tuple of 2; .*pass has_aux=True"):
        transform(loss_and_out)(params, x, y)


@pytest.mark.parametrize("transform", [pn.grad, pn.value_and_grad])
def test_has_aux_without_tuple_raises(transform):
    model, params, _ = tanh_mlp()
    x, y = data()
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    with pytest.raises(
        TypeError, match=r"has_aux=True\): the function must return \(scalar, aux\)"
    ):
        transform(loss_fn, has_aux=True)(params, x, y)


def test_integer_output_raises():
    params = pn.Params({"w": torch.randn(3, dtype=F64)})
    with pytest.raises(TypeError, match=r"returned a torch\.int64 scalar; gradients need a float"):
        pn.grad(lambda p: (p["w"] > 0).sum())(params)


@pytest.mark.parametrize("transform", [pn.grad, pn.value_and_grad])
def test_integer_leaves_in_the_differentiated_argument_are_named(transform):
    params = pn.Params({"w": torch.ones(3, dtype=F64), "index": {"n": torch.arange(3)}})
    name = "pn.grad" if transform is pn.grad else "pn.value_and_grad"
    with pytest.raises(TypeError, match=rf"{name}: argument 1 .* index\.n \(torch\.int64\)"):
        transform(lambda x, p: (p["w"] * x).sum(), argnums=(0, 1))(torch.ones(3, dtype=F64), params)


# ---------------------------------------------------------------------------------------------
# pn.loss with state (BatchNorm through pn.from_torch)
# ---------------------------------------------------------------------------------------------


def _batchnorm_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).double()


def test_loss_with_state_returns_loss_and_new_state():
    module = _batchnorm_net()
    model, params = pn.from_torch(module)
    state = model.init_state()
    x, y = data(n=8)
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    value, new_state = loss_fn(params, x, y, state=state, train=True)
    twin = copy.deepcopy(module).train()
    with torch.no_grad():
        torch.testing.assert_close(value, F.mse_loss(twin(x), y), **TIGHT)
    assert_tree_close(new_state, pn.Params.from_state_dict(dict(twin.named_buffers())), **TIGHT)
    assert int(new_state["1.num_batches_tracked"]) == 1
    with pytest.raises(pn.StateError, match=r"state="):
        loss_fn(params, x, y)


def test_value_and_grad_has_aux_through_batchnorm_state():
    module = _batchnorm_net()
    model, params = pn.from_torch(module)
    state = model.init_state()
    state_copy = pn.tree.map(torch.clone, state)
    x, y = data(n=8)
    before = versions(params, state, x, y)
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    (value, new_state), grads = pn.value_and_grad(loss_fn, has_aux=True)(
        params, x, y, state=state, train=True
    )
    grads_only, aux_state = pn.grad(loss_fn, has_aux=True)(params, x, y, state=state, train=True)

    twin = copy.deepcopy(module).train()
    loss = F.mse_loss(twin(x), y)
    names = [name for name, _ in twin.named_parameters()]
    expected = torch.autograd.grad(loss, list(twin.parameters()))
    expected = pn.Params.from_state_dict(dict(zip(names, expected, strict=True)))

    torch.testing.assert_close(value, loss.detach(), **TIGHT)
    assert_tree_close(grads, expected, **TIGHT)
    assert_tree_close(grads_only, expected, **TIGHT)
    buffers = pn.Params.from_state_dict(dict(twin.named_buffers()))
    assert_tree_close(new_state, buffers, **TIGHT)
    assert_tree_close(aux_state, buffers, **TIGHT)
    # Pure: params, state and data are untouched.
    assert versions(params, state, x, y) == before
    assert_tree_equal(state, state_copy)


def test_loss_with_state_none_is_like_no_state():
    # Regression: state=None used to make pn.loss unpack y along its first axis.
    model, params, _ = tanh_mlp()
    x, y = data(n=2)
    loss_fn = pn.loss(model.apply, lambda out, target: ((out - target) ** 2).mean())
    result = loss_fn(params, x, y, state=None)
    value = result[0] if isinstance(result, tuple) else result
    torch.testing.assert_close(value, loss_fn(params, x, y), **TIGHT)


def test_loss_rejects_non_callables():
    with pytest.raises(TypeError, match=r"both arguments must be callables"):
        pn.loss(pn.nn.linear(2, 2), pn.losses.mse)


# ---------------------------------------------------------------------------------------------
# purity
# ---------------------------------------------------------------------------------------------


def test_grad_leaves_inputs_untouched():
    model, params, _ = tanh_mlp()
    x, y = data()
    snapshot = pn.tree.map(torch.clone, params)
    x_copy, y_copy = x.clone(), y.clone()
    before = versions(params, x, y)
    loss_fn = pn.loss(model.apply, pn.losses.mse)
    pn.grad(loss_fn)(params, x, y)
    pn.value_and_grad(loss_fn, argnums=(0, 1))(params, x, y)
    pn.grad(lambda p: pn.tree.global_norm(pn.grad(loss_fn)(p, x, y)))(params)
    assert versions(params, x, y) == before
    assert_tree_equal(params, snapshot)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert all(not leaf.requires_grad for leaf in pn.tree.leaves(params))


def test_argument_names_are_those_api_md_gives():
    # API.md: `pn.grad(f, argnums=0, has_aux=False)`, `pn.value_and_grad(f, ...)`,
    # `pn.tree.map(f, tree, *rest)`, `Params.from_state_dict(sd)`.
    p = pn.Params({"w": torch.tensor([1.0, 2.0])})
    g = pn.grad(f=lambda q: q["w"].square().sum(), argnums=0, has_aux=False)(p)
    value, g2 = pn.value_and_grad(f=lambda q: q["w"].square().sum())(p)
    assert torch.equal(g["w"], torch.tensor([2.0, 4.0])) and torch.equal(g2["w"], g["w"])
    assert float(value) == 5.0
    assert torch.equal(pn.tree.map(f=torch.neg, tree=p)["w"], -p["w"])
    assert pn.tree.paths(pn.Params.from_state_dict(sd={"a.b": torch.ones(1)})) == ["a.b"]
