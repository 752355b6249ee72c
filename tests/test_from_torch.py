"""pn.from_torch on real architectures: ResNet with BatchNorm, TransformerEncoder, dropout, ties."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import purenn as pn
from purenn.testing import assert_tree_close, assert_tree_equal

D = torch.float64


def snapshot(module):
    """Everything apply must leave alone: values, version counters and training flags."""
    return (
        {name: t.clone() for name, t in module.state_dict(keep_vars=True).items()},
        {name: t._version for name, t in module.state_dict(keep_vars=True).items()},
        [m.training for m in module.modules()],
    )


def assert_unchanged(module, before):
    values, counters, flags = before
    after = module.state_dict(keep_vars=True)
    assert list(after) == list(values)
    for name, tensor in after.items():
        assert torch.equal(tensor, values[name]), name
        assert tensor._version == counters[name], name
    assert [m.training for m in module.modules()] == flags


def buffers_of(module):
    return pn.Params.from_state_dict({n: b.detach().clone() for n, b in module.named_buffers()})


# ---------------------------------------------------------------------------------------------
# a small ResNet with BatchNorm
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
        )
        self.layer1 = BasicBlock(4, 4, 1)
        self.layer2 = BasicBlock(4, 8, 2)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 3)
        )

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))))


def _resnet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = ResNet().double()
        with torch.no_grad():  # non-trivial running statistics
            net(torch.randn(8, 3, 8, 8, dtype=D))
    return net.eval()


def test_resnet_eval_matches_and_state_is_its_buffers():
    module = _resnet()
    before = snapshot(module)
    model, params = pn.from_torch(module)
    assert pn.tree.paths(params) == [n for n, _ in module.named_parameters()]
    state = model.init_state()
    assert_tree_equal(state, buffers_of(module))
    x = torch.randn(4, 3, 8, 8, dtype=D)
    y, new_state = model.apply(params, x, state=state)
    with torch.no_grad():
        torch.testing.assert_close(y, module(x), rtol=0, atol=1e-12)
    assert_tree_equal(new_state, state)
    assert_unchanged(module, before)


def test_resnet_training_outputs_state_updates_and_grads_match_the_module():
    module = _resnet()
    before = snapshot(module)
    model, params = pn.from_torch(module)
    twin = copy.deepcopy(module).train()
    twin.head[2].p = 0.0  # the twin cannot share our dropout masks; compare without dropout
    model0, _ = pn.from_torch(twin)
    state = model0.init_state()
    for step in range(3):
        x = torch.randn(4, 3, 8, 8, dtype=D) * (step + 1)
        state_copy, counters = (
            pn.tree.map(torch.clone, state),
            [t._version for t in pn.tree.leaves(state)],
        )

        def loss(p, x=x, state=state):
            y, new_state = model0.apply(p, x, state=state, train=True)
            return y.square().sum(), (y, new_state)

        grads, (y, new_state) = pn.grad(loss, has_aux=True)(params)
        twin.zero_grad()
        expected = twin(x)
        expected.square().sum().backward()
        torch.testing.assert_close(y, expected.detach(), rtol=0, atol=1e-12)
        assert_tree_close(new_state, buffers_of(twin), rtol=0, atol=1e-12)
        grads_expected = {n: p.grad for n, p in twin.named_parameters()}
        assert_tree_close(grads, pn.Params.from_state_dict(grads_expected), rtol=1e-10, atol=1e-12)
        assert_tree_equal(state, state_copy)  # the state passed in is untouched
        assert [t._version for t in pn.tree.leaves(state)] == counters
        state = new_state
    assert int(state["layer2.downsample.1.num_batches_tracked"]) == 1 + 3
    # With its dropout the converted module needs a key, and the key decides the output.
    x = torch.randn(4, 3, 8, 8, dtype=D)
    a, _ = model.apply(params, x, state=state, key=pn.random.key(0), train=True)
    b, _ = model.apply(params, x, state=state, key=pn.random.key(0), train=True)
    c, _ = model.apply(params, x, state=state, key=pn.random.key(1), train=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert_unchanged(module, before)


# ---------------------------------------------------------------------------------------------
# TransformerEncoder
# ---------------------------------------------------------------------------------------------


def _encoder(dropout, norm_first=False):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(
            8, 2, dim_feedforward=16, dropout=dropout, batch_first=True, norm_first=norm_first
        )
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).double()


def _sequence_inputs():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 5, 8, generator=gen, dtype=D)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[0, -2:] = True
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # bool, like the padding mask
    return x, padding, causal


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_train_with_dropout_is_keyed(norm_first):
    module = _encoder(0.1, norm_first).train()
    before = snapshot(module)
    model, params = pn.from_torch(module)
    x, padding, causal = _sequence_inputs()
    rng = torch.random.get_rng_state()

    def run(seed):
        return model.apply(
            params,
            x,
            key=pn.random.key(seed),
            train=True,
            src_key_padding_mask=padding,
            mask=causal,
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert_unchanged(module, before)
    # Gradients flow through the keyed dropout.
    grads = pn.grad(
        lambda p: model.apply(
            p, x, key=pn.random.key(0), train=True, src_key_padding_mask=padding
        ).sum()
    )(params)
    assert all(torch.isfinite(g).all() for g in pn.tree.leaves(grads))


@pytest.mark.parametrize("dropout", [0.0, 1e-12])
def test_transformer_encoder_train_without_effective_dropout_equals_the_module(dropout):
    # dropout=1e-12 runs purenn's keyed attention and dropout, which then keep everything.
    module = _encoder(dropout).train()
    reference = _encoder(0.0).train()
    model, params = pn.from_torch(module)
    x, padding, causal = _sequence_inputs()
    y = model.apply(
        params,
        x,
        key=pn.random.key(0),
        train=True,
        src_key_padding_mask=padding,
        mask=causal,
        is_causal=True,
    )
    with torch.no_grad():
        expected = reference(x, src_key_padding_mask=padding, mask=causal, is_causal=True)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)


def test_transformer_encoder_eval_equals_the_module_with_and_without_its_fast_path():
    module = _encoder(0.1).eval()
    before = snapshot(module)
    model, params = pn.from_torch(module)
    x, padding, causal = _sequence_inputs()
    y = model.apply(params, x, src_key_padding_mask=padding)
    with torch.no_grad():  # torch's fused fast path
        fast = module(x, src_key_padding_mask=padding)
    slow = module(x, src_key_padding_mask=padding).detach()  # params require grad: no fast path
    torch.testing.assert_close(y, fast, rtol=0, atol=1e-12)
    keep = ~padding
    torch.testing.assert_close(y[keep], slow[keep], rtol=0, atol=1e-12)
    y_causal = model.apply(params, x, mask=causal)
    torch.testing.assert_close(y_causal, module(x, mask=causal).detach(), rtol=0, atol=1e-12)
    assert_unchanged(module, before)


def test_transformer_encoder_vmap_over_keys_equals_loop():
    model, params = pn.from_torch(_encoder(0.2))
    x, padding, _ = _sequence_inputs()
    keys = pn.random.split(pn.random.key(3), 3)

    def run(k):
        return model.apply(params, x, key=k, train=True, src_key_padding_mask=padding)

    batched = vmap(run)(keys)
    loop = torch.stack([run(k) for k in keys])
    torch.testing.assert_close(batched, loop, rtol=0, atol=1e-12)
    assert (loop[0] - loop[1]).abs().max() > 0.1


def test_multihead_attention_module_dropout_with_and_without_weights():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).double()
    model, params = pn.from_torch(module)
    x = torch.randn(2, 4, 8, dtype=D)
    for need_weights in (True, False):
        run = lambda seed, nw=need_weights: model.apply(  # noqa: E731
            params, (x, x, x), key=pn.random.key(seed), train=True, need_weights=nw
        )
        (a, wa), (b, _), (c, _) = run(0), run(0), run(1)
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
        assert (wa is None) == (not need_weights)
    eval_out, eval_weights = model.apply(params, (x, x, x))
    with torch.no_grad():
        expected = module.eval()(x, x, x)
    torch.testing.assert_close(eval_out, expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(eval_weights, expected[1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# every dropout function torch has, answered from the key
# ---------------------------------------------------------------------------------------------


class Functional(nn.Module):
    """A module whose forward is `fn(x, training)`: torch functions called directly."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x, self.training)


def _sdpa(x, training):
    return F.scaled_dot_product_attention(x, x, x, dropout_p=0.5 if training else 0.0)


DROPOUTS = {
    "Dropout": (nn.Dropout(0.5), (4, 6, 5)),
    "Dropout(inplace)": (nn.Dropout(0.5, inplace=True), (4, 6, 5)),
    "Dropout1d": (nn.Dropout1d(0.5), (4, 6, 5)),
    "Dropout1d-unbatched": (nn.Dropout1d(0.5), (16, 5)),
    "Dropout2d": (nn.Dropout2d(0.5), (4, 6, 3, 3)),
    "Dropout3d": (nn.Dropout3d(0.5), (4, 6, 2, 2, 2)),
    "Dropout3d-unbatched": (nn.Dropout3d(0.5), (16, 2, 2, 2)),
    "AlphaDropout": (nn.AlphaDropout(0.5), (4, 6, 5)),
    "FeatureAlphaDropout": (nn.FeatureAlphaDropout(0.5), (4, 6, 3, 3)),
    "torch.dropout": (Functional(lambda x, train: torch.dropout(x, 0.5, train)), (4, 6, 5)),
    "torch.feature_dropout": (
        Functional(lambda x, train: torch.feature_dropout(x, 0.5, train)),
        (4, 6, 5),
    ),
    "scaled_dot_product_attention": (Functional(_sdpa), (4, 6, 5)),
}


@pytest.mark.parametrize("name", list(DROPOUTS))
def test_dropout_functions_draw_from_the_key(name):
    module, shape = DROPOUTS[name]
    model, params = pn.from_torch(module)
    x = torch.randn(shape, dtype=D)
    x_version = x._version
    rng = torch.random.get_rng_state()
    a, b, c = (model.apply(params, x, key=pn.random.key(s), train=True) for s in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert x._version == x_version  # inplace=True does not write into the input
    torch.testing.assert_close(model.apply(params, x), module.eval()(x))
    # Under vmap each member gets its own key: the same masks as a loop over the keys.
    keys = pn.random.split(pn.random.key(2), 3)
    batched = vmap(lambda k: model.apply(params, x, key=k, train=True))(keys)
    loop = torch.stack([model.apply(params, x, key=k, train=True) for k in keys])
    torch.testing.assert_close(batched, loop, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "spatial_dims"),
    [
        ("Dropout", None),
        ("Dropout1d", (2,)),
        ("Dropout2d", (2, 3)),
        ("Dropout3d-unbatched", (1, 2, 3)),
        ("torch.feature_dropout", (2,)),
    ],
)
def test_keyed_dropout_has_torch_semantics(name, spatial_dims):
    # Elements, or whole channels for the feature variants, are zeroed with probability p;
    # survivors are scaled by 1/(1-p).
    module, shape = DROPOUTS[name]
    model, params = pn.from_torch(module)
    x = torch.rand(shape, dtype=D) + 1.0
    y = model.apply(params, x, key=pn.random.key(0), train=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], 2 * x[kept])
    assert 0.25 < kept.double().mean() < 0.75
    if spatial_dims is not None:
        per_channel = kept.double().mean(dim=spatial_dims)
        assert ((per_channel == 0) | (per_channel == 1)).all()


def test_keyed_alpha_dropout_has_torch_semantics():
    model, params = pn.from_torch(nn.AlphaDropout(0.2))
    x = torch.randn(200_000, dtype=D)
    y = model.apply(params, x, key=pn.random.key(0), train=True)
    alpha, p = 1.7580993408473766, 0.2
    a = 1 / math.sqrt((alpha**2 * p + 1) * (1 - p))
    dropped_value = -alpha * a + alpha * a * p
    dropped = (y - dropped_value).abs() < 1e-12
    torch.testing.assert_close(y[~dropped], a * x[~dropped] + alpha * a * p)
    assert abs(dropped.double().mean().item() - p) < 6 * math.sqrt(p * (1 - p) / x.numel())
    # Alpha dropout keeps standard normal inputs at mean 0, variance 1, as torch's does.
    assert abs(y.mean().item()) < 0.02
    assert abs(y.var().item() - 1) < 0.02


def test_dropout_errors():
    model, params = pn.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    with pytest.raises(
        ValueError,
        match=r"this Sequential uses dropout, so training needs a PRNG key \(it called dropout\)",
    ):
        model.apply(params, torch.ones(3, 4), train=True)
    model.apply(params, torch.ones(3, 4))  # evaluation needs no key
    # p=0 dropout never asks for a key.
    quiet, quiet_params = pn.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0)))
    quiet.apply(quiet_params, torch.ones(3, 4), train=True)
    bad, _ = pn.from_torch(Functional(lambda x, train: F.dropout(x, 1.5, train)))
    with pytest.raises(
        ValueError, match=r"dropout probability has to be between 0 and 1, but got 1.5"
    ):
        bad.apply(pn.Params(), torch.ones(3), key=pn.random.key(0), train=True)
    with pytest.raises(
        ValueError, match=r"key must be a concrete tensor: it cannot vary under torch.func.vmap"
    ):
        vmap(model.init)(pn.random.split(pn.random.key(0), 2))


def test_forward_keyword_arguments_reach_the_module():
    model, params = pn.from_torch(_encoder(0.0).eval())
    x, padding, _ = _sequence_inputs()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'padding'"):
        model.apply(params, x, padding=padding)
    assert not torch.equal(
        model.apply(params, x, src_key_padding_mask=padding), model.apply(params, x)
    )


# ---------------------------------------------------------------------------------------------
# tied parameters and buffers, shared submodules
# ---------------------------------------------------------------------------------------------


class Tied(nn.Module):
    """GPT-style weight tying: the output projection is the embedding matrix."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, idx):
        return self.out(torch.tanh(self.emb(idx)))


class SharedBlock(nn.Module):
    """One Linear and one BatchNorm instance, each used twice."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.net = nn.Sequential(self.block, self.norm, nn.Tanh(), self.block, self.norm)

    def forward(self, x):
        return self.net(x)


def _tied():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Tied().double()


def test_tied_weights_are_one_param_and_apply_and_grads_match_the_module():
    module = _tied()
    before = snapshot(module)
    model, params = pn.from_torch(module)
    assert pn.tree.paths(params) == ["emb.weight"]
    idx = torch.tensor([0, 3, 4, 3])
    y = model.apply(params, idx)
    with torch.no_grad():
        torch.testing.assert_close(y, module(idx), rtol=0, atol=0)
    target = torch.randn(4, 5, dtype=D)

    def loss(p):
        return (model.apply(p, idx) - target).square().sum()

    grads = pn.grad(loss)(params)
    twin = copy.deepcopy(module)
    assert twin.out.weight is twin.emb.weight
    (twin(idx) - target).square().sum().backward()
    assert_tree_close(
        grads,
        pn.Params.from_state_dict({"emb.weight": twin.emb.weight.grad}),
        rtol=1e-12,
        atol=1e-12,
    )
    # The shared weight's gradient is the sum over both of its uses.
    untied = copy.deepcopy(module)
    untied.out.weight = nn.Parameter(untied.emb.weight.detach().clone())
    (untied(idx) - target).square().sum().backward()
    torch.testing.assert_close(
        grads["emb.weight"], untied.emb.weight.grad + untied.out.weight.grad, rtol=1e-12, atol=1e-12
    )
    assert_unchanged(module, before)


def test_tied_weights_init_returns_the_params_keys_and_stays_tied():
    module = _tied()
    model, params = pn.from_torch(module)
    fresh = model.init(pn.random.key(0))
    assert pn.tree.paths(fresh) == pn.tree.paths(params) == ["emb.weight"]
    assert [(t.shape, t.dtype) for t in pn.tree.leaves(fresh)] == [
        (t.shape, t.dtype) for t in pn.tree.leaves(params)
    ]
    assert_tree_equal(fresh, model.init(pn.random.key(0)))
    assert not torch.equal(fresh["emb.weight"], params["emb.weight"])
    twin = copy.deepcopy(module)
    with torch.no_grad():
        twin.emb.weight.copy_(fresh["emb.weight"])  # also the output projection: they are tied
    idx = torch.tensor([1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(model.apply(fresh, idx), twin(idx), rtol=0, atol=0)


def test_a_submodule_used_twice_is_converted_once():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        module = SharedBlock().double()
    before = snapshot(module)
    model, params = pn.from_torch(module)
    assert pn.tree.paths(params) == ["block.weight", "block.bias", "norm.weight", "norm.bias"]
    state = model.init_state()
    assert pn.tree.paths(state) == [
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    ]
    x = torch.randn(6, 4, dtype=D)

    def loss(p):
        y, new_state = model.apply(p, x, state=state, train=True)
        return y.square().sum(), (y, new_state)

    grads, (y, new_state) = pn.grad(loss, has_aux=True)(params)
    twin = copy.deepcopy(module).train()
    expected = twin(x)
    expected.square().sum().backward()
    torch.testing.assert_close(y, expected.detach(), rtol=0, atol=1e-12)
    assert_tree_close(new_state, buffers_of(twin), rtol=0, atol=1e-12)
    assert int(new_state["norm.num_batches_tracked"]) == 2  # updated by both uses
    grads_expected = {n: p.grad for n, p in twin.named_parameters()}
    assert_tree_close(grads, pn.Params.from_state_dict(grads_expected), rtol=1e-10, atol=1e-12)
    fresh = model.init(pn.random.key(3))
    assert pn.tree.paths(fresh) == pn.tree.paths(params)
    model.apply(fresh, x, state=state)
    assert_unchanged(module, before)


def test_tied_buffers_are_one_state_entry():
    class Scale(nn.Module):
        def forward(self, x):
            return x * self.scale

    module = nn.Sequential(Scale(), nn.Linear(3, 3).double(), Scale())
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    module[0].register_buffer("scale", scale)
    module[2].register_buffer("scale", scale)
    model, params = pn.from_torch(module)
    state = model.init_state()
    assert pn.tree.paths(state) == ["0.scale"]
    x = torch.randn(2, 3, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(
            model.apply(params, x, state=state)[0], module(x), rtol=0, atol=0
        )
        # A new value of the tied buffer reaches both of its uses.
        doubled = pn.Params.from_state_dict({"0.scale": 2 * scale})
        y, _ = model.apply(params, x, state=doubled)
        torch.testing.assert_close(y, module[1](2 * x * scale) * 2 * scale, rtol=0, atol=1e-12)


def test_conversion_makes_no_real_copy_of_the_weights():
    class RealTensorOps(TorchDispatchMode):
        """Records every op that produces a tensor off the meta device."""

        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops += [
                (str(func), tuple(t.shape))
                for t in tree_leaves(out)
                if isinstance(t, torch.Tensor) and t.device.type != "meta"
            ]
            return out

    module = nn.Sequential(_tied(), nn.Linear(5, 64), nn.Linear(64, 64))
    with RealTensorOps() as recorded:
        model = pn.nn.TorchModel(module)  # no buffers, so nothing real to copy
    assert recorded.ops == []
    assert pn.tree.paths(model.init(pn.random.key(0))) == [n for n, _ in module.named_parameters()]


def test_init_refuses_a_parameter_no_reset_sets_and_accepts_one_a_parent_sets():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.ones(4))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()
            self.w = nn.Parameter(torch.ones(3))

        def reset_parameters(self):
            nn.init.normal_(self.w)

        def forward(self, x):
            return x * self.w.sum() + self.inner.p.sum()

    class Covering(Outer):
        def reset_parameters(self):
            nn.init.normal_(self.w)
            nn.init.constant_(self.inner.p, 0.5)

    # Outer's reset leaves its child's parameter alone: init must not return empty memory.
    with pytest.raises(ValueError, match=r"cannot re-initialise \['inner\.p'\]"):
        pn.from_torch(Outer())[0].init(pn.random.key(0))
    fresh = pn.from_torch(Covering())[0].init(pn.random.key(0))
    assert torch.equal(fresh["inner.p"], torch.full((4,), 0.5))


def test_init_runs_private_resets_children_first_as_torch_constructors_do():
    # nn.MultiheadAttention initialises in _reset_parameters, after its out_proj (a Linear)
    # was built: in_proj xavier-uniform, both biases zero.
    model, _ = pn.from_torch(nn.MultiheadAttention(64, 4))
    fresh = model.init(pn.random.key(0))
    assert torch.equal(fresh["in_proj_bias"], torch.zeros(192))
    assert torch.equal(fresh["out_proj.bias"], torch.zeros(64))
    bound = math.sqrt(6 / (64 + 192))  # xavier_uniform_ of the (192, 64) in_proj_weight
    assert fresh["in_proj_weight"].abs().max() <= bound
    assert float(fresh["in_proj_weight"].std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    encoder, params = pn.from_torch(
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False)
    )
    assert pn.tree.paths(encoder.init(pn.random.key(1))) == pn.tree.paths(params)


def test_apply_leaves_the_callers_inputs_alone_when_the_module_writes_into_them():
    class AddsInPlace(nn.Module):
        def forward(self, x, *, shift):
            x += 1
            shift.mul_(2)
            return x + shift

    for module, kwargs in ((nn.ReLU(inplace=True), {}), (AddsInPlace(), {"shift": torch.ones(2)})):
        model, params = pn.from_torch(module)
        x = torch.tensor([-1.0, 2.0])
        given = {k: v.clone() for k, v in kwargs.items()}
        expected = module(x.clone(), **{k: v.clone() for k, v in kwargs.items()})
        torch.testing.assert_close(model.apply(params, x, **given), expected)
        assert torch.equal(x, torch.tensor([-1.0, 2.0]))
        assert x._version == 0
        for k, v in given.items():
            assert torch.equal(v, kwargs[k]), k


def test_state_and_input_errors_name_the_buffer_and_the_dtype():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.register_buffer("scale", torch.tensor([1.0, 2.0, 3.0]))

        def forward(self, x):
            return self.lin(x) * self.scale

    model, params = pn.from_torch(Scaled())
    with pytest.raises(
        pn.StateError, match=r"state 'scale' has shape \(1,\), but the Scaled's buffer has \(3,\)"
    ):
        model.apply(params, torch.ones(2, 3), state=pn.Params({"scale": torch.ones(1)}))
    with pytest.raises(pn.StateError, match=r"missing \['scale'\], unexpected \['other'\]"):
        model.apply(params, torch.ones(2, 3), state=pn.Params({"other": torch.ones(3)}))
    with pytest.raises(
        pn.ShapeError,
        match=r"failed on input of shape \(2, 3\) \(dtype torch\.float64\): mat1 and mat2",
    ):
        model.apply(params, torch.ones(2, 3, dtype=torch.float64), state=model.init_state())
