"""pn.Params: construction, access, immutability, registration, state-dict round trips, guard, repr."""

import copy
import pickle

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st

import purenn as pn


def make() -> pn.Params:
    return pn.Params(
        {
            "w": torch.arange(6.0).reshape(3, 2),
            "sub": {"b": torch.ones(3), "deep": {"c": torch.zeros(())}},
        }
    )


def test_nested_and_dotted_access_read_the_same_leaf():
    p = make()
    assert p["sub"]["b"] is p["sub.b"]
    assert p["sub.deep.c"] is p["sub"]["deep"]["c"]
    assert isinstance(p["sub"], pn.Params)
    assert "sub.deep.c" in p and "sub.nope" not in p and "w.x" not in p
    assert list(p) == ["w", "sub"] and len(p) == 2


def test_missing_path_names_where_it_stopped():
    with pytest.raises(
        KeyError, match=r"no entry 'x' at sub \(path 'sub\.x'\); keys there: \['b', 'deep'\]"
    ):
        make()["sub.x"]
    with pytest.raises(KeyError, match=r"no entry 'nope'; keys: \['w', 'sub'\]"):
        make()["nope"]


def test_insertion_order_is_kept_and_paths_follow_it():
    p = pn.Params(
        {"z": torch.zeros(1), "a": torch.zeros(1), "10": torch.zeros(1), "2": torch.zeros(1)}
    )
    assert pn.tree.paths(p) == ["z", "a", "10", "2"]


@pytest.mark.parametrize(
    "mutate, what",
    [
        (lambda p: p.__setitem__("w", torch.zeros(1)), r"params\['w'\] = \.\.\."),
        (lambda p: p.__delitem__("w"), r"del params\['w'\]"),
        (lambda p: setattr(p, "w", 1), "setting attribute 'w'"),
    ],
)
def test_params_are_immutable_and_the_error_names_tree_set(mutate, what):
    with pytest.raises(
        TypeError, match=rf"Params are immutable: {what} is not allowed\. Use pn\.tree\.set"
    ):
        mutate(make())


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ({0: torch.zeros(1)}, TypeError, r"Params keys must be str, got int 0; use str\(i\)"),
        ({"a": {1: torch.zeros(1)}}, TypeError, r"Params keys must be str, got int 1 under 'a'"),
        ({"a.b": torch.zeros(1)}, ValueError, r"Params key 'a\.b' is not allowed.*from_state_dict"),
        ({"": torch.zeros(1)}, ValueError, r"Params key '' is not allowed"),
        (
            {"a": {"b": 3.0}},
            TypeError,
            r"Params leaf 'a\.b' must be a torch\.Tensor .*got float 3\.0",
        ),
        ({"a": [torch.zeros(1)]}, TypeError, r"Params leaf 'a' must be a torch\.Tensor .*got list"),
    ],
)
def test_bad_keys_and_leaves_are_rejected_naming_the_path(bad, error, message):
    with pytest.raises(error, match=message):
        pn.Params(bad)


def test_non_mapping_is_rejected():
    with pytest.raises(TypeError, match="Params expects a mapping"):
        pn.Params([("w", torch.zeros(1))])


def test_registered_with_optree_namespace_and_torch_pytree():
    p = make()
    leaves, spec = optree.tree_flatten(p, namespace="purenn")
    assert [leaf.shape for leaf in leaves] == [(3, 2), (3,), ()]
    assert optree.tree_unflatten(spec, leaves)["sub.b"] is p["sub.b"]
    # Without the namespace optree sees an opaque leaf: our helpers must always pass it.
    assert optree.tree_leaves(p) == [p]
    t_leaves, t_spec = torch_pytree.tree_flatten(p)
    assert all(a is b for a, b in zip(t_leaves, leaves, strict=True))
    rebuilt = torch_pytree.tree_unflatten(t_leaves, t_spec)
    assert isinstance(rebuilt, pn.Params) and pn.tree.paths(rebuilt) == ["w", "sub.b", "sub.deep.c"]
    keyed = torch_pytree.tree_flatten_with_path(p)[0]
    assert torch_pytree.keystr(keyed[1][0]) == "['sub']['b']"


def test_torch_func_and_compile_accept_params():
    p = pn.Params(
        {"w": torch.randn(3, 2, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)}
    )
    x = torch.randn(4, 2, dtype=torch.float64)

    def f(q, x):
        return torch.tanh(x @ q["w"].T + q["b"]).sum()

    g = torch.func.grad(f)(p, x)
    w = p["w"].clone().requires_grad_()
    b = p["b"].clone().requires_grad_()
    f(pn.Params({"w": w, "b": b}), x).backward()
    torch.testing.assert_close(g["w"], w.grad)
    torch.testing.assert_close(g["b"], b.grad)
    stacked = pn.tree.stack([p, pn.tree.scale(p, 2.0)])
    ys = torch.func.vmap(f, in_dims=(0, None))(stacked, x)
    torch.testing.assert_close(ys, torch.stack([f(p, x), f(pn.tree.scale(p, 2.0), x)]))
    torch.testing.assert_close(torch.compile(f, backend="eager", fullgraph=True)(p, x), f(p, x))


def test_state_dict_round_trip_with_a_torch_module():
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2))
    )
    p = pn.Params.from_state_dict(dict(net.named_parameters()))
    assert pn.tree.paths(p) == [name for name, _ in net.named_parameters()]
    assert p["2.0.weight"] is net[2][0].weight
    twin = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2))
    )
    twin.load_state_dict(p.to_state_dict(), strict=True)
    x = torch.randn(5, 3)
    torch.testing.assert_close(twin(x), net(x))


def test_from_state_dict_rejects_conflicting_and_bad_keys():
    with pytest.raises(ValueError, match=r"both a leaf 'a' and a leaf under it, 'a\.b'"):
        pn.Params.from_state_dict({"a": torch.zeros(1), "a.b": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"both a leaf 'a\.b' and leaves under it"):
        pn.Params.from_state_dict({"a.b.c": torch.zeros(1), "a.b": torch.zeros(1)})
    with pytest.raises(TypeError, match=r"non-empty dotted strings, got 'a\.\.b'"):
        pn.Params.from_state_dict({"a..b": torch.zeros(1)})


keys = st.text(alphabet="abcxyz_019", min_size=1, max_size=4)
trees = st.recursive(
    st.builds(lambda n: torch.randn(n), st.integers(0, 3)),
    lambda children: st.dictionaries(keys, children, min_size=1, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(keys, trees, min_size=1, max_size=3))
def test_state_dict_round_trip_property(nested):
    p = pn.Params(nested)
    back = pn.Params.from_state_dict(p.to_state_dict())
    assert pn.tree.structure(back) == pn.tree.structure(p)
    assert all(a is b for a, b in zip(pn.tree.leaves(back), pn.tree.leaves(p), strict=True))


def test_pickle_and_deepcopy_preserve_structure_and_values():
    p = make()
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert isinstance(q, pn.Params) and pn.tree.structure(q) == pn.tree.structure(p)
        assert pn.tree.allclose(q, p, rtol=0, atol=0)
        assert q["w"] is not p["w"]


def test_repr_shows_paths_shapes_dtypes_devices_and_no_data():
    p = pn.Params(
        {
            "weight": torch.full((300, 2), 123.456),
            "sub": {"bias": torch.zeros(7, dtype=torch.float64)},
        }
    )
    text = repr(p)
    assert "weight" in text and "float32[300, 2] cpu" in text
    assert "sub.bias" in text and "float64[7] cpu" in text
    assert "123.4" not in text and "2 leaves, 607 elements" in text
    assert repr(pn.Params()) == "Params({})"
    many = pn.Params({f"l{i}": torch.zeros(1) for i in range(100)})
    assert "... 65 more ..." in repr(many) and len(repr(many).splitlines()) < 45


def test_identity_equality_and_hash():
    p = make()
    assert p == p and p != make()
    assert {p: 1}[p] == 1


def test_mutation_guard_names_the_path(pn_key):
    p = make()
    pn.check_unmodified(p, "params")
    p["sub.b"].mul_(2)
    with pytest.raises(
        pn.MutatedError, match=r"params\.sub\.b was modified in place .*version counter 0 -> 1"
    ):
        pn.check_unmodified(p, "params")


def test_guard_ignores_rebinding_and_sees_item_assignment():
    p = make()
    q = pn.tree.set(p, "w", torch.zeros(3, 2))
    pn.check_unmodified(p)
    pn.check_unmodified(q)
    q["w"][0, 0] = 1.0
    with pytest.raises(pn.MutatedError, match=r"tree\.w was modified"):
        pn.check_unmodified(q)


def test_guard_survives_inference_tensors():
    with torch.inference_mode():
        t = torch.ones(2)
    pn.check_unmodified(pn.Params({"t": t}))


def test_entry_points_refuse_trees_changed_in_place_under_debug(tmp_path):
    # The pytest plugin turns pn.config.debug on; API.md: purenn's entry points then check.
    assert pn.config.debug
    p = pn.Params({"w": torch.ones(3)})
    p["w"].add_(1.0)
    loss = lambda q: q["w"].sum()  # noqa: E731
    with pytest.raises(pn.MutatedError, match=r"argument 0\.w was modified"):
        pn.grad(loss)(p)
    with pytest.raises(pn.MutatedError, match=r"argument 0\.w was modified"):
        pn.value_and_grad(loss)(p)
    with pytest.raises(pn.MutatedError, match=r"<lambda>: argument 0 \(q\)\.w was modified"):
        pn.jit(loss, compile=False)(p)
    with pytest.raises(pn.MutatedError, match=r"tree\.w was modified"):
        pn.save(tmp_path / "ckpt", p)
    assert not (tmp_path / "ckpt").exists()
