"""pn.tree: map/flatten/paths/set, arithmetic, stack/unstack, allclose/diff/summary, mismatch errors."""

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import purenn as pn


def params(scale: float = 1.0) -> pn.Params:
    return pn.Params(
        {
            "0": {"weight": scale * torch.ones(2, 3), "bias": scale * torch.ones(2)},
            "1": {"weight": scale * torch.ones(1, 2)},
        }
    )


@pn.tree.node
class Pair:
    count: torch.Tensor
    trace: pn.Params
    extra: pn.Params | None = None
    name: str = attrs.field(default="pair", metadata={"static": True})


def test_map_over_several_trees_and_paths_in_order():
    out = pn.tree.map(lambda a, b: a + 2 * b, params(), params(3.0))
    assert pn.tree.paths(out) == ["0.weight", "0.bias", "1.weight"]
    assert torch.equal(out["0.weight"], torch.full((2, 3), 7.0))


@pytest.mark.parametrize(
    "other, message",
    [
        (
            pn.Params({"0": {"weight": torch.ones(2, 3)}, "1": {"weight": torch.ones(1, 2)}}),
            r"at '0\.bias', tree has it but rest\[0\] does not",
        ),
        (
            pn.Params(
                {
                    "0": {
                        "weight": torch.ones(2, 3),
                        "bias": torch.ones(2),
                        "extra": torch.ones(1),
                    },
                    "1": {"weight": torch.ones(1, 2)},
                }
            ),
            r"at '0\.extra', rest\[0\] has it but tree does not",
        ),
        (
            pn.Params(
                {
                    "1": {"weight": torch.ones(1, 2)},
                    "0": {"weight": torch.ones(2, 3), "bias": torch.ones(2)},
                }
            ),
            r"at '<root>', the same keys in a different order",
        ),
        (
            pn.Params(
                {"0": {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "1": torch.ones(1, 2)}
            ),
            r"at '1', tree has Params with entries \[weight\] but rest\[0\] has a leaf",
        ),
        (
            # '0' differs before the missing '1' in leaf order, so '0' is named.
            pn.Params({"0": torch.ones(2, 3)}),
            r"at '0', tree has Params with entries \[weight, bias\] but rest\[0\] has a leaf",
        ),
    ],
)
def test_structure_mismatch_names_the_first_differing_path(other, message):
    with pytest.raises(pn.TreeMismatchError, match=message):
        pn.tree.map(torch.add, params(), other)


def test_flatten_unflatten_round_trip_and_errors():
    leaves, treedef = pn.tree.flatten(params())
    assert len(leaves) == 3 and pn.tree.structure(params()) == treedef
    rebuilt = pn.tree.unflatten(treedef, [leaf * 0 for leaf in leaves])
    assert isinstance(rebuilt, pn.Params) and float(pn.tree.global_norm(rebuilt)) == 0.0
    with pytest.raises(ValueError, match="treedef has 3 leaves but 2 were given"):
        pn.tree.unflatten(treedef, leaves[:2])
    with pytest.raises(TypeError, match=r"treedef must come from pn\.tree\.flatten"):
        pn.tree.unflatten(["not a treedef"], leaves)


def test_set_returns_a_new_tree_and_leaves_the_old_one():
    p = params()
    q = pn.tree.set(p, "0.bias", torch.zeros(2))
    assert torch.equal(p["0.bias"], torch.ones(2)) and torch.equal(q["0.bias"], torch.zeros(2))
    assert q["0.weight"] is p["0.weight"] and q["1"] is p["1"]
    added = pn.tree.set(p, "1.bias", torch.zeros(1))  # a new last key adds, like item assignment
    assert pn.tree.paths(added)[-1] == "1.bias"
    # Inside a state an added entry would be ignored, so a misspelt key raises.
    state = pn.optim.adam().init(p)
    with pytest.raises(
        KeyError,
        match=r"no entry 'lrr' at hyperparams \(path 'hyperparams\.lrr'\) inside a state, where an "
        r"added entry would be ignored; keys there: \['lr',",
    ):
        pn.tree.set(state, "hyperparams.lrr", torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(KeyError, match=r"no entry 'x' at the root \(path 'x\.y'\)"):
        pn.tree.set(p, "x.y", torch.zeros(1))
    with pytest.raises(KeyError, match=r"0\.weight is a leaf \(Tensor\), so it has no entry 'z'"):
        pn.tree.set(p, "0.weight.z", torch.zeros(1))


def test_set_through_state_nodes_tuples_and_dicts():
    state = (Pair(count=torch.tensor(1), trace=params()), {"k": torch.zeros(1)})
    new = pn.tree.set(state, "0.trace.1.weight", torch.zeros(1, 2))
    assert isinstance(new, tuple) and isinstance(new[0], Pair)
    assert torch.equal(new[0].trace["1.weight"], torch.zeros(1, 2))
    assert torch.equal(state[0].trace["1.weight"], torch.ones(1, 2))
    assert torch.equal(pn.tree.set(state, "1.k", torch.ones(1))[1]["k"], torch.ones(1))
    with pytest.raises(KeyError, match="Pair at 0 has no field 'nope'"):
        pn.tree.set(state, "0.nope", 1)


def test_state_nodes_are_trees_with_static_fields_and_none_children():
    s = Pair(count=torch.tensor(3), trace=params())
    assert pn.tree.paths(s) == ["count", "trace.0.weight", "trace.0.bias", "trace.1.weight"]
    other = Pair(count=torch.tensor(3), trace=params(), name="other")
    assert pn.tree.structure(s) != pn.tree.structure(other)
    doubled = pn.tree.map(lambda x: x * 2, s)
    assert isinstance(doubled, Pair) and doubled.name == "pair" and doubled.extra is None
    assert int(doubled.count) == 6
    rows = [line.split(maxsplit=1) for line in repr(s).splitlines()[1:-1]]
    assert rows[0] == ["count", "int64[] cpu = 3"] and rows[1] == [
        "trace.0.weight",
        "float32[2, 3] cpu",
    ]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.count = torch.tensor(0)
    leaves, spec = torch.utils._pytree.tree_flatten(s)
    assert len(leaves) == 4 and torch.utils._pytree.tree_unflatten(leaves, spec).name == "pair"


def test_state_node_guard_detects_in_place_writes():
    s = Pair(count=torch.tensor(3), trace=params())
    s.count.add_(1)
    with pytest.raises(pn.MutatedError, match=r"state\.count was modified"):
        pn.check_unmodified(s, "state")


def test_arithmetic_helpers():
    a, b = params(1.0), params(3.0)
    assert pn.tree.allclose(pn.tree.add(a, b), params(4.0))
    assert pn.tree.allclose(pn.tree.sub(b, a), params(2.0))
    assert pn.tree.allclose(pn.tree.scale(a, 0.5), params(0.5))
    assert pn.tree.allclose(pn.tree.scale(0.5, a), params(0.5))
    assert pn.tree.allclose(pn.tree.scale(a, torch.tensor(2.0)), params(2.0))
    with pytest.raises(ValueError, match="factor must be a number or a 0-d tensor"):
        pn.tree.scale(a, torch.ones(2))
    with pytest.raises(TypeError, match="factor must be a number or a 0-d tensor, got a str"):
        pn.tree.scale(a, "2")
    with pytest.raises(TypeError, match="got a Params"):
        pn.tree.scale(a, b)
    zeros = pn.tree.zeros_like(a)
    assert all(
        torch.equal(z, torch.zeros_like(x))
        for z, x in zip(pn.tree.leaves(zeros), pn.tree.leaves(a), strict=True)
    )


@given(st.lists(st.integers(0, 5), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_global_norm_equals_norm_of_concatenation(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    tree = pn.Params(
        {f"l{i}": torch.randn(n, generator=g, dtype=torch.float64) for i, n in enumerate(sizes)}
    )
    flat = torch.cat([leaf.flatten() for leaf in pn.tree.leaves(tree)])
    torch.testing.assert_close(pn.tree.global_norm(tree), torch.linalg.vector_norm(flat))
    # Same definition as torch.nn.utils.clip_grad_norm_'s total norm.
    tensors = [leaf.clone().requires_grad_() for leaf in pn.tree.leaves(tree)]
    for t in tensors:
        t.grad = t.detach().clone()
    torch.testing.assert_close(
        pn.tree.global_norm(tree), torch.nn.utils.clip_grad_norm_(tensors, 1e9)
    )


def test_add_and_sub_refuse_to_broadcast_leaves_of_different_shapes():
    a = pn.Params({"x": torch.ones(2), "sub": {"w": torch.ones(3, 4)}})
    b = pn.Params({"x": torch.ones(2), "sub": {"w": torch.ones(4)}})
    with pytest.raises(
        pn.ShapeError, match=r"pn\.tree\.add: at 'sub\.w', a has shape \(3, 4\) but b has \(4,\)"
    ):
        pn.tree.add(a, b)
    with pytest.raises(
        pn.ShapeError, match=r"pn\.tree\.sub: at 'sub\.w', a has shape \(4,\) but b has \(3, 4\)"
    ):
        pn.tree.sub(b, a)


def test_global_norm_of_empty_tree_is_zero():
    assert float(pn.tree.global_norm(pn.Params())) == 0.0


def test_stack_unstack_round_trip_and_errors():
    members = [params(float(i)) for i in range(3)]
    stacked = pn.tree.stack(members)
    assert stacked["0.weight"].shape == (3, 2, 3)
    back = pn.tree.unstack(stacked)
    assert len(back) == 3 and all(
        pn.tree.allclose(x, y, 0, 0) for x, y in zip(back, members, strict=True)
    )
    with pytest.raises(ValueError, match="at least one tree"):
        pn.tree.stack([])
    with pytest.raises(pn.ShapeError, match=r"leaf '1\.weight' has different shapes across trees"):
        pn.tree.stack([params(), pn.tree.set(params(), "1.weight", torch.ones(2, 2))])
    with pytest.raises(
        pn.TreeMismatchError, match=r"trees\[1\] does not have the structure of trees\[0\]"
    ):
        pn.tree.stack([params(), pn.Params({"0": {"weight": torch.ones(2, 3)}})])
    with pytest.raises(pn.ShapeError, match="leaves disagree on the leading axis size"):
        pn.tree.unstack(pn.Params({"a": torch.ones(2, 1), "b": torch.ones(3, 1)}))
    with pytest.raises(pn.ShapeError, match="leaf 'a' is 0-d"):
        pn.tree.unstack(pn.Params({"a": torch.ones(())}))


def test_allclose_is_strict_about_shapes_and_dtypes_and_raises_on_structure():
    assert pn.tree.allclose(params(), params(1.0 + 1e-7))
    assert not pn.tree.allclose(params(), params(1.1))
    assert not pn.tree.allclose(params(), pn.tree.map(lambda x: x.double(), params()))
    assert not pn.tree.allclose(pn.Params({"a": torch.ones(2)}), pn.Params({"a": torch.ones(1)}))
    with pytest.raises(pn.TreeMismatchError):
        pn.tree.allclose(params(), pn.Params({"0": params()["0"]}))


def test_diff_and_summary_report_per_path_change():
    old = params()
    new = pn.tree.set(old, "0.bias", torch.tensor([4.0, 1.0]))
    change = pn.tree.diff(old, new)
    assert pn.tree.paths(change) == pn.tree.paths(old)
    assert float(change["0.bias"]) == 3.0 and float(change["0.weight"]) == 0.0
    table = str(pn.tree.summary(change))
    assert "0.bias" in table and "3" in table
    full = pn.tree.summary(old)
    assert full.numel == 10 and full.rows[0] == (
        "0.weight",
        "[2, 3]",
        "float32",
        "cpu",
        6,
        pytest.approx(6**0.5),
    )
    lines = str(full).splitlines()
    assert lines[0].split() == ["path", "shape", "dtype", "device", "numel", "norm"]
    assert lines[-1].split() == ["total", "10"]
    with pytest.raises(pn.ShapeError, match=r"at '0\.bias', a has shape \(2,\) but b has \(3,\)"):
        pn.tree.diff(old, pn.tree.set(old, "0.bias", torch.ones(3)))


def test_summary_handles_integer_and_empty_leaves():
    table = pn.tree.summary(pn.Params({"count": torch.tensor(5), "empty": torch.zeros(0)}))
    assert table.rows[0][5] == 5.0 and table.rows[1][5] == 0.0


def test_global_norm_names_an_integer_leaf():
    state = pn.optim.adam().init(params())
    with pytest.raises(TypeError, match=r"global_norm: leaf 'count' is torch\.int64"):
        pn.tree.global_norm(state)
    assert torch.allclose(
        pn.tree.global_norm(state.exp_avg), torch.tensor(0.0)
    )  # its float part is fine


def test_set_keeps_a_state_leafs_shape_dtype_and_device():
    params = pn.Params({"w": torch.ones(3)})
    state = pn.optim.adam(0.1).init(params)
    with pytest.raises(
        pn.ShapeError,
        match=r"state leaf 'hyperparams\.lr' is \(\) torch\.float64 on cpu, got \(3,\)",
    ):
        pn.tree.set(state, "hyperparams.lr", torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    with pytest.raises(pn.ShapeError, match=r"got \(\) torch\.float32 on cpu"):
        pn.tree.set(state, "hyperparams.lr", torch.tensor(0.1))
    with pytest.raises(TypeError, match=r"state leaf 'hyperparams\.lr' is a tensor .* got a str"):
        pn.tree.set(state, "hyperparams.lr", "0.1")
    with pytest.raises(pn.ShapeError, match=r"state leaf 'exp_avg\.w' is \(3,\)"):
        pn.tree.set(state, "exp_avg.w", torch.zeros(4))
    with pytest.raises(
        TypeError, match=r"state leaf 'count' is torch\.int64; 0\.5 is not an integer"
    ):
        pn.tree.set(state, "count", 0.5)
    assert pn.tree.set(state, "count", 7).count.dtype == torch.int64
    # A number becomes a tensor like the leaf it replaces.
    lr = pn.tree.set(state, "hyperparams.lr", 0.01).hyperparams["lr"]
    assert lr.dtype == torch.float64 and lr.shape == () and float(lr) == 0.01
    # Outside a state, set replaces leaves freely.
    assert pn.tree.set(params, "w", torch.zeros(5))["w"].shape == (5,)
