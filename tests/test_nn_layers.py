"""pn.nn layers against their torch.nn twins: outputs, state, init distributions, keys, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import purenn as pn
from purenn.testing import assert_tree_close, assert_tree_equal

D = torch.float64


def load(module, params, state=None):
    """Load purenn params (and state) into a torch module, strictly, and return it."""
    tensors = params.to_state_dict()
    if state is not None:
        tensors.update(state.to_state_dict())
    module.load_state_dict(tensors, strict=True)
    return module


def perturbed(params, seed=0):
    """Params plus noise, so that ones/zeros inits do not hide mistakes in scale and shift."""
    keys = iter(pn.random.split(pn.random.key(seed), max(len(pn.tree.leaves(params)), 1)))
    return pn.tree.map(
        lambda leaf: leaf + pn.random.normal(next(keys), tuple(leaf.shape), dtype=leaf.dtype),
        params,
    )


def versions(*trees):
    return [leaf._version for tree in trees for leaf in pn.tree.leaves(tree)]


def assert_like_torch_init(ours, theirs, *, exact_bound=None):
    """Same distribution, within sampling error: mean, std, and (for uniforms) the range."""
    ours, theirs = ours.double().flatten(), theirs.double().flatten()
    n, std = ours.numel(), theirs.std().item()
    assert abs(ours.mean().item() - theirs.mean().item()) < 6 * std * math.sqrt(2 / n)
    # The sample std of n draws has a relative spread below ~1/sqrt(n) for these distributions.
    assert abs(ours.std().item() / std - 1) < 6 / math.sqrt(n)
    if exact_bound is not None:
        assert ours.abs().max().item() <= exact_bound
        # P(all n draws of U(-b, b) have |x| < b (1 - 10/n)) = (1 - 10/n)^n < e^-10.
        assert ours.abs().max().item() > (1 - min(1.0, 10 / n)) * exact_bound


def torch_init(module_fn):
    """A module freshly initialised by torch (under a forked, seeded global RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return module_fn()


# ---------------------------------------------------------------------------------------------
# convolutions
# ---------------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw, n):
    groups = draw(st.sampled_from([1, 2]))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(n))
    padding = draw(
        st.one_of(
            st.tuples(*[st.integers(0, 2)] * n),
            st.sampled_from(["valid", "same"] if all(s == 1 for s in stride) else ["valid"]),
        )
    )
    reach = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    spatial = tuple(draw(st.integers(r, r + 4)) + 2 for r in reach)  # > padding, for reflect
    batched = draw(st.booleans())
    return dict(
        args=(in_channels, out_channels, kernel),
        kwargs=dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode
        ),
        bias=draw(st.booleans()),
        shape=((2,) if batched else ()) + (in_channels, *spatial),
    )


@pytest.mark.parametrize(
    ("factory", "twin", "n"),
    [(pn.nn.conv1d, nn.Conv1d, 1), (pn.nn.conv2d, nn.Conv2d, 2)],
    ids=["conv1d", "conv2d"],
)
@given(data=st.data())
def test_conv_matches_torch(factory, twin, n, data):
    case = data.draw(conv_cases(n))
    conv = factory(*case["args"], **case["kwargs"], bias=case["bias"], dtype=D)
    params = conv.init(pn.random.key(data.draw(st.integers(0, 2**32 - 1))))
    module = load(twin(*case["args"], **case["kwargs"], bias=case["bias"]).double(), params)
    assert pn.tree.paths(params) == list(module.state_dict())
    x = torch.randn(case["shape"], dtype=D)
    y = conv.apply(params, x)  # warning-free: pytest turns warnings into errors
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using padding='same' with even kernel lengths")
        torch.testing.assert_close(y, module(x), rtol=0, atol=1e-12)


def test_conv3d_matches_torch_and_round_trips_state_dict():
    conv = pn.nn.conv3d(2, 4, (1, 2, 3), stride=(1, 2, 1), padding=1, groups=2, dtype=D)
    params = conv.init(pn.random.key(0))
    module = load(
        nn.Conv3d(2, 4, (1, 2, 3), stride=(1, 2, 1), padding=1, groups=2).double(), params
    )
    x = torch.randn(2, 2, 3, 5, 4, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(conv.apply(params, x), module(x), rtol=0, atol=1e-12)
    assert_tree_equal(pn.Params.from_state_dict(module.state_dict()), params)


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_conv_same_padding_with_even_kernel_pads_like_torch(mode):
    # torch puts the odd element of 'same' padding after; it warns for zeros mode, purenn does not.
    conv = pn.nn.conv2d(2, 3, (2, 4), padding="same", dilation=(1, 3), padding_mode=mode, dtype=D)
    params = conv.init(pn.random.key(0))
    module = load(
        nn.Conv2d(2, 3, (2, 4), padding="same", dilation=(1, 3), padding_mode=mode).double(), params
    )
    x = torch.randn(2, 2, 5, 11, dtype=D)
    y = conv.apply(params, x)
    assert y.shape == (2, 3, 5, 11)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using padding='same' with even kernel lengths")
        torch.testing.assert_close(y, module(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (pn.nn.conv2d(16, 32, 3), nn.Conv2d(16, 32, 3)),
        (pn.nn.conv1d(12, 64, 5, groups=4), nn.Conv1d(12, 64, 5, groups=4)),
    ],
    ids=["conv2d", "conv1d-groups"],
)
def test_conv_init_matches_torch_distribution(ours, theirs):
    params = ours.init(pn.random.key(1))
    reference = torch_init(lambda: theirs.reset_parameters() or theirs)
    fan_in = reference.weight[0].numel()
    for name in ("weight", "bias"):
        assert params[name].shape == getattr(reference, name).shape
        assert params[name].dtype == torch.float32
        assert_like_torch_init(
            params[name], getattr(reference, name), exact_bound=1 / math.sqrt(fan_in)
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(groups=2), r"conv2d: in_channels must be divisible by groups, got in_channels=3"),
        (dict(groups=0), r"conv2d: groups must be a positive int, got 0"),
        (dict(padding="full"), r"Invalid padding string 'full', should be one of"),
        (dict(padding="same", stride=2), r"padding='same' is not supported for strided"),
        (dict(padding_mode="mirror"), r"padding_mode must be one of \[.*'zeros'\], but got"),
        (dict(stride=0), r"conv2d: stride must be a positive int, got 0"),
        (dict(padding=-1), r"conv2d: padding must be an int >= 0, got -1"),
        (dict(kernel_size=(3, 3, 3)), r"kernel_size must be an int or a sequence of 2 ints"),
    ],
)
def test_conv_rejects_bad_hyperparameters(kwargs, match):
    args = dict(in_channels=3, out_channels=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=match):
        pn.nn.conv2d(**args)


def test_conv_out_channels_must_divide_groups():
    with pytest.raises(ValueError, match=r"out_channels must be divisible by groups"):
        pn.nn.conv1d(4, 3, 1, groups=2)


def test_conv_input_errors_name_the_layer_path_and_expected_shape():
    model = pn.nn.sequential(pn.nn.conv2d(3, 4, 3), pn.nn.relu)
    params = model.init(pn.random.key(0))
    with pytest.raises(
        pn.ShapeError,
        match=r"the conv2d layer at '0' expects input \(N, 3, H, W\) or \(3, H, W\) "
        r"\(in_channels=3\), got \(8, 4, 32, 32\)",
    ):
        model.apply(params, torch.ones(8, 4, 32, 32))
    with pytest.raises(pn.ShapeError, match=r"expects input \(N, 3, H, W\).*got \(3, 32\)"):
        model.apply(params, torch.ones(3, 32))
    with pytest.raises(
        pn.ShapeError, match=r"at least the dilated kernel size \(3, 3\).*\(1, 3, 2, 5\)"
    ):
        model.apply(params, torch.ones(1, 3, 2, 5))
    with pytest.raises(
        pn.ShapeError, match=r"has torch.float32 params but got a torch.float64 input"
    ):
        model.apply(params, torch.ones(1, 3, 5, 5, dtype=D))
    reflect = pn.nn.conv1d(1, 1, 3, padding=3, padding_mode="reflect")
    with pytest.raises(pn.ShapeError, match=r"pads with mode 'reflect', which needs padding <"):
        reflect.apply(reflect.init(pn.random.key(0)), torch.ones(1, 1, 3))


def test_conv_params_from_another_model():
    conv = pn.nn.conv2d(3, 4, 3)
    x = torch.ones(1, 3, 5, 5)
    with pytest.raises(
        pn.ShapeError,
        match=r"params 'weight' of the conv2d layer has shape \(4, 3, 5, 5\), expected \(4, 3, 3, 3\)",
    ):
        conv.apply(pn.nn.conv2d(3, 4, 5).init(pn.random.key(0)), x)
    with pytest.raises(
        pn.TreeMismatchError, match=r"conv2d layer do not fit it: missing \['bias'\]"
    ):
        conv.apply(pn.nn.conv2d(3, 4, 3, bias=False).init(pn.random.key(0)), x)


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------


@given(
    kernel=st.integers(1, 3),
    stride=st.one_of(st.none(), st.integers(1, 3)),
    pad=st.integers(0, 1),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
    batched=st.booleans(),
    size=st.integers(0, 4),
)
def test_pool2d_matches_torch(
    kernel, stride, pad, dilation, ceil_mode, count_include_pad, batched, size
):
    pad = min(pad, kernel // 2)
    # Both spatial sizes fit the dilated window, so the 1-d cases (last axis) are valid too.
    x = torch.randn(
        *((2,) if batched else ()),
        3,
        kernel * dilation + size,
        kernel * dilation + size + 1,
        dtype=D,
    )
    cases = [
        (
            pn.nn.max_pool2d(kernel, stride, pad, dilation, ceil_mode=ceil_mode),
            nn.MaxPool2d(kernel, stride, pad, dilation, ceil_mode=ceil_mode),
        ),
        (
            pn.nn.avg_pool2d(kernel, stride, pad, ceil_mode, count_include_pad),
            nn.AvgPool2d(kernel, stride, pad, ceil_mode, count_include_pad),
        ),
        (
            pn.nn.max_pool1d(kernel, stride, pad, dilation, ceil_mode=ceil_mode),
            nn.MaxPool1d(kernel, stride, pad, dilation, ceil_mode=ceil_mode),
        ),
        (
            pn.nn.avg_pool1d(kernel, stride, pad, ceil_mode, count_include_pad),
            nn.AvgPool1d(kernel, stride, pad, ceil_mode, count_include_pad),
        ),
    ]
    for ours, theirs in cases:
        sample = x if isinstance(theirs, (nn.MaxPool2d, nn.AvgPool2d)) else x[..., 0, :]
        assert len(ours.init(pn.random.key(0))) == 0
        torch.testing.assert_close(ours.apply(pn.Params(), sample), theirs(sample), rtol=0, atol=0)


def test_pool_window_larger_than_a_dilated_input_names_the_layer():
    with pytest.raises(
        pn.ShapeError, match=r"max_pool1d layer gets input \(3, 4\), too small for its window"
    ):
        pn.nn.max_pool1d(3, None, 0, 2).apply(pn.Params(), torch.randn(3, 4))


def test_max_pool_return_indices_and_avg_divisor_and_adaptive():
    x = torch.randn(2, 3, 7, 6, dtype=D)
    values, indices = pn.nn.max_pool2d(2, return_indices=True).apply(pn.Params(), x)
    expected_values, expected_indices = nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(values, expected_values)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(
        pn.nn.avg_pool2d(3, 2, 1, divisor_override=4).apply(pn.Params(), x),
        nn.AvgPool2d(3, 2, 1, divisor_override=4)(x),
    )
    for size in (1, (3, None), (2, 4)):
        torch.testing.assert_close(
            pn.nn.adaptive_avg_pool2d(size).apply(pn.Params(), x), nn.AdaptiveAvgPool2d(size)(x)
        )
    torch.testing.assert_close(
        pn.nn.adaptive_avg_pool1d(3).apply(pn.Params(), x[:, :, 0]),
        nn.AdaptiveAvgPool1d(3)(x[:, :, 0]),
    )


def test_pool_errors():
    with pytest.raises(
        ValueError,
        match=r"max_pool2d: pad should be at most half of effective kernel size, but got pad=2, kernel_size=3",
    ):
        pn.nn.max_pool2d(3, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool1d: pad should be at most half"):
        pn.nn.avg_pool1d(2, padding=2)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel_size must be a positive int, got 0"):
        pn.nn.max_pool2d(0)
    model = pn.nn.sequential(pn.nn.relu, pn.nn.max_pool2d(3))
    with pytest.raises(
        pn.ShapeError,
        match=r"max_pool2d layer at '1' expects input \(N, C, H, W\) or \(C, H, W\), got \(5, 5\)",
    ):
        model.apply(pn.Params(), torch.ones(5, 5))
    with pytest.raises(
        pn.ShapeError,
        match=r"max_pool2d layer at '1' gets input \(1, 1, 2, 5\), too small.*\(0, 1\)",
    ):
        model.apply(pn.Params(), torch.ones(1, 1, 2, 5))
    with pytest.raises(pn.TreeMismatchError, match=r"avg_pool2d layer takes no params"):
        pn.nn.avg_pool2d(2).apply(pn.Params({"w": torch.ones(1)}), torch.ones(1, 2, 2))


# ---------------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_idx", [None, 0, 3, -2])
def test_embedding_matches_torch_outputs_and_grads(padding_idx):
    emb = pn.nn.embedding(6, 4, padding_idx, dtype=D)
    params = emb.init(pn.random.key(0))
    module = load(nn.Embedding(6, 4, padding_idx).double(), params)
    assert pn.tree.paths(params) == ["weight"]
    if padding_idx is not None:
        assert torch.equal(params["weight"][padding_idx], torch.zeros(4, dtype=D))
    x = torch.tensor([[0, 3, 4], [5, 4, 1]])
    y = emb.apply(params, x)
    assert torch.equal(y, module(x).detach())
    # torch gives the padding row no gradient; so does F.embedding with our params.
    grads = pn.grad(lambda p: (emb.apply(p, x) ** 2).sum())(params)
    (module(x) ** 2).sum().backward()
    torch.testing.assert_close(grads["weight"], module.weight.grad)


def test_embedding_init_matches_torch_distribution():
    params = pn.nn.embedding(500, 64).init(pn.random.key(2))
    reference = torch_init(lambda: nn.Embedding(500, 64))
    assert_like_torch_init(params["weight"], reference.weight.detach())


def test_embedding_errors():
    with pytest.raises(
        ValueError, match=r"embedding: Padding_idx must be within num_embeddings, got padding_idx=6"
    ):
        pn.nn.embedding(6, 4, padding_idx=6)
    with pytest.raises(ValueError, match=r"embedding: embedding_dim must be a positive int, got 0"):
        pn.nn.embedding(6, 0)
    model = pn.nn.sequential(pn.nn.embedding(6, 4))
    params = model.init(pn.random.key(0))
    with pytest.raises(
        pn.ShapeError,
        match=r"embedding layer at '0' expects an int64 or int32 tensor of indices in \[0, 6\).*got a torch.float32 tensor",
    ):
        model.apply(params, torch.ones(3))


# ---------------------------------------------------------------------------------------------
# layer_norm, rms_norm, group_norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "shape"),
    [
        (pn.nn.layer_norm(5, dtype=D), nn.LayerNorm(5), (3, 4, 5)),
        (pn.nn.layer_norm((4, 5), eps=1e-3, dtype=D), nn.LayerNorm((4, 5), eps=1e-3), (3, 4, 5)),
        (pn.nn.layer_norm(5, bias=False, dtype=D), nn.LayerNorm(5, bias=False), (2, 5)),
        (
            pn.nn.layer_norm(5, elementwise_affine=False, dtype=D),
            nn.LayerNorm(5, elementwise_affine=False),
            (5,),
        ),
        (pn.nn.rms_norm(5, dtype=D), nn.RMSNorm(5), (3, 4, 5)),
        (pn.nn.rms_norm((4, 5), eps=1e-2, dtype=D), nn.RMSNorm((4, 5), eps=1e-2), (3, 4, 5)),
        (
            pn.nn.rms_norm(5, elementwise_affine=False, dtype=D),
            nn.RMSNorm(5, elementwise_affine=False),
            (2, 5),
        ),
        (pn.nn.group_norm(2, 4, dtype=D), nn.GroupNorm(2, 4), (3, 4, 3, 2)),
        (
            pn.nn.group_norm(4, 4, affine=False, dtype=D),
            nn.GroupNorm(4, 4, affine=False),
            (3, 4, 5),
        ),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, tuple) else str(v),
)
def test_feature_norms_match_torch(ours, theirs, shape):
    params = ours.init(pn.random.key(0))
    reference = theirs.double()
    assert pn.tree.paths(params) == list(reference.state_dict())
    assert_tree_equal(params, pn.Params.from_state_dict(reference.state_dict()))  # ones, zeros
    params = perturbed(params)
    load(reference, params)
    x = torch.randn(shape, dtype=D) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(ours.apply(params, x), reference(x), rtol=0, atol=1e-12)


def test_feature_norm_errors():
    model = pn.nn.sequential(pn.nn.linear(3, 4), pn.nn.layer_norm((2, 4)))
    params = model.init(pn.random.key(0))
    with pytest.raises(
        pn.ShapeError,
        match=r"layer_norm layer at '1' expects input \(\.\.\., 2, 4\) \(normalized_shape=\(2, 4\)\), got \(3, 4\)",
    ):
        model.apply(params, torch.ones(3, 3))
    rms = pn.nn.rms_norm(4)
    with pytest.raises(
        pn.ShapeError, match=r"rms_norm layer expects input \(\.\.\., 4\).*got \(4, 3\)"
    ):
        rms.apply(rms.init(pn.random.key(0)), torch.ones(4, 3))
    with pytest.raises(
        ValueError, match=r"group_norm: num_channels must be divisible by num_groups"
    ):
        pn.nn.group_norm(3, 4)
    with pytest.raises(
        ValueError, match=r"layer_norm: normalized_shape must be a positive int, got 0"
    ):
        pn.nn.layer_norm((3, 0))
    with pytest.raises(ValueError, match=r"layer_norm: eps must be a finite float >= 0, got -1"):
        pn.nn.layer_norm(3, eps=-1)
    gn = pn.nn.group_norm(2, 4)
    with pytest.raises(pn.ShapeError, match=r"group_norm layer expects input \(N, 4, \*\)"):
        gn.apply(gn.init(pn.random.key(0)), torch.ones(2, 3, 5))


# ---------------------------------------------------------------------------------------------
# batch_norm: running statistics as explicit state
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("twin", "shape"),
    [
        (nn.BatchNorm1d, (6, 3)),
        (nn.BatchNorm1d, (4, 3, 5)),
        (nn.BatchNorm2d, (4, 3, 2, 5)),
        (nn.BatchNorm3d, (2, 3, 2, 2, 3)),
    ],
    ids=["1d-NC", "1d-NCL", "2d", "3d"],
)
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_and_eval_match_torch(twin, shape, momentum, affine):
    bn = pn.nn.batch_norm(3, eps=1e-4, momentum=momentum, affine=affine, dtype=D)
    params = perturbed(bn.init(pn.random.key(0)))
    state = bn.init_state()
    module = load(twin(3, eps=1e-4, momentum=momentum, affine=affine).double(), params, state)
    assert pn.tree.paths(state) == ["running_mean", "running_var", "num_batches_tracked"]
    assert_tree_equal(state, pn.Params.from_state_dict(dict(module.named_buffers())))
    for step in range(3):
        x = torch.randn(shape, dtype=D) * (step + 1) + step
        before = pn.tree.map(torch.clone, state), versions(state)
        y, new_state = bn.apply(params, x, state=state, train=True)
        with torch.no_grad():
            torch.testing.assert_close(y, module.train()(x), rtol=0, atol=1e-12)
        assert_tree_close(
            new_state, pn.Params.from_state_dict(dict(module.named_buffers())), rtol=0, atol=1e-12
        )
        assert_tree_equal(state, before[0])  # the state passed in is untouched
        assert versions(state) == before[1]
        state = new_state
    x = torch.randn(shape, dtype=D)
    y, same_state = bn.apply(params, x, state=state)
    with torch.no_grad():
        torch.testing.assert_close(y, module.eval()(x), rtol=0, atol=1e-12)
    assert same_state is state


def test_batch_norm_without_running_stats_has_no_state_and_uses_batch_stats():
    bn = pn.nn.batch_norm(3, track_running_stats=False, dtype=D)
    assert not bn.has_state
    assert len(bn.init_state()) == 0
    params = perturbed(bn.init(pn.random.key(0)))
    module = load(nn.BatchNorm2d(3, track_running_stats=False).double(), params)
    x = torch.randn(4, 3, 2, 2, dtype=D)
    with torch.no_grad():
        for train in (True, False):
            torch.testing.assert_close(bn.apply(params, x, train=train), module.train(train)(x))


def test_batch_norm_gradients_match_torch():
    bn = pn.nn.batch_norm(3, dtype=D)
    params = perturbed(bn.init(pn.random.key(0)))
    module = load(nn.BatchNorm2d(3).double(), params, bn.init_state())
    x = torch.randn(4, 3, 2, 2, dtype=D)

    def loss(p, x):
        y, _ = bn.apply(p, x, state=bn.init_state(), train=True)
        return (y.sin() * torch.arange(4.0, dtype=D).reshape(4, 1, 1, 1)).sum()

    grads, x_grad = pn.grad(loss, argnums=(0, 1))(params, x)
    x_leaf = x.clone().requires_grad_()
    out = module(x_leaf)
    (out.sin() * torch.arange(4.0, dtype=D).reshape(4, 1, 1, 1)).sum().backward()
    torch.testing.assert_close(grads["weight"], module.weight.grad)
    torch.testing.assert_close(grads["bias"], module.bias.grad)
    torch.testing.assert_close(x_grad, x_leaf.grad)


def test_batch_norm_errors():
    model = pn.nn.sequential(pn.nn.linear(2, 4), pn.nn.batch_norm(4))
    params, state = model.init(pn.random.key(0)), model.init_state()
    with pytest.raises(pn.StateError, match=r"Sequential has state \(1\.running_mean.*state=state"):
        model.apply(params, torch.ones(3, 2))
    with pytest.raises(
        pn.ShapeError,
        match=r"batch_norm layer at '1': Expected more than 1 value per channel when training, got input size \(1, 4\)",
    ):
        model.apply(params, torch.ones(1, 2), state=state, train=True)
    model.apply(params, torch.ones(1, 2), state=state)  # one sample is fine in evaluation
    # ...but not without running statistics, where evaluation uses the batch's (torch raises too).
    untracked = pn.nn.batch_norm(4, track_running_stats=False)
    with pytest.raises(
        pn.ShapeError,
        match=r"more than 1 value per channel when using batch statistics \(track_running_stats=False\)",
    ):
        untracked.apply(untracked.init(pn.random.key(0)), torch.ones(1, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(4, track_running_stats=False).eval()(torch.ones(1, 4))
    other = pn.nn.sequential(pn.nn.linear(2, 4), pn.nn.batch_norm(5)).init_state()
    with pytest.raises(
        pn.StateError,
        match=r"state '1\.running_mean' of the batch_norm layer at '1' has shape \(5,\), expected \(4,\)",
    ):
        model.apply(params, torch.ones(3, 2), state=other)
    with pytest.raises(
        pn.StateError,
        match=r"state for the batch_norm layer at '1' does not fit it: missing \['1\.num_batches_tracked'\]",
    ):
        model.apply(
            params,
            torch.ones(3, 2),
            state=pn.tree.map(
                lambda t: t,
                pn.Params(
                    {
                        "1": {
                            "running_mean": state["1.running_mean"],
                            "running_var": state["1.running_var"],
                        }
                    }
                ),
            ),
        )
    bn = pn.nn.batch_norm(3)
    with pytest.raises(
        pn.ShapeError,
        match=r"batch_norm layer expects input \(N, 3\), \(N, 3, L\), \(N, 3, H, W\) or \(N, 3, D, H, W\) \(num_features=3\), got \(8, 4, 2, 2\)",
    ):
        bn.apply(bn.init(pn.random.key(0)), torch.ones(8, 4, 2, 2), state=bn.init_state())
    with pytest.raises(
        ValueError, match=r"batch_norm: momentum must be a float in \[0, 1\] or None, got 1.5"
    ):
        pn.nn.batch_norm(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"batch_norm: num_features must be a positive int, got 0"):
        pn.nn.batch_norm(0)


# ---------------------------------------------------------------------------------------------
# flatten, residual, and a small conv net round-tripping through torch.nn
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(1, -1), (0, -1), (1, 2), (-3, -2), (2, 2)])
def test_flatten_matches_torch(start, end):
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(pn.nn.flatten(start, end).apply(pn.Params(), x), nn.Flatten(start, end)(x))


def test_flatten_errors():
    with pytest.raises(
        pn.ShapeError,
        match=r"flatten layer at '1' expects input with at least 2 dims \(start_dim=1, end_dim=-1\), got \(5,\)",
    ):
        pn.nn.sequential(pn.nn.relu, pn.nn.flatten()).apply(pn.Params(), torch.ones(5))
    with pytest.raises(
        ValueError, match=r"flatten: start_dim cannot come after end_dim, got start_dim=3"
    ):
        pn.nn.flatten(3, 1)


class TorchResidual(nn.Module):
    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x):
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


def _small_resnet(dtype=D):
    """The same net twice: as pn.nn factories and as torch.nn modules."""
    ours = pn.nn.sequential(
        pn.nn.conv2d(3, 4, 3, padding=1, bias=False, dtype=dtype),
        pn.nn.batch_norm(4, dtype=dtype),
        pn.nn.relu,
        pn.nn.residual(
            pn.nn.sequential(
                pn.nn.conv2d(4, 8, 3, stride=2, padding=1, dtype=dtype),
                pn.nn.batch_norm(8, dtype=dtype),
                pn.nn.relu,
                pn.nn.conv2d(8, 8, 3, padding=1, dtype=dtype),
            ),
            shortcut=pn.nn.conv2d(4, 8, 1, stride=2, dtype=dtype),
        ),
        pn.nn.max_pool2d(2),
        pn.nn.adaptive_avg_pool2d(1),
        pn.nn.flatten(),
        pn.nn.dropout(0.0),
        pn.nn.linear(8, 3, dtype=dtype),
    )
    theirs = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        TorchResidual(
            nn.Sequential(
                nn.Conv2d(4, 8, 3, stride=2, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1),
            ),
            shortcut=nn.Conv2d(4, 8, 1, stride=2),
        ),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.0),
        nn.Linear(8, 3),
    ).to(dtype)
    return ours, theirs


def test_small_resnet_state_dict_round_trip_and_training_steps_match_torch():
    model, module = _small_resnet()
    params, state = model.init(pn.random.key(0)), model.init_state()
    assert pn.tree.paths(params) == [name for name, _ in module.named_parameters()]
    assert pn.tree.paths(state) == [name for name, _ in module.named_buffers()]
    load(module, params, state)
    assert_tree_equal(pn.Params.from_state_dict(dict(module.named_parameters())), params)
    for step in range(2):
        x = torch.randn(4, 3, 8, 8, dtype=D) + step
        y, state = model.apply(params, x, state=state, train=True)
        module.zero_grad()
        expected = module.train()(x)
        torch.testing.assert_close(y, expected.detach(), rtol=0, atol=1e-12)
        assert_tree_close(
            state, pn.Params.from_state_dict(dict(module.named_buffers())), rtol=0, atol=1e-12
        )

    def loss(p):
        y, new_state = model.apply(p, x, state=state, train=True)
        return y.square().sum(), new_state

    grads, state = pn.grad(loss, has_aux=True)(params)
    module.zero_grad()
    module(x).square().sum().backward()  # updates the module's running statistics too
    assert_tree_close(
        grads,
        pn.Params.from_state_dict({n: p.grad for n, p in module.named_parameters()}),
        rtol=1e-9,
        atol=1e-12,
    )
    x = torch.randn(2, 3, 8, 8, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(
            model.apply(params, x, state=state)[0], module.eval()(x), rtol=0, atol=1e-12
        )


def test_residual_identity_shortcut_and_errors():
    block = pn.nn.sequential(pn.nn.linear(4, 4, dtype=D), pn.nn.tanh)
    res = pn.nn.residual(block)
    params = res.init(pn.random.key(0))
    assert pn.tree.paths(params) == ["block.0.weight", "block.0.bias"]
    module = load(TorchResidual(nn.Sequential(nn.Linear(4, 4), nn.Tanh())).double(), params)
    x = torch.randn(3, 4, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(res.apply(params, x), module(x))
    wrong = pn.nn.sequential(pn.nn.residual(pn.nn.linear(4, 2)))
    with pytest.raises(
        pn.ShapeError,
        match=r"residual at '0' adds the block's output \(3, 2\) to the shortcut's \(3, 4\)",
    ):
        wrong.apply(wrong.init(pn.random.key(0)), torch.ones(3, 4))
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"params for the residual have unexpected entries \['shortcut'\]",
    ):
        res.apply(pn.Params({"block": params["block"], "shortcut": params["block"]}), x)
    with pytest.raises(
        TypeError, match=r"residual: block must be a pn.nn model or a function of x, got int"
    ):
        pn.nn.residual(3)


# ---------------------------------------------------------------------------------------------
# every layer: keys, the global RNG, purity
# ---------------------------------------------------------------------------------------------

# (model, input, needs state); each has random init or randomness in training.
LAYERS = {
    "conv1d": (lambda: pn.nn.conv1d(2, 3, 3), lambda: torch.randn(2, 2, 5)),
    "conv2d": (
        lambda: pn.nn.conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
        lambda: torch.randn(2, 2, 4, 4),
    ),
    "embedding": (lambda: pn.nn.embedding(5, 3, padding_idx=1), lambda: torch.tensor([[0, 1, 4]])),
    "multi_head_attention": (
        lambda: pn.nn.multi_head_attention(4, 2, dropout=0.5, add_bias_kv=True),
        lambda: torch.randn(3, 2, 4),
    ),
    "batch_norm_net": (
        lambda: pn.nn.sequential(pn.nn.linear(3, 4), pn.nn.batch_norm(4), pn.nn.dropout(0.5)),
        lambda: torch.randn(5, 3),
    ),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_same_key_same_init_and_output_different_keys_differ_no_global_rng(name):
    make, make_x = LAYERS[name]
    model, x = make(), make_x()
    kwargs = {"state": model.init_state()} if model.has_state else {}
    before = torch.random.get_rng_state()
    a, b, c = (model.init(pn.random.key(seed)) for seed in (7, 7, 8))
    assert_tree_equal(a, b)
    for path in pn.tree.paths(a):
        if a[path].unique().numel() > 1:  # constant inits (zero biases, unit scales) do not vary
            assert not torch.equal(a[path], c[path]), path
    ya, yb, yc = (
        model.apply(a, x, key=pn.random.key(seed), train=True, **kwargs) for seed in (1, 1, 2)
    )
    assert_tree_equal(ya, yb)
    if name in ("multi_head_attention", "batch_norm_net"):  # layers with dropout
        assert not torch.equal(pn.tree.leaves(ya)[0], pn.tree.leaves(yc)[0])
    model.apply(a, x, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("name", list(LAYERS))
def test_apply_never_writes_into_params_state_or_input(name):
    make, make_x = LAYERS[name]
    model, x = make(), make_x()
    params, state = model.init(pn.random.key(0)), model.init_state()
    kwargs = {"state": state} if model.has_state else {}
    snapshot = pn.tree.map(torch.clone, (params, state, x))
    counters = versions(params, state, x)
    for train in (False, True):
        model.apply(params, x, key=pn.random.key(1), train=train, **kwargs)
    pn.grad(
        lambda p: (
            pn.tree.leaves(model.apply(p, x, key=pn.random.key(1), train=True, **kwargs))[0]
            .float()
            .sum()
        )
    )(params)
    assert versions(params, state, x) == counters
    assert_tree_equal((params, state, x), snapshot)


def test_unknown_keyword_argument_is_rejected():
    layer = pn.nn.linear(2, 2)
    with pytest.raises(
        TypeError,
        match=r"Linear.apply got unexpected keyword arguments \['mask'\]: it takes key=, train=, state= and no other",
    ):
        layer.apply(layer.init(pn.random.key(0)), torch.ones(2), mask=None)


# ---------------------------------------------------------------------------------------------
# multi_head_attention
# ---------------------------------------------------------------------------------------------

MHA_CONFIGS = {
    "default": dict(),
    "batch_first": dict(batch_first=True),
    "kdim_vdim": dict(kdim=3, vdim=5, batch_first=True),
    "no_bias": dict(bias=False),
    "bias_kv_zero_attn": dict(add_bias_kv=True, add_zero_attn=True),
}


def _attention_inputs(config, batched=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lead = (2,) if batched else ()
    kdim, vdim = config.get("kdim", 8), config.get("vdim", 8)
    q = torch.randn(*lead, 5, 8, generator=gen, dtype=D)
    k = torch.randn(*lead, 6, kdim, generator=gen, dtype=D)
    v = torch.randn(*lead, 6, vdim, generator=gen, dtype=D)
    if batched and not config.get("batch_first", False):
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


def _masks(kind, batched=True):
    padding = torch.zeros(2, 6, dtype=torch.bool) if batched else torch.zeros(6, dtype=torch.bool)
    padding[..., -2:] = True
    attn = torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) < 0.3
    attn[:, 0] = False  # every query sees at least one key
    if kind == "float":
        padding = torch.zeros(padding.shape, dtype=D).masked_fill(padding, float("-inf"))
        attn = torch.randn(5, 6, dtype=D)
    return dict(key_padding_mask=padding, attn_mask=attn)


@pytest.mark.parametrize("config", list(MHA_CONFIGS))
@pytest.mark.parametrize("masks", [None, "bool", "float"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multi_head_attention_matches_torch(config, masks, need_weights):
    kwargs = MHA_CONFIGS[config]
    attn = pn.nn.multi_head_attention(8, 2, **kwargs, dtype=D)
    params = attn.init(pn.random.key(0))
    module = nn.MultiheadAttention(8, 2, **kwargs).double()
    assert pn.tree.paths(params) == list(module.state_dict())
    params = perturbed(params)
    load(module, params)
    q, k, v = _attention_inputs(kwargs)
    options = dict(need_weights=need_weights, **({} if masks is None else _masks(masks)))
    for average in (True, False):
        for train in (False, True):  # dropout is 0: training changes nothing
            out, weights = attn.apply(
                params, (q, k, v), average_attn_weights=average, train=train, **options
            )
            with torch.no_grad():
                expected, expected_weights = module.train(train)(
                    q, k, v, average_attn_weights=average, **options
                )
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
            if need_weights:
                torch.testing.assert_close(weights, expected_weights, rtol=0, atol=1e-12)
            else:
                assert weights is None and expected_weights is None


def test_multi_head_attention_self_attention_unbatched_3d_mask_and_causal():
    attn = pn.nn.multi_head_attention(8, 2, dtype=D)
    params = perturbed(attn.init(pn.random.key(0)))
    module = load(nn.MultiheadAttention(8, 2).double(), params)
    x = torch.randn(5, 8, dtype=D)  # unbatched (L, E)
    with torch.no_grad():
        torch.testing.assert_close(attn.apply(params, x)[0], module(x, x, x)[0], rtol=0, atol=1e-12)
        mask3 = torch.randn(2, 5, 5, dtype=D)  # (num_heads, L, S) for unbatched input
        torch.testing.assert_close(
            attn.apply(params, x, attn_mask=mask3)[1],
            module(x, x, x, attn_mask=mask3)[1],
            rtol=0,
            atol=1e-12,
        )
        xb = torch.randn(5, 3, 8, dtype=D)
        causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=D)
        expected = module(xb, xb, xb, attn_mask=causal, is_causal=True, need_weights=False)[0]
        torch.testing.assert_close(
            attn.apply(params, xb, attn_mask=causal, is_causal=True)[0],
            expected,
            rtol=0,
            atol=1e-12,
        )
        # Without a mask, is_causal builds the causal mask (torch would demand one).
        torch.testing.assert_close(
            attn.apply(params, xb, is_causal=True)[0], expected, rtol=0, atol=1e-12
        )


def test_multi_head_attention_init_matches_torch_distribution():
    attn = pn.nn.multi_head_attention(64, 4, add_bias_kv=True)
    params = attn.init(pn.random.key(3))
    reference = torch_init(lambda: nn.MultiheadAttention(64, 4, add_bias_kv=True))
    assert_like_torch_init(
        params["in_proj_weight"],
        reference.in_proj_weight.detach(),
        exact_bound=math.sqrt(6 / (64 + 192)),
    )
    assert_like_torch_init(
        params["out_proj.weight"], reference.out_proj.weight.detach(), exact_bound=1 / 8
    )
    both = torch.cat([params["bias_k"], params["bias_v"]])
    assert_like_torch_init(both, torch.cat([reference.bias_k, reference.bias_v]).detach())
    assert torch.equal(params["in_proj_bias"], torch.zeros(192))
    assert torch.equal(params["out_proj.bias"], torch.zeros(64))
    separate = pn.nn.multi_head_attention(64, 4, kdim=32, vdim=16).init(pn.random.key(4))
    other = torch_init(lambda: nn.MultiheadAttention(64, 4, kdim=32, vdim=16))
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        assert_like_torch_init(separate[name], getattr(other, name).detach())


def test_multi_head_attention_dropout_drops_attention_weights_with_the_key():
    attn = pn.nn.multi_head_attention(8, 2, dropout=0.5, dtype=D)
    params = perturbed(attn.init(pn.random.key(0)))
    x = torch.randn(5, 3, 8, dtype=D)
    _, clean = attn.apply(params, x, average_attn_weights=False)
    out, dropped = attn.apply(
        params, x, average_attn_weights=False, key=pn.random.key(1), train=True
    )
    kept = dropped != 0
    assert 0.3 < kept.double().mean() < 0.7
    torch.testing.assert_close(dropped[kept], 2 * clean[kept])
    again, _ = attn.apply(params, x, key=pn.random.key(1), train=True)
    other, _ = attn.apply(params, x, key=pn.random.key(2), train=True)
    assert torch.equal(out, again)
    assert not torch.allclose(out, other)
    # A vanishing rate keeps every weight: the keyed path then equals torch's attention.
    tiny = pn.nn.multi_head_attention(8, 2, dropout=1e-12, dtype=D)
    module = load(nn.MultiheadAttention(8, 2).double(), params)
    with torch.no_grad():
        for need_weights in (True, False):
            torch.testing.assert_close(
                tiny.apply(params, x, key=pn.random.key(0), train=True, need_weights=need_weights)[
                    0
                ],
                module(x, x, x)[0],
                rtol=0,
                atol=1e-10,
            )


def test_multi_head_attention_errors():
    with pytest.raises(
        ValueError,
        match=r"multi_head_attention: embed_dim must be divisible by num_heads, got embed_dim=8 and num_heads=3",
    ):
        pn.nn.multi_head_attention(8, 3)
    with pytest.raises(
        ValueError, match=r"multi_head_attention: num_heads must be a positive int, got 0"
    ):
        pn.nn.multi_head_attention(8, 0)
    with pytest.raises(
        ValueError,
        match=r"multi_head_attention: dropout probability has to be between 0 and 1, but got -0.1",
    ):
        pn.nn.multi_head_attention(8, 2, dropout=-0.1)
    model = pn.nn.sequential(pn.nn.multi_head_attention(8, 2, batch_first=True, dropout=0.1))
    params = model.init(pn.random.key(0))
    with pytest.raises(
        pn.ShapeError,
        match=r"multi_head_attention layer at '0' expects query \(N, L, 8\) or \(L, 8\) \(embed_dim=8, kdim=8, vdim=8\), got \(2, 5, 4\)",
    ):
        model.apply(params, torch.ones(2, 5, 4))
    attn = model.layers[0]
    p0 = params["0"]
    x = torch.ones(2, 5, 8)
    with pytest.raises(
        TypeError,
        match=r"takes x = query \(self-attention\) or a tuple \(query, key, value\), got a tuple of 2",
    ):
        attn.apply(p0, (x, x))
    with pytest.raises(
        pn.ShapeError, match=r"needs key and value with the same sequence length and batch size"
    ):
        attn.apply(p0, (x, x, torch.ones(2, 4, 8)))
    with pytest.raises(
        pn.ShapeError, match=r"expects key_padding_mask of shape \(2, 5\), got \(5,\)"
    ):
        attn.apply(p0, x, key_padding_mask=torch.zeros(5, dtype=torch.bool))
    with pytest.raises(
        pn.ShapeError, match=r"expects attn_mask of shape \(5, 5\) or \(4, 5, 5\), got \(2, 5, 5\)"
    ):
        attn.apply(p0, x, attn_mask=torch.zeros(2, 5, 5))
    with pytest.raises(
        pn.ShapeError, match=r"expects a bool or floating attn_mask, got torch.int64"
    ):
        attn.apply(p0, x, attn_mask=torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"multi_head_attention layer has dropout=0.1 and needs a PRNG key"
    ):
        attn.apply(p0, x, train=True)
    with pytest.raises(
        TypeError,
        match=r"got unexpected keyword arguments \['src_mask'\]: it takes key=, train=, state= and attn_mask=, average_attn_weights=",
    ):
        attn.apply(p0, x, src_mask=None)
    wrong = pn.nn.multi_head_attention(8, 2, kdim=4).init(pn.random.key(0))
    with pytest.raises(
        pn.TreeMismatchError,
        match=r"multi_head_attention layer do not fit it: missing \['in_proj_weight'\]; unexpected \['k_proj_weight'",
    ):
        attn.apply(wrong, x)
    no_bias = pn.nn.multi_head_attention(8, 2, bias=False).init(pn.random.key(0))
    with pytest.raises(pn.TreeMismatchError, match=r"missing \['in_proj_bias'\]"):
        attn.apply(no_bias, x)


def test_linear_names_a_dtype_mismatch_and_follows_its_params_dtype():
    layer = pn.nn.linear(2, 3)
    params = layer.init(pn.random.key(0))
    with pytest.raises(
        pn.ShapeError,
        match=r"linear layer has torch\.float32 params but got a torch\.float64 input",
    ):
        layer.apply(params, torch.ones(1, 2, dtype=torch.float64))
    doubled = pn.tree.map(lambda t: t.double(), params)
    assert layer.apply(doubled, torch.ones(1, 2, dtype=torch.float64)).dtype == torch.float64


def test_layers_run_under_autocast_like_torch_modules():
    # Under autocast a bfloat16 activation meets float32 params: autocast casts, so the
    # layers' dtype checks stand aside, and the result is torch's own.
    model = pn.nn.sequential(
        pn.nn.conv2d(3, 4, 3),
        pn.nn.relu,
        pn.nn.conv2d(4, 4, 3),
        pn.nn.flatten(),
        pn.nn.linear(16, 5),
        pn.nn.relu,
        pn.nn.linear(5, 2),
    )
    params = model.init(pn.random.key(0))
    twin = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        nn.Flatten(),
        nn.Linear(16, 5),
        nn.ReLU(),
        nn.Linear(5, 2),
    )
    twin.load_state_dict(params.to_state_dict())
    x = torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y, expected = model.apply(params, x), twin(x)
    assert y.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_multi_head_attention_names_a_floating_mask_of_another_dtype():
    attn = pn.nn.multi_head_attention(8, 2, batch_first=True)
    params = attn.init(pn.random.key(0))
    x = torch.randn(2, 3, 8)
    for name, mask in (
        ("attn_mask", torch.zeros(3, 3, dtype=torch.float64)),
        ("key_padding_mask", torch.zeros(2, 3, dtype=torch.float64)),
    ):
        with pytest.raises(
            pn.ShapeError, match=rf"got a torch\.float64 {name} for a torch\.float32 query"
        ):
            attn.apply(params, x, **{name: mask})
        attn.apply(params, x, **{name: mask.float()})
