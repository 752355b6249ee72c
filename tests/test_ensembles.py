"""Ensembles: torch.func.vmap over stacked params, per-member BatchNorm state and dropout keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import vmap

import purenn as pn
from purenn.testing import assert_tree_close, assert_tree_equal

D = torch.float64
MEMBERS = 4


def _conv_net():
    return pn.nn.sequential(
        pn.nn.conv2d(2, 4, 3, padding=1, dtype=D),
        pn.nn.batch_norm(4, dtype=D),
        pn.nn.relu,
        pn.nn.dropout(0.3),
        pn.nn.max_pool2d(2),
        pn.nn.flatten(),
        pn.nn.linear(4 * 2 * 2, 3, dtype=D),
        pn.nn.batch_norm(3, momentum=None, dtype=D),
    )


def _ensemble(model, x):
    """Members with their own params and (after one loop step each) their own running stats."""
    members = [model.init(k) for k in pn.random.split(pn.random.key(0), MEMBERS)]
    warm_keys = pn.random.split(pn.random.key(9), MEMBERS)
    states = [
        model.apply(p, x * (i + 1), state=model.init_state(), key=k, train=True)[1]
        for i, (p, k) in enumerate(zip(members, warm_keys, strict=True))
    ]
    return members, states


def _stacked_outputs(results):
    ys = torch.stack([y for y, _ in results])
    return ys, pn.tree.stack([s for _, s in results])


@pytest.mark.parametrize("train", [True, False])
def test_vmap_over_params_state_and_keys_equals_loop(train):
    model = _conv_net()
    x = torch.randn(6, 2, 4, 4, dtype=D)
    members, states = _ensemble(model, x)
    keys = pn.random.split(pn.random.key(1), MEMBERS)

    def member(p, s, k):
        return model.apply(p, x, state=s, key=k, train=train)

    ys, new_states = vmap(member, in_dims=(0, 0, 0))(
        pn.tree.stack(members), pn.tree.stack(states), keys
    )
    loop_ys, loop_states = _stacked_outputs(
        [member(p, s, k) for p, s, k in zip(members, states, keys, strict=True)]
    )
    assert ys.shape == (MEMBERS, 6, 3)
    torch.testing.assert_close(ys, loop_ys, rtol=0, atol=1e-12)
    assert_tree_close(new_states, loop_states, rtol=0, atol=1e-12)
    for bn in ("1", "7"):
        tracked = new_states[f"{bn}.num_batches_tracked"]
        assert torch.equal(tracked, torch.full((MEMBERS,), 2 if train else 1))
    if not train:  # evaluation reads each member's running statistics and returns them as they are
        assert_tree_equal(new_states, pn.tree.stack(states))
    assert not torch.allclose(ys[0], ys[1])


def test_same_params_different_keys_give_different_dropout_per_member():
    model = _conv_net()
    x = torch.randn(6, 2, 4, 4, dtype=D)
    params = model.init(pn.random.key(0))
    same = pn.tree.stack([params] * MEMBERS)
    states = pn.tree.stack([model.init_state()] * MEMBERS)
    keys = pn.random.split(pn.random.key(1), MEMBERS)

    def member(p, s, k):
        return model.apply(p, x, state=s, key=k, train=True)

    ys, _ = vmap(member)(same, states, keys)
    ys_again, _ = vmap(member)(same, states, keys)
    assert torch.equal(ys, ys_again)
    assert not torch.allclose(ys[0], ys[1])
    loop = torch.stack([member(params, model.init_state(), k)[0] for k in keys])
    torch.testing.assert_close(ys, loop, rtol=0, atol=1e-12)


def test_vmap_of_grad_training_step_equals_loop():
    model = _conv_net()
    x = torch.randn(6, 2, 4, 4, dtype=D)
    target = torch.randn(6, 3, dtype=D)
    members, states = _ensemble(model, x)
    keys = pn.random.split(pn.random.key(2), MEMBERS)

    def loss(p, s, k, x):
        y, new_state = model.apply(p, x, state=s, key=k, train=True)
        return pn.losses.mse(y, target), new_state

    step = pn.grad(loss, has_aux=True)
    xs = torch.stack([x + i for i in range(MEMBERS)])  # per-member data too
    grads, new_states = vmap(step)(pn.tree.stack(members), pn.tree.stack(states), keys, xs)
    loop = [step(*args) for args in zip(members, states, keys, xs, strict=True)]
    assert_tree_close(grads, pn.tree.stack([g for g, _ in loop]), rtol=1e-10, atol=1e-12)
    assert_tree_close(new_states, pn.tree.stack([s for _, s in loop]), rtol=0, atol=1e-12)


def test_vmap_attention_with_dropout_keys_equals_loop():
    attn = pn.nn.multi_head_attention(8, 2, dropout=0.3, batch_first=True, dtype=D)
    members = [attn.init(k) for k in pn.random.split(pn.random.key(0), MEMBERS)]
    keys = pn.random.split(pn.random.key(1), MEMBERS)
    x = torch.randn(2, 5, 8, dtype=D)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, -1] = True

    def member(p, k):
        return attn.apply(p, x, key=k, train=True, key_padding_mask=mask)

    out, weights = vmap(member)(pn.tree.stack(members), keys)
    loop = [member(p, k) for p, k in zip(members, keys, strict=True)]
    torch.testing.assert_close(out, torch.stack([o for o, _ in loop]), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, torch.stack([w for _, w in loop]), rtol=0, atol=1e-12)
    # need_weights=False returns None for the weights, which vmap cannot return: take [0].
    only_out = vmap(lambda p, k: member(p, k)[0])(pn.tree.stack(members), keys)
    torch.testing.assert_close(only_out, out, rtol=0, atol=1e-12)


def test_vmap_over_a_converted_torch_module_with_batch_norm_and_dropout():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.3), nn.Linear(4, 2))
    model, _ = pn.from_torch(module.double())
    members = [model.init(k) for k in pn.random.split(pn.random.key(0), MEMBERS)]
    keys = pn.random.split(pn.random.key(1), MEMBERS)
    x = torch.randn(5, 3, dtype=D)

    def member(p, s, k):
        return model.apply(p, x, state=s, key=k, train=True)

    states = pn.tree.stack([model.init_state()] * MEMBERS)
    ys, new_states = vmap(member)(pn.tree.stack(members), states, keys)
    loop_ys, loop_states = _stacked_outputs(
        [member(p, model.init_state(), k) for p, k in zip(members, keys, strict=True)]
    )
    torch.testing.assert_close(ys, loop_ys, rtol=0, atol=1e-12)
    assert_tree_close(new_states, loop_states, rtol=0, atol=1e-12)
    assert not torch.allclose(ys[0], ys[1])
