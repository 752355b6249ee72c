"""Tests for pn.nn and pn.from_torch: behaviour against torch.nn twins, keys, purity and errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import vmap

import purenn as pn
from purenn.testing import assert_tree_close, assert_tree_equal

DTYPES = [torch.float32, torch.float64]


def versions(*trees):
    """The autograd version counter of every tensor leaf of the given trees (or tensors)."""
    return [leaf._version for tree in trees for leaf in pn.tree.leaves(tree)]


def twin_of(model_params, module):
    """Load purenn params into a torch module (strict) and return it."""
    module.load_state_dict(model_params.to_state_dict(), strict=True)
    return module


def bitwise_equal_state_dicts(a, b):
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------


@given(
    in_features=st.integers(1, 9),
    out_features=st.integers(1, 9),
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    bias=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_matches_torch_linear(in_features, out_features, lead, bias, dtype, seed):
    layer = pn.nn.linear(in_features, out_features, bias=bias, dtype=dtype)
    params = layer.init(pn.random.key(seed))
    twin = twin_of(params, nn.Linear(in_features, out_features, bias=bias, dtype=dtype))
    x = torch.randn(*lead, in_features, dtype=dtype)
    y = layer.apply(params, x)
    assert y.shape == (*lead, out_features)
    assert y.dtype == dtype
    with torch.no_grad():
        torch.testing.assert_close(y, twin(x))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_paths_shapes_dtypes_like_torch(bias, dtype):
    params = pn.nn.linear(5, 3, bias=bias, dtype=dtype).init(pn.random.key(0))
    reference = nn.Linear(5, 3, bias=bias, dtype=dtype).state_dict()
    assert pn.tree.paths(params) == list(reference)
    for path, tensor in reference.items():
        assert params[path].shape == tensor.shape
        assert params[path].dtype == dtype
        assert not params[path].requires_grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_init_within_torch_bounds(dtype):
    for fan_in in (1, 3, 7, 64):
        params = pn.nn.linear(fan_in, 33, dtype=dtype).init(pn.random.key(fan_in))
        # torch draws U(-b, b) with b = 1/sqrt(fan_in) rounded to the parameter's dtype.
        bound = torch.tensor(1.0 / math.sqrt(fan_in), dtype=dtype)
        for leaf in (params["weight"], params["bias"]):
            assert (leaf >= -bound).all()
            assert (leaf < bound).all()


def _check_uniform(sample, bound):
    """Mean, std and a 10-bin histogram of `sample` agree with U(-bound, bound)."""
    sample = sample.double().flatten()
    n = sample.numel()
    std = bound / math.sqrt(3.0)
    assert abs(sample.mean().item()) < 5 * std / math.sqrt(n)
    # The std of a sample std of a uniform is about 0.45 * std / sqrt(n); allow 6 of those.
    assert abs(sample.std().item() - std) < 6 * 0.45 * std / math.sqrt(n)
    assert sample.min().item() < -0.999 * bound
    assert sample.max().item() > 0.999 * bound
    counts = torch.histc(sample, bins=10, min=-bound, max=bound)
    expected = n / 10
    assert (counts - expected).abs().max().item() < 6 * math.sqrt(expected)


def test_linear_init_distribution_is_torch_uniform():
    fan_in = 400
    params = pn.nn.linear(fan_in, 1000).init(pn.random.key(3))
    _check_uniform(params["weight"], 1.0 / math.sqrt(fan_in))
    wide = pn.nn.linear(4, 200_000).init(pn.random.key(4))
    _check_uniform(wide["bias"], 0.5)


def test_linear_init_weight_and_bias_are_independent():
    params = pn.nn.linear(1, 5000).init(pn.random.key(0))
    w, b = params["weight"][:, 0].double(), params["bias"].double()
    correlation = torch.corrcoef(torch.stack([w, b]))[0, 1].item()
    assert abs(correlation) < 0.1


def test_linear_zero_in_features_initialises_like_torch():
    # torch.nn.Linear(0, n): empty weight, zero bias (it warns, so no twin here).
    params = pn.nn.linear(0, 3).init(pn.random.key(0))
    assert params["weight"].shape == (3, 0)
    assert torch.equal(params["bias"], torch.zeros(3))
    assert torch.equal(pn.nn.linear(0, 3).apply(params, torch.ones(2, 0)), torch.zeros(2, 3))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, 3), r"in_features must be a non-negative int, got -1"),
        ((3, 2.5), r"out_features must be a non-negative int, got 2.5"),
        ((True, 3), r"in_features must be a non-negative int, got True"),
    ],
)
def test_linear_rejects_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        pn.nn.linear(*args)


# ---------------------------------------------------------------------------------------------
# sequential and mlp against torch.nn.Sequential
# ---------------------------------------------------------------------------------------------


def _model_and_twin(dtype=torch.float64):
    model = pn.nn.sequential(
        pn.nn.linear(4, 8, dtype=dtype),
        pn.nn.relu,
        pn.nn.linear(8, 6, dtype=dtype),
        pn.nn.tanh,
        pn.nn.linear(6, 3, bias=False, dtype=dtype),
    )
    twin = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3, bias=False)
    ).to(dtype)
    return model, twin


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_paths_and_outputs_match_torch(dtype):
    model, twin = _model_and_twin(dtype)
    params = model.init(pn.random.key(0))
    assert pn.tree.paths(params) == list(twin.state_dict())
    assert pn.tree.paths(params) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]
    twin_of(params, twin)
    x = torch.randn(7, 4, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(model.apply(params, x), twin(x))


def test_sequential_applies_torch_params_from_state_dict():
    model, twin = _model_and_twin()
    params = pn.Params.from_state_dict(twin.state_dict())
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.apply(params, x), twin(x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_matches_torch_sequential(dropout, bias):
    model = pn.nn.mlp(5, [7, 6], 2, activation=pn.nn.gelu, dropout=dropout, bias=bias)
    layers = [nn.Linear(5, 7, bias=bias), nn.GELU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    layers += [nn.Linear(7, 6, bias=bias), nn.GELU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    layers += [nn.Linear(6, 2, bias=bias)]
    twin = nn.Sequential(*layers).eval()
    params = model.init(pn.random.key(1))
    assert pn.tree.paths(params) == list(twin.state_dict())
    last = "6" if dropout else "4"
    assert pn.tree.paths(params)[-1].startswith(last + ".")
    twin_of(params, twin)
    x = torch.randn(3, 5)
    with torch.no_grad():
        torch.testing.assert_close(model.apply(params, x), twin(x))
    params_back = pn.Params.from_state_dict(twin.state_dict())
    assert_tree_equal(params_back, params)


def test_mlp_hidden_features_int_is_rejected():
    with pytest.raises(
        TypeError, match=r"hidden_features must be a sequence of widths, e\.g\. \[8\]"
    ):
        pn.nn.mlp(3, 8, 2)


def test_nested_sequential_paths():
    inner = pn.nn.sequential(pn.nn.linear(3, 4), pn.nn.relu)
    model = pn.nn.sequential(inner, pn.nn.linear(4, 2))
    twin = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.Linear(4, 2))
    params = model.init(pn.random.key(0))
    assert pn.tree.paths(params) == list(twin.state_dict())
    twin_of(params, twin)
    x = torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.apply(params, x), twin(x))


def test_sequential_rejects_non_callable_layer():
    with pytest.raises(
        TypeError, match=r"layer 1 must be a pn.nn model or a function of x, got int"
    ):
        pn.nn.sequential(pn.nn.linear(2, 2), 3)


# ---------------------------------------------------------------------------------------------
# keys: reproducibility and the global RNG
# ---------------------------------------------------------------------------------------------


def test_same_key_gives_bitwise_same_params_and_different_keys_differ():
    model = pn.nn.mlp(6, [16, 16], 3)
    a = model.init(pn.random.key(7))
    torch.manual_seed(123)  # the global RNG must not matter
    b = model.init(pn.random.key(7))
    assert_tree_equal(a, b)
    c = model.init(pn.random.key(8))
    for path, leaf_a, leaf_c in zip(
        pn.tree.paths(a), pn.tree.leaves(a), pn.tree.leaves(c), strict=True
    ):
        assert not torch.equal(leaf_a, leaf_c), path
    # Sibling layers with the same fan-in draw from different keys.
    assert not torch.equal(a["2.weight"].flatten()[:48], a["4.weight"].flatten())


def test_init_apply_dropout_leave_global_rng_untouched():
    model = pn.nn.mlp(4, [8], 2, dropout=0.5)
    before = torch.random.get_rng_state()
    params = model.init(pn.random.key(0))
    x = torch.ones(3, 4)
    model.apply(params, x)
    model.apply(params, x, key=pn.random.key(1), train=True)
    pn.nn.dropout(0.3).apply(pn.Params(), x, key=pn.random.key(2), train=True)
    assert torch.equal(torch.random.get_rng_state(), before)


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------


def test_dropout_eval_is_identity():
    x = torch.randn(10, 10)
    drop = pn.nn.dropout(0.5)
    assert torch.equal(drop.apply(pn.Params(), x), x)
    assert torch.equal(drop.apply(pn.Params(), x, key=pn.random.key(0), train=False), x)


def test_dropout_train_without_key_raises():
    with pytest.raises(ValueError, match=r"dropout layer needs a PRNG key in training.*key=key"):
        pn.nn.dropout(0.5).apply(pn.Params(), torch.ones(3), train=True)
    model = pn.nn.mlp(3, [4], 2, dropout=0.1)
    params = model.init(pn.random.key(0))
    with pytest.raises(ValueError, match=r"dropout layer at '2' needs a PRNG key"):
        model.apply(params, torch.ones(1, 3), train=True)


def test_dropout_same_key_same_mask_different_key_different_mask():
    drop = pn.nn.dropout(0.5)
    x = torch.ones(64, 64)
    a = drop.apply(pn.Params(), x, key=pn.random.key(0), train=True)
    b = drop.apply(pn.Params(), x, key=pn.random.key(0), train=True)
    c = drop.apply(pn.Params(), x, key=pn.random.key(1), train=True)
    assert torch.equal(a, b)
    assert not torch.equal(a == 0, c == 0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p):
    n = 200_000
    x = torch.rand(n, dtype=torch.float64) + 0.5
    y = pn.nn.dropout(p).apply(pn.Params(), x, key=pn.random.key(11), train=True)
    zeroed = y == 0
    assert abs(zeroed.double().mean().item() - p) < 6 * math.sqrt(p * (1 - p) / n)
    # Survivors are scaled by 1/(1-p) exactly (to rounding).
    torch.testing.assert_close(y[~zeroed], x[~zeroed] / (1 - p))
    # E[y] = x: the mean is preserved within sampling error.
    spread = math.sqrt(p / (1 - p) * (x**2).mean().item() / n)
    assert abs(y.mean().item() - x.mean().item()) < 6 * spread


def test_dropout_p0_identity_and_p1_zeros():
    x = torch.randn(5, 6)
    key = pn.random.key(0)
    assert torch.equal(pn.nn.dropout(0.0).apply(pn.Params(), x, key=key, train=True), x)
    assert torch.equal(pn.nn.dropout(0.0).apply(pn.Params(), x, train=True), x)
    y = pn.nn.dropout(1.0).apply(pn.Params(), x, key=key, train=True)
    assert torch.equal(y, torch.zeros_like(x))
    assert torch.equal(y, F.dropout(x, 1.0, training=True))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_invalid_probability_uses_torch_wording(p):
    with pytest.raises(
        ValueError, match="dropout probability has to be between 0 and 1"
    ) as pn_error:
        pn.nn.dropout(p)
    if not math.isnan(p):  # torch lets NaN through; purenn rejects it
        with pytest.raises(ValueError) as torch_error:
            nn.Dropout(p)
        assert str(pn_error.value) == str(torch_error.value)


@pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
def test_mlp_invalid_dropout_raises(p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        pn.nn.mlp(2, [2], 2, dropout=p)


# ---------------------------------------------------------------------------------------------
# activations and wrap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (pn.nn.relu, F.relu),
        (pn.nn.gelu, nn.GELU()),
        (pn.nn.silu, F.silu),
        (pn.nn.tanh, nn.Tanh()),
        (pn.nn.sigmoid, nn.Sigmoid()),
        (pn.nn.softmax, lambda x: F.softmax(x, dim=-1)),
        (pn.nn.log_softmax, lambda x: F.log_softmax(x, dim=-1)),
    ],
    ids=["relu", "gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax"],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_equal_torch(ours, reference, dtype):
    x = torch.randn(4, 5, 6, dtype=dtype) * 3
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    as_layer = pn.nn.sequential(ours)
    assert len(as_layer.init(pn.random.key(0))) == 0
    torch.testing.assert_close(as_layer.apply(pn.Params(), x), reference(x), rtol=0, atol=0)


def test_softmax_dim_argument():
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(pn.nn.softmax(x, dim=0), F.softmax(x, dim=0))
    torch.testing.assert_close(pn.nn.log_softmax(x, dim=0), F.log_softmax(x, dim=0))


def test_wrap_function_without_params():
    double = pn.nn.wrap(lambda x: 2 * x)
    assert len(double.init(pn.random.key(0))) == 0
    x = torch.randn(3)
    torch.testing.assert_close(double.apply(pn.Params(), x), 2 * x)
    with pytest.raises(pn.TreeMismatchError, match=r"takes no params, got \['w'\]"):
        double.apply(pn.Params({"w": torch.zeros(1)}), x)


def test_wrap_function_with_params_and_init():
    scale = pn.nn.wrap(
        lambda p, x: p["s"] * x + p["shift"]["b"],
        init=lambda key: {"s": pn.random.normal(key, (3,)), "shift": {"b": torch.ones(3)}},
    )
    params = scale.init(pn.random.key(5))
    assert isinstance(params, pn.Params)
    assert pn.tree.paths(params) == ["s", "shift.b"]
    assert torch.equal(params["s"], pn.random.normal(pn.random.key(5), (3,)))
    x = torch.randn(2, 3)
    torch.testing.assert_close(scale.apply(params, x), params["s"] * x + 1)
    model = pn.nn.sequential(pn.nn.linear(4, 3), scale)
    params = model.init(pn.random.key(0))
    assert pn.tree.paths(params) == ["0.weight", "0.bias", "1.s", "1.shift.b"]


def test_wrap_rejects_non_callable():
    with pytest.raises(TypeError, match=r"pn\.nn\.wrap expects a callable, got int"):
        pn.nn.wrap(3)


# ---------------------------------------------------------------------------------------------
# bad input, purity
# ---------------------------------------------------------------------------------------------


def test_wrong_input_shape_names_layer_path_and_in_features():
    model = pn.nn.mlp(4, [8], 2)
    params = model.init(pn.random.key(0))
    with pytest.raises(pn.ShapeError, match=r"linear layer at '0'.*in_features=4.*got \(5, 3\)"):
        model.apply(params, torch.ones(5, 3))
    with pytest.raises(pn.ShapeError, match=r"linear layer expects input of shape \(\.\.\., 4\)"):
        layer = pn.nn.linear(4, 2)
        layer.apply(layer.init(pn.random.key(0)), torch.ones(4, 3))
    with pytest.raises(pn.ShapeError, match=r"expects input of shape \(\.\.\., 4\).*got \(\)"):
        model.apply(params, torch.tensor(1.0))


def test_params_of_another_model_name_the_layer_path():
    model = pn.nn.mlp(4, [8], 2)
    x = torch.ones(1, 4)
    wider = pn.nn.mlp(4, [16], 2).init(pn.random.key(0))
    with pytest.raises(
        pn.ShapeError,
        match=r"params '0\.weight' of the linear layer at '0' has shape \(16, 4\), expected \(8, 4\)",
    ):
        model.apply(wider, x)
    deeper = pn.nn.mlp(4, [8, 8], 2).init(pn.random.key(0))
    with pytest.raises(pn.TreeMismatchError, match=r"unexpected entries \['4'\]"):
        model.apply(deeper, x)
    shallower = pn.nn.sequential(pn.nn.linear(4, 8)).init(pn.random.key(0))
    with pytest.raises(
        pn.TreeMismatchError, match=r"linear layer at '2'.*missing \['2\.bias', '2\.weight'\]"
    ):
        model.apply(shallower, x)
    no_bias = pn.nn.mlp(4, [8], 2, bias=False).init(pn.random.key(0))
    with pytest.raises(pn.TreeMismatchError, match=r"linear layer at '0'.*missing \['0\.bias'\]"):
        model.apply(no_bias, x)


def test_dict_instead_of_params_raises_type_error():
    layer = pn.nn.linear(2, 2)
    params = layer.init(pn.random.key(0))
    with pytest.raises(TypeError, match=r"params must be pn\.Params.*wrap a dict with pn\.Params"):
        layer.apply(dict(params), torch.ones(2))


def test_apply_is_pure():
    model = pn.nn.mlp(4, [8], 2, dropout=0.5)
    params = model.init(pn.random.key(0))
    x = torch.randn(3, 4)
    snapshot = pn.tree.map(torch.clone, params), x.clone()
    before = versions(params, x)
    model.apply(params, x)
    model.apply(params, x, key=pn.random.key(1), train=True)
    assert versions(params, x) == before
    assert_tree_equal(params, snapshot[0])
    assert torch.equal(x, snapshot[1])


def test_apply_detects_params_mutated_in_place():
    layer = pn.nn.linear(2, 2)
    params = layer.init(pn.random.key(0))
    params["weight"].add_(1.0)
    with pytest.raises(pn.MutatedError, match=r"params\.weight was modified in place"):
        layer.apply(params, torch.ones(2))


# ---------------------------------------------------------------------------------------------
# ensembles under torch.func.vmap
# ---------------------------------------------------------------------------------------------


def test_vmap_ensemble_equals_loop():
    model = pn.nn.mlp(3, [6], 2, dtype=torch.float64)
    members = [model.init(k) for k in pn.random.split(pn.random.key(0), 4)]
    stacked = pn.tree.stack(members)
    x = torch.randn(5, 3, dtype=torch.float64)
    ys = vmap(model.apply, in_dims=(0, None))(stacked, x)
    loop = torch.stack([model.apply(p, x) for p in members])
    assert ys.shape == (4, 5, 2)
    torch.testing.assert_close(ys, loop, rtol=0, atol=1e-14)
    assert not torch.allclose(loop[0], loop[1])


def test_vmap_ensemble_with_dropout_and_per_member_keys_equals_loop():
    model = pn.nn.mlp(3, [32], 2, dropout=0.5, dtype=torch.float64)
    members = [model.init(k) for k in pn.random.split(pn.random.key(0), 4)]
    stacked = pn.tree.stack(members)
    keys = pn.random.split(pn.random.key(1), 4)
    x = torch.randn(5, 3, dtype=torch.float64)
    ys = vmap(lambda p, k: model.apply(p, x, key=k, train=True), in_dims=(0, 0))(stacked, keys)
    loop = torch.stack(
        [model.apply(p, x, key=k, train=True) for p, k in zip(members, keys, strict=True)]
    )
    # Batched and unbatched matmuls may round differently; a different mask would be off by O(0.1).
    torch.testing.assert_close(ys, loop, rtol=0, atol=1e-13)
    # Same params, different keys: the members' masks differ.
    same = pn.tree.stack([members[0]] * 4)
    ys_same = vmap(lambda p, k: model.apply(p, x, key=k, train=True), in_dims=(0, 0))(same, keys)
    assert not torch.allclose(ys_same[0], ys_same[1])


def test_vmap_dropout_masks_per_member_keys_equal_loop_bitwise():
    drop = pn.nn.sequential(pn.nn.relu, pn.nn.dropout(0.3))
    keys = pn.random.split(pn.random.key(2), 4)
    x = torch.randn(16, 8)
    ys = vmap(lambda k: drop.apply(pn.Params(), x, key=k, train=True))(keys)
    loop = torch.stack([drop.apply(pn.Params(), x, key=k, train=True) for k in keys])
    assert torch.equal(ys, loop)
    assert not torch.equal(ys[0] == 0, ys[1] == 0)


# ---------------------------------------------------------------------------------------------
# pn.from_torch
# ---------------------------------------------------------------------------------------------


def _mlp_module():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def _conv_module():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2),
    ).double()
    # Non-trivial running statistics, so eval mode differs from train mode.
    with torch.no_grad():
        net[0].bias.add_(0.5)
        net(torch.randn(8, 2, 6, 6, dtype=torch.float64))
    return net


def test_from_torch_mlp_params_and_outputs():
    module = _mlp_module()
    model, params = pn.from_torch(module)
    assert pn.tree.paths(params) == [name for name, _ in module.named_parameters()]
    assert len(model.init_state()) == 0
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.apply(params, x), module(x), rtol=0, atol=0)
    # Params are copies: not the module's tensors.
    assert params["0.weight"].data_ptr() != module[0].weight.data_ptr()
    assert not params["0.weight"].requires_grad


def test_from_torch_conv_net_eval():
    module = _conv_module().eval()
    model, params = pn.from_torch(module)
    assert pn.tree.paths(params) == [name for name, _ in module.named_parameters()]
    state = model.init_state()
    assert pn.tree.paths(state) == [name for name, _ in module.named_buffers()]
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    y, new_state = model.apply(params, x, state=state)
    with torch.no_grad():
        torch.testing.assert_close(y, module(x), rtol=0, atol=1e-14)
    assert_tree_equal(new_state, state)


def test_from_torch_batchnorm_train_mode_returns_new_state():
    module = _conv_module()
    pristine = copy.deepcopy(module)
    model, params = pn.from_torch(module)
    state = model.init_state()
    state_copy = pn.tree.map(torch.clone, state)
    state_versions = versions(state)
    twin = copy.deepcopy(module).train()
    for step in range(2):
        x = torch.randn(6, 2, 6, 6, dtype=torch.float64) + step
        y, new_state = model.apply(params, x, state=state, train=True)
        with torch.no_grad():
            expected = twin(x)
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-13)
        assert pn.tree.paths(new_state) == [
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
        ]
        assert_tree_close(
            new_state, pn.Params.from_state_dict(dict(twin.named_buffers())), rtol=0, atol=1e-14
        )
        if step == 0:
            # The state passed in is untouched: same values, same version counters.
            assert_tree_equal(state, state_copy)
            assert versions(state) == state_versions
        state = new_state
    assert int(state["1.num_batches_tracked"]) == int(pristine[1].num_batches_tracked) + 2
    bitwise_equal_state_dicts(module.state_dict(), pristine.state_dict())
    assert module.training == pristine.training


def test_from_torch_never_modifies_the_module():
    module = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    module.eval()
    pristine = copy.deepcopy(module)
    model, params = pn.from_torch(module)
    x = torch.randn(8, 4)
    state = model.init_state()
    model.apply(params, x, state=state)
    model.apply(params, x, state=state, train=True)
    pn.grad(lambda p: model.apply(p, x, state=state, train=True)[0].sum())(params)
    bitwise_equal_state_dicts(module.state_dict(), pristine.state_dict())
    assert all(not m.training for m in module.modules())


def test_from_torch_accepts_a_key():
    # Regression: _from_torch called pnr._check_key, which purenn.random does not export.
    model, _ = pn.from_torch(nn.Linear(2, 2))
    params = model.init(pn.random.key(0))
    assert pn.tree.paths(params) == ["weight", "bias"]


def test_from_torch_stateful_model_without_state_raises():
    model, params = pn.from_torch(_conv_module())
    with pytest.raises(pn.StateError, match=r"1\.running_mean.*state=state"):
        model.apply(params, torch.randn(2, 2, 6, 6, dtype=torch.float64))


def test_from_torch_init_reproducible_without_global_rng():
    module = _conv_module()
    pristine = copy.deepcopy(module)
    model, params = pn.from_torch(module)
    before = torch.random.get_rng_state()
    a = model.init(pn.random.key(0))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(99)
    b = model.init(pn.random.key(0))
    assert_tree_equal(a, b)
    c = model.init(pn.random.key(1))
    assert pn.tree.paths(a) == pn.tree.paths(params)
    for path in pn.tree.paths(a):
        assert a[path].shape == params[path].shape
        assert a[path].dtype == params[path].dtype
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert not torch.equal(a["0.weight"], params["0.weight"])
    # reset_parameters really ran: BatchNorm's affine params are back to ones and zeros.
    assert torch.equal(a["1.weight"], torch.ones(3, dtype=torch.float64))
    bound = 1 / math.sqrt(3 * 4 * 4)
    assert a["4.weight"].abs().max() <= bound
    bitwise_equal_state_dicts(module.state_dict(), pristine.state_dict())


def test_from_torch_params_from_another_model():
    model, _ = pn.from_torch(_mlp_module())
    _, other = pn.from_torch(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)).double())
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"missing \['2\.weight', '2\.bias'\]; unexpected \['1\.weight', '1\.bias'\]",
    ):
        model.apply(other, x)


def test_from_torch_wrong_param_shape_names_path():
    model, params = pn.from_torch(_mlp_module())
    bad = pn.tree.set(params, "2.weight", torch.zeros(3, 9, dtype=torch.float64))
    with pytest.raises(pn.ShapeError, match=r"params '2\.weight' has shape \(3, 9\).*\(3, 8\)"):
        model.apply(bad, torch.randn(2, 4, dtype=torch.float64))


def test_from_torch_wrong_input_shape():
    model, params = pn.from_torch(_mlp_module())
    with pytest.raises(pn.ShapeError, match=r"failed on input of shape \(2, 5\)"):
        model.apply(params, torch.randn(2, 5, dtype=torch.float64))


def test_from_torch_dropout_needs_key_in_training():
    model, params = pn.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    with pytest.raises(ValueError, match=r"uses dropout, so training needs a PRNG key"):
        model.apply(params, torch.ones(3, 4), train=True)


def test_from_torch_dropout_key_reproducible():
    module = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model, params = pn.from_torch(module)
    x = torch.ones(3, 4)
    before = torch.random.get_rng_state()
    a = model.apply(params, x, key=pn.random.key(0), train=True)
    b = model.apply(params, x, key=pn.random.key(0), train=True)
    c = model.apply(params, x, key=pn.random.key(1), train=True)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with torch.no_grad():
        torch.testing.assert_close(model.apply(params, x), module.eval()(x))


def test_from_torch_rejects_non_module():
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.Module, got function"):
        pn.from_torch(lambda x: x)


def test_linear_takes_bias_positionally_as_torch_nn_linear_does():
    model = pn.nn.linear(4, 3, False)
    assert pn.tree.paths(model.init(pn.random.key(0))) == ["weight"]
