"""The bad-input catalogue: each mistake, the error type it raises, and the shape of its message.

One table, `CATALOGUE`; docs/errors.md lists every entry by id and links here
(`test_catalogue[<id>]`), and `test_docs_list_every_catalogue_entry` keeps the
two in step. Hypothesis tests below check that path-naming errors name a path
that really differs.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import purenn as pn

MODEL = pn.nn.sequential(pn.nn.linear(4, 8), pn.nn.relu, pn.nn.linear(8, 3))
PARAMS = MODEL.init(pn.random.key(0))
ADAM = pn.optim.adam(1e-3)
STATE = ADAM.init(PARAMS)
GRADS = pn.tree.map(torch.ones_like, PARAMS)
BN_MODEL = pn.nn.sequential(pn.nn.linear(3, 4), pn.nn.batch_norm(4))


class Case(NamedTuple):
    id: str
    description: str
    call: Callable[[], Any]
    error: type[BaseException]
    match: str
    gap: str | None = None  # why the current behaviour falls short (the test is a strict xfail)


def _step(params=PARAMS, grads=GRADS, state=STATE, opt=ADAM):
    return lambda: pn.step(opt, params, grads, state)


def _donated_reuse():
    opt = pn.optim.sgd(0.1)
    train = pn.jit(lambda p, s, g: pn.step(opt, p, g, s), donate_argnums=(0, 1), compile=False)
    params = pn.tree.map(torch.clone, PARAMS)
    state = opt.init(params)
    train(params, state, GRADS)
    return pn.step(opt, params, GRADS, state)


def _mutated():
    params = pn.tree.map(torch.clone, PARAMS)
    params["0.weight"].add_(1.0)
    with pn.config.override(debug=True):
        pn.step(ADAM, params, GRADS, STATE)


def _non_finite():
    grads = pn.tree.set(GRADS, "2.bias", torch.tensor([1.0, float("nan"), 1.0]))
    with pn.config.override(check_finite=True):
        pn.step(ADAM, PARAMS, grads, STATE)


def _checkpoint_like_mismatch():
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ck.safetensors"
        pn.save(path, {"params": PARAMS, "opt_state": STATE})
        other = pn.tree.set(PARAMS, "2.weight", torch.zeros(3, 9))
        pn.load(path, like={"params": other, "opt_state": STATE})


def _checkpoint_corrupted():
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ck.safetensors"
        pn.save(path, PARAMS)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        pn.load(path)


CATALOGUE = [
    # --- trees that must match: params, grads, optimizer state
    Case(
        "grads_missing_entry",
        "grads lack a param's entry",
        _step(grads=pn.Params({"0": GRADS["0"]})),
        pn.TreeMismatchError,
        r"grads does not have the structure of the optimizer state \(from opt\.init\(params\)\): "
        r"at '2', the optimizer state .* has it but grads does not",
    ),
    Case(
        "grads_extra_entry",
        "grads have an entry the params lack",
        _step(grads=pn.Params({**GRADS, "extra": torch.ones(1)})),
        pn.TreeMismatchError,
        r"at 'extra', grads has it but the optimizer state .* does not",
    ),
    Case(
        "state_for_other_params",
        "an optimizer state made for other params",
        _step(state=ADAM.init(pn.Params({"w": torch.zeros(2)}))),
        pn.TreeMismatchError,
        r"grads does not have the structure of the optimizer state .*: at 'w'",
    ),
    Case(
        "state_of_other_rule",
        "another rule's state (sgd's for adam)",
        _step(state=pn.optim.sgd(0.1).init(PARAMS)),
        pn.StateError,
        r"adam: got a SgdState as the optimizer state, but adam's state is AdamState",
    ),
    Case(
        "state_other_settings",
        "a state made by the same rule with other settings (adam's for adam(amsgrad=True))",
        _step(opt=pn.optim.adam(amsgrad=True)),
        pn.StateError,
        r"adam: the state was made with amsgrad=False, but this rule has amsgrad=True: pass the "
        r"state that this rule's init\(params\) returned",
    ),
    Case(
        "state_missing",
        "no optimizer state (None)",
        _step(state=None),
        pn.StateError,
        r"adam: got a NoneType as the optimizer state, but adam's state is AdamState",
    ),
    Case(
        "grads_wrong_shape",
        "a gradient of another shape",
        _step(grads=pn.tree.set(GRADS, "0.weight", torch.ones(4, 8))),
        pn.ShapeError,
        r"adam: grads '0\.weight' has shape \(4, 8\) but the param has \(8, 4\)",
    ),
    Case(
        "grads_wrong_dtype",
        "a gradient of another dtype",
        _step(grads=pn.tree.map(lambda g: g.double(), GRADS)),
        pn.ShapeError,
        r"adam: grads '0\.weight' has dtype torch\.float64 but the param has torch\.float32",
    ),
    Case(
        "grads_wrong_device",
        "a gradient on another device",
        _step(grads=pn.tree.map(lambda g: g.to("meta"), GRADS)),
        pn.PurennError,
        r"grads '0\.weight' is on .*meta.* but the param is on cpu",
    ),
    Case(
        "params_wrong_device",
        "params on another device than their state",
        _step(params=pn.tree.map(lambda p: p.to("meta"), PARAMS)),
        pn.PurennError,
        r"'0\.weight' is on .*meta.*cpu",
    ),
    Case(
        "updates_wrong_shape",
        "apply_updates with an update of another shape",
        lambda: pn.apply_updates(PARAMS, pn.tree.set(GRADS, "2.bias", torch.ones(4))),
        pn.ShapeError,
        r"apply_updates: update '2\.bias' has shape \(4,\) but the param has \(3,\)",
    ),
    Case(
        "tree_map_mismatch",
        "pn.tree.map over trees of different structure",
        lambda: pn.tree.map(torch.add, PARAMS, pn.Params({"0": PARAMS["0"]})),
        pn.TreeMismatchError,
        r"rest\[0\] does not have the structure of tree: at '2', tree has it but rest\[0\] does not",
    ),
    Case(
        "stack_mismatch",
        "pn.tree.stack of trees with different leaf shapes",
        lambda: pn.tree.stack([PARAMS, pn.tree.set(PARAMS, "2.bias", torch.ones(5))]),
        pn.ShapeError,
        r"pn\.tree\.stack: leaf '2\.bias' has different shapes across trees: \[\(3,\), \(5,\)\]",
    ),
    # --- leaves and keys
    Case(
        "non_tensor_leaf",
        "a Python number as a leaf",
        lambda: pn.Params({"w": 1.0}),
        TypeError,
        r"Params leaf 'w' must be a torch\.Tensor \(or a nested mapping\), got float 1\.0; "
        r"wrap numbers with torch\.tensor",
    ),
    Case(
        "non_tensor_grad",
        "a gradient that is not a tensor",
        _step(grads=pn.tree.map(lambda g: 1.0, GRADS)),
        TypeError,
        r"adam: grads '0\.weight' is a float, not a tensor",
    ),
    Case(
        "non_string_key",
        "a non-string Params key",
        lambda: pn.Params({"layers": {0: torch.ones(1)}}),
        TypeError,
        r"Params keys must be str, got int 0 under 'layers'; use str\(i\) for numbered layers",
    ),
    Case(
        "dotted_key",
        "a dotted Params key",
        lambda: pn.Params({"a.b": torch.ones(1)}),
        ValueError,
        r"Params key 'a\.b' is not allowed: keys must be non-empty and contain no '\.'.*"
        r"Params\.from_state_dict",
    ),
    Case(
        "empty_key",
        "an empty Params key",
        lambda: pn.Params({"": torch.ones(1)}),
        ValueError,
        r"Params key '' is not allowed",
    ),
    Case(
        "set_missing_key",
        "`pn.tree.set` of a state entry that does not exist (a typo)",
        lambda: pn.tree.set(STATE, "hyperparams.lrr", torch.tensor(0.1, dtype=torch.float64)),
        KeyError,
        r"pn\.tree\.set: no entry 'lrr' at hyperparams \(path 'hyperparams\.lrr'\) inside a state, "
        r"where an added entry would be ignored; keys there: "
        r"\['lr', 'beta1', 'beta2', 'eps', 'weight_decay'\]",
    ),
    Case(
        "global_norm_integer_leaf",
        "`pn.tree.global_norm` of a tree with an integer leaf (a whole optimizer state)",
        lambda: pn.tree.global_norm(STATE),
        TypeError,
        r"pn\.tree\.global_norm: leaf 'count' is torch\.int64; a norm needs floating-point leaves",
    ),
    Case(
        "params_write",
        "writing into Params",
        lambda: PARAMS.__setitem__("0", torch.ones(1)),
        TypeError,
        r"Params are immutable: params\['0'\] = \.\.\. is not allowed\. Use pn\.tree\.set",
    ),
    Case(
        "mutated_leaf",
        "a leaf modified in place (pn.config.debug)",
        _mutated,
        pn.MutatedError,
        r"params\.0\.weight was modified in place after it was put in its tree",
    ),
    Case(
        "integer_params",
        "integer params given to a float rule",
        lambda: ADAM.init(pn.Params({"steps": torch.zeros(2, dtype=torch.int64)})),
        TypeError,
        r"adam: param 'steps' has dtype torch\.int64; update rules need floating-point params",
    ),
    # --- donation
    Case(
        "donated_reused",
        "a donated tree used after the call",
        _donated_reuse,
        pn.DonatedError,
        r"argument 0 \(p\) was donated to .*\(call 1\).*Use the value that call returned",
    ),
    Case(
        "donated_aliasing",
        "one buffer passed both donated and kept",
        lambda: pn.jit(lambda a, b: a, donate_argnums=0, compile=False)(PARAMS, PARAMS),
        ValueError,
        r"donated input 'argument 0 \(a\)\.0\.weight' shares memory with the non-donated input "
        r"'argument 1 \(b\)\.0\.weight'",
    ),
    # --- models
    Case(
        "wrong_input_shape",
        "a model applied to an input of the wrong shape",
        lambda: MODEL.apply(PARAMS, torch.zeros(5, 3)),
        pn.ShapeError,
        r"the linear layer at '0' expects input of shape \(\.\.\., 4\) \(in_features=4\), got \(5, 3\)",
    ),
    Case(
        "params_of_other_model",
        "params made by another model",
        lambda: pn.nn.linear(3, 4).apply(pn.Params({"weight": torch.zeros(4, 2)}), torch.zeros(3)),
        pn.TreeMismatchError,
        r"params for the linear layer do not fit it: missing \['bias'\].*made by another model",
    ),
    Case(
        "stateful_without_state",
        "a stateful model (BatchNorm) applied without state",
        lambda: BN_MODEL.apply(BN_MODEL.init(pn.random.key(0)), torch.zeros(5, 3), train=True),
        pn.StateError,
        r"Sequential has state \(1\.running_mean, .*\): call model\.apply\(params, x, "
        r"state=state, train=\.\.\.\) with state = model\.init_state\(\)",
    ),
    Case(
        "dropout_without_key",
        "dropout in training without a PRNG key",
        lambda: pn.nn.dropout(0.5).apply(pn.Params({}), torch.zeros(3), train=True),
        ValueError,
        r"the dropout layer .*needs a PRNG key in training: call model\.apply\(params, x, key=key",
    ),
    Case(
        "bad_prng_key",
        "a tensor that is not a PRNG key",
        lambda: pn.random.normal(torch.zeros(2), (3,)),
        pn.ShapeError,
        r"key must be a PRNG key from pn\.random\.key\(seed\): an int64 tensor of shape \(2,\), "
        r"got a torch\.float32 tensor of shape \(2,\)",
    ),
    Case(
        "loss_shape",
        "a loss given target and input of different shapes",
        lambda: pn.losses.mse(torch.zeros(3), torch.zeros(4)),
        pn.ShapeError,
        r"mse: target has shape \(4,\) but input has shape \(3,\)",
    ),
    Case(
        "grad_non_scalar",
        "pn.grad of a function that returns a non-scalar",
        lambda: pn.grad(lambda p: p["0.weight"])(PARAMS),
        pn.ShapeError,
        r"pn\.grad: the function must return a scalar \(0-d\) tensor, got shape \(8, 4\)",
    ),
    # --- rules and hyperparameters (builtin errors, torch.optim's wording)
    Case(
        "rule_not_called",
        "a rule factory passed instead of a rule",
        lambda: pn.step(pn.optim.adam, PARAMS, GRADS, STATE),
        TypeError,
        r"pn\.step\(opt, params, grads, opt_state\): opt must be a GradientTransformation, got function",
    ),
    Case(
        "negative_lr",
        "a negative learning rate",
        lambda: pn.optim.adam(-1e-3),
        ValueError,
        r"Invalid learning rate: -0\.001",
    ),
    Case(
        "lr_wrong_type",
        "a learning rate that is not a number or schedule",
        lambda: pn.optim.sgd("0.1"),
        TypeError,
        r"lr must be a float, a 1-element tensor or a schedule count -> lr, got str",
    ),
    Case(
        "beta_out_of_range",
        "a beta outside [0, 1)",
        lambda: pn.optim.adam(betas=(0.9, 1.5)),
        ValueError,
        r"Invalid beta parameter at index 1: 1\.5",
    ),
    Case(
        "negative_eps",
        "a negative epsilon",
        lambda: pn.optim.adam(eps=-1.0),
        ValueError,
        r"Invalid epsilon value: -1\.0",
    ),
    Case(
        "negative_weight_decay",
        "a negative weight decay",
        lambda: pn.optim.adamw(weight_decay=-0.1),
        ValueError,
        r"Invalid weight_decay value: -0\.1",
    ),
    Case(
        "nesterov_without_momentum",
        "Nesterov momentum without momentum",
        lambda: pn.optim.sgd(0.1, nesterov=True),
        ValueError,
        r"Nesterov momentum requires a momentum and zero dampening",
    ),
    Case(
        "negative_max_errors",
        "apply_if_finite with a negative error budget",
        lambda: pn.optim.apply_if_finite(ADAM, -1),
        ValueError,
        r"apply_if_finite: max_consecutive_errors must be an int >= 0, got -1",
    ),
    Case(
        "schedule_decay_before_warmup",
        "a warmup longer than the whole schedule",
        lambda: pn.schedules.warmup_cosine_decay(0.0, 1.0, 10, 5),
        ValueError,
        r"warmup_cosine_decay: decay_steps \(5\) must be greater than warmup_steps \(10\)",
    ),
    Case(
        "config_wrong_type",
        "a setting of the wrong type",
        lambda: setattr(pn.config, "check_finite", 1),
        TypeError,
        r"pn\.config\.check_finite must be bool, got int 1",
    ),
    # --- non-finite values
    Case(
        "non_finite_step",
        "a step that makes params NaN (pn.config.check_finite)",
        _non_finite,
        pn.NonFiniteError,
        r"pn\.step: params '2\.bias' became NaN at step 1 .*the gradients were not finite "
        r"\(first: grads '2\.bias' holds NaN\).*pn\.optim\.apply_if_finite",
    ),
    # --- checkpoints
    Case(
        "checkpoint_missing",
        "loading a checkpoint that does not exist",
        lambda: pn.load("/nonexistent/ck.safetensors"),
        pn.CheckpointError,
        r"checkpoint '/nonexistent/ck\.safetensors' does not exist",
    ),
    Case(
        "checkpoint_corrupted",
        "loading a damaged checkpoint",
        _checkpoint_corrupted,
        pn.CheckpointError,
        r"checkpoint '.*ck\.safetensors' is corrupted: its content does not match the SHA-256",
    ),
    Case(
        "checkpoint_like_mismatch",
        "loading a checkpoint into a template it does not fit",
        _checkpoint_like_mismatch,
        pn.CheckpointMismatchError,
        r"checkpoint '.*ck\.safetensors' does not match like: at 'params\.2\.weight', "
        r"like has shape \(3, 9\) but the checkpoint has \(3, 8\)",
    ),
    Case(
        "checkpoint_non_tensor_leaf",
        "saving a tree with a non-tensor leaf",
        lambda: pn.save("/nonexistent/ck.safetensors", {"step": 3}),
        TypeError,
        r"pn\.save: leaf 'step' is a int, not a tensor",
    ),
]


def _params(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_params(c) for c in CATALOGUE])
def test_catalogue(case: Case) -> None:
    with pytest.raises(case.error, match=case.match):
        case.call()


def test_catalogue_ids_are_unique() -> None:
    ids = [c.id for c in CATALOGUE]
    assert len(ids) == len(set(ids))


def test_docs_list_every_catalogue_entry() -> None:
    """docs/errors.md has one row per catalogue entry, linked to its test, and no stale rows."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()
    documented = re.findall(r"tests/test_errors\.py::test_catalogue\[(\w+)\]", doc)
    assert sorted(documented) == sorted(c.id for c in CATALOGUE)


def test_every_purenn_error_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()
    errors = [v for v in vars(pn).values() if isinstance(v, type) and issubclass(v, pn.PurennError)]
    for error in errors:
        assert f"pn.{error.__name__}" in doc, error


def test_purenn_errors_share_one_base_and_a_builtin() -> None:
    expected = {
        pn.TreeMismatchError: ValueError,
        pn.ShapeError: ValueError,
        pn.StateError: ValueError,
        pn.MutatedError: RuntimeError,
        pn.DonatedError: RuntimeError,
        pn.CheckpointError: OSError,
        pn.CheckpointMismatchError: OSError,
        pn.NonFiniteError: FloatingPointError,
    }
    for error, builtin in expected.items():
        assert issubclass(error, pn.PurennError) and issubclass(error, builtin)
    assert issubclass(pn.CheckpointMismatchError, pn.CheckpointError)
    assert issubclass(pn.CheckpointMismatchError, pn.TreeMismatchError)


# ----------------------------------------------------------------------------- properties

tree_specs = st.recursive(
    st.just("leaf"),
    lambda children: st.dictionaries(st.sampled_from("abcd"), children, min_size=1, max_size=3),
    max_leaves=10,
).filter(lambda spec: spec != "leaf")


def _build(spec: Any, size: int = 2) -> Any:
    if spec == "leaf":
        return torch.zeros(size)
    return pn.Params({k: _build(v, size) for k, v in spec.items()})


def _node_at(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split(".") if path not in ("", "<root>") else []:
        if not isinstance(node, pn.Params) or part not in node:
            return None
        node = node[part]
    return node


def _kind(node: Any) -> Any:
    return (
        None if node is None else ("params", tuple(node)) if isinstance(node, pn.Params) else "leaf"
    )


@given(spec=tree_specs, data=st.data())
def test_structure_errors_name_a_path_that_really_differs(spec, data):
    """Mutate one random node (drop it, add a sibling, turn a leaf into a subtree): the named path differs."""
    tree = _build(spec)
    paths = pn.tree.paths(tree)
    target = data.draw(st.sampled_from(paths))
    change = data.draw(st.sampled_from(["drop", "add", "deepen"]))
    parent, _, leaf = target.rpartition(".")
    if change == "drop":
        parent_node = _node_at(tree, parent)
        kept = {k: v for k, v in parent_node.items() if k != leaf}
        other = pn.tree.set(tree, parent, pn.Params(kept)) if parent else pn.Params(kept)
    elif change == "add":
        grown = pn.Params({**_node_at(tree, parent), "new": torch.zeros(2)})
        other = pn.tree.set(tree, parent, grown) if parent else grown
    else:
        other = pn.tree.set(tree, target, pn.Params({"z": torch.zeros(2)}))
    with pytest.raises(pn.TreeMismatchError) as info:
        pn.tree.map(torch.add, tree, other)
    named = re.search(r"at '([^']*)'", str(info.value)).group(1)
    assert _kind(_node_at(tree, named)) != _kind(_node_at(other, named)), (named, str(info.value))


@given(spec=tree_specs, data=st.data())
def test_shape_errors_name_the_changed_leaf(spec, data):
    tree = _build(spec)
    target = data.draw(st.sampled_from(pn.tree.paths(tree)))
    extra = data.draw(st.integers(1, 3))
    updates = pn.tree.set(pn.tree.zeros_like(tree), target, torch.zeros(2 + extra))
    with pytest.raises(
        pn.ShapeError, match=rf"update '{re.escape(target)}' has shape \({2 + extra},\)"
    ):
        pn.apply_updates(tree, updates)


@given(lr=st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=False))
def test_any_negative_learning_rate_is_refused_with_its_value(lr):
    for rule in (pn.optim.sgd, pn.optim.adam, pn.optim.adamw):
        with pytest.raises(ValueError, match=re.escape(f"Invalid learning rate: {lr}")):
            rule(lr)
