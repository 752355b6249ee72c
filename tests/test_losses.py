from __future__ import annotations

import doctest
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from purenn._errors import PurennError, ShapeError
from purenn.losses import (
    _losses,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber,
    l1,
    mse,
    nll,
)

N, C = 6, 5
REDUCTIONS = ("mean", "sum", "none")
DTYPES = (torch.float32, torch.float64)

Inputs = tuple[Tensor, Tensor, dict[str, Any]]


def _randn(g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _indices(g: torch.Generator, *shape: int, ignore: int | None = None) -> Tensor:
    target = torch.randint(0, C, shape, generator=g)
    if ignore is not None:
        target.view(-1)[::3] = ignore
    return target


def _probs(g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return _randn(g, dtype, *shape).softmax(dim=1 if len(shape) > 1 else 0)


def _weight(g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=dtype) + 0.1


@dataclass(frozen=True)
class Case:
    id: str
    loss: Callable[..., Tensor]
    twin: Callable[..., Tensor]
    make: Callable[[torch.Generator, torch.dtype], Inputs]
    batched: bool = True  # dim 0 of input and target is a batch dim vmap can strip
    spatial: bool = False  # a per-sample input would be misread, so vmap keeps a batch of 1


def _ce(id: str, make: Callable[[torch.Generator, torch.dtype], Inputs], **flags: bool) -> Case:
    return Case(id, cross_entropy, F.cross_entropy, make, **flags)


def _nll(id: str, make: Callable[[torch.Generator, torch.dtype], Inputs], **flags: bool) -> Case:
    def log_probs(g: torch.Generator, dtype: torch.dtype) -> Inputs:
        x, t, kw = make(g, dtype)
        return x.log_softmax(dim=1 if x.ndim > 1 else 0), t, kw

    return Case(id, nll, F.nll_loss, log_probs, **flags)


def _regression(
    id: str, loss: Callable[..., Tensor], twin: Callable[..., Tensor], **kw: Any
) -> Case:
    def make(g: torch.Generator, dtype: torch.dtype) -> Inputs:
        return _randn(g, dtype, N, 4), 2 * _randn(g, dtype, N, 4), dict(kw)

    return Case(id, loss, twin, make)


def _bce(id: str, *shape: int, weight: bool = False, pos_weight: bool = False) -> Case:
    def make(g: torch.Generator, dtype: torch.dtype) -> Inputs:
        kw = {}
        if weight:
            kw["weight"] = _weight(g, dtype, shape[-1])
        if pos_weight:
            kw["pos_weight"] = 3 * _weight(g, dtype, shape[-1])
        return _randn(g, dtype, *shape), torch.rand(*shape, generator=g, dtype=dtype), kw

    return Case(id, binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, make)


CASES = [
    _ce("ce", lambda g, d: (_randn(g, d, N, C), _indices(g, N), {})),
    _ce("ce_unbatched", lambda g, d: (_randn(g, d, C), _indices(g), {}), batched=False),
    _ce(
        "ce_spatial",
        lambda g, d: (_randn(g, d, N, C, 3, 2), _indices(g, N, 3, 2), {}),
        spatial=True,
    ),
    _ce(
        "ce_weight", lambda g, d: (_randn(g, d, N, C), _indices(g, N), {"weight": _weight(g, d, C)})
    ),
    _ce("ce_ignore_default", lambda g, d: (_randn(g, d, N, C), _indices(g, N, ignore=-100), {})),
    _ce(
        "ce_ignore_custom_weight",
        lambda g, d: (
            _randn(g, d, N, C),
            _indices(g, N, ignore=2),
            {"ignore_index": 2, "weight": _weight(g, d, C)},
        ),
    ),
    _ce(
        "ce_smoothing",
        lambda g, d: (
            _randn(g, d, N, C),
            _indices(g, N, ignore=-100),
            {"label_smoothing": 0.1, "weight": _weight(g, d, C)},
        ),
    ),
    _ce("ce_probs", lambda g, d: (_randn(g, d, N, C), _probs(g, d, N, C), {})),
    _ce(
        "ce_probs_spatial_smoothing_weight",
        lambda g, d: (
            _randn(g, d, N, C, 3),
            _probs(g, d, N, C, 3),
            {"label_smoothing": 0.2, "weight": _weight(g, d, C)},
        ),
        spatial=True,
    ),
    _nll("nll", lambda g, d: (_randn(g, d, N, C), _indices(g, N), {})),
    _nll("nll_unbatched", lambda g, d: (_randn(g, d, C), _indices(g), {}), batched=False),
    _nll(
        "nll_spatial_weight_ignore",
        lambda g, d: (
            _randn(g, d, N, C, 4),
            _indices(g, N, 4, ignore=-1),
            {"ignore_index": -1, "weight": _weight(g, d, C)},
        ),
        spatial=True,
    ),
    _regression("mse", mse, F.mse_loss),
    _regression("l1", l1, F.l1_loss),
    _regression("huber", huber, F.huber_loss),
    _regression("huber_delta", huber, F.huber_loss, delta=0.5),
    _bce("bce", N, C),
    _bce("bce_weight", N, C, weight=True),
    _bce("bce_pos_weight", N, C, pos_weight=True),
    _bce("bce_both_spatial", N, 3, C, weight=True, pos_weight=True),
]
CASE_IDS = [case.id for case in CASES]
BATCHED = [case for case in CASES if case.batched]


def _inputs(case: Case, dtype: torch.dtype = torch.float64) -> Inputs:
    return case.make(torch.Generator().manual_seed(0), dtype)


def _differentiable(*tensors: Tensor) -> list[Tensor]:
    return [t for t in tensors if t.is_floating_point()]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_functional(case: Case, reduction: str, dtype: torch.dtype) -> None:
    x, t, kw = _inputs(case, dtype)
    wrt = _differentiable(x, t)
    for w in wrt:
        w.requires_grad_(True)

    got = case.loss(x, t, reduction=reduction, **kw)
    expected = case.twin(x, t, reduction=reduction, **kw)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    cotangent = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    got_grads = torch.autograd.grad(got, wrt, cotangent)
    expected_grads = torch.autograd.grad(expected, wrt, cotangent)
    torch.testing.assert_close(got_grads, expected_grads, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_func_grad_matches_autograd(case: Case) -> None:
    x, t, kw = _inputs(case)
    got = torch.func.grad(lambda x: case.loss(x, t, **kw))(x)
    (expected,) = torch.autograd.grad(case.twin(x.requires_grad_(), t, **kw), x)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("case", BATCHED, ids=[case.id for case in BATCHED])
def test_vmap_per_sample_equals_unreduced(case: Case, reduction: str) -> None:
    x, t, kw = _inputs(case)

    def per_sample(x: Tensor, t: Tensor) -> Tensor:
        if case.spatial:
            return case.loss(x[None], t[None], reduction=reduction, **kw).squeeze(0)
        return case.loss(x, t, reduction=reduction, **kw)

    unreduced = case.loss(x, t, reduction="none", **kw)
    expected = unreduced if reduction == "none" else unreduced.reshape(N, -1).sum(1)
    torch.testing.assert_close(torch.func.vmap(per_sample)(x, t), expected)


def test_vmap_of_grad_gives_per_sample_gradients() -> None:
    x, t, kw = _inputs(CASES[CASE_IDS.index("ce_smoothing")])
    kw = {**kw, "reduction": "sum"}
    got = torch.func.vmap(torch.func.grad(lambda x, t: cross_entropy(x, t, **kw)))(x, t)
    expected = torch.stack(
        [
            torch.autograd.grad(F.cross_entropy(xi, ti, **kw), xi)[0]
            for xi, ti in zip(x.requires_grad_(), t, strict=True)
        ]
    )
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inputs_not_mutated(case: Case) -> None:
    x, t, kw = _inputs(case)
    tensors = [x, t, *(v for v in kw.values() if isinstance(v, Tensor))]
    before = [(tensor.clone(), tensor._version) for tensor in tensors]
    x.requires_grad_(True)

    for reduction in REDUCTIONS:
        case.loss(x, t, reduction=reduction, **kw).sum().backward()

    for tensor, (copy, version) in zip(tensors, before, strict=True):
        assert tensor._version == version
        assert torch.equal(tensor.detach(), copy)


COMPILED_IDS = [
    "ce_smoothing",
    "ce_probs_spatial_smoothing_weight",
    "nll_spatial_weight_ignore",
    "mse",
    "l1",
    "huber_delta",
    "bce_both_spatial",
]
COMPILED = [CASES[CASE_IDS.index(id)] for id in COMPILED_IDS]


@pytest.mark.parametrize("case", COMPILED, ids=COMPILED_IDS)
def test_compiles_without_graph_breaks(case: Case) -> None:
    x, t, kw = _inputs(case)
    compiled = torch.compile(case.loss, fullgraph=True, backend="eager")
    # A float argument that changes between calls is retraced as symbolic: checks must allow that.
    for scale in (1.0, 0.5):
        scaled = {k: v * scale if isinstance(v, float) else v for k, v in kw.items()}
        torch.testing.assert_close(compiled(x, t, **scaled), case.twin(x, t, **scaled))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8], ids=str)
@pytest.mark.parametrize(("loss", "twin"), [(cross_entropy, F.cross_entropy), (nll, F.nll_loss)])
def test_any_integer_target_dtype(
    loss: Callable[..., Tensor], twin: Callable[..., Tensor], dtype: torch.dtype
) -> None:
    x, t = torch.randn(N, C), _indices(torch.Generator().manual_seed(0), N)
    torch.testing.assert_close(loss(x, t.to(dtype)), twin(x, t))


def test_docstring_examples() -> None:
    assert doctest.testmod(_losses).failed == 0


def _raises(exc: type[Exception], message: str) -> AbstractContextManager[Any]:
    """Expect `exc` with exactly `message`."""
    return pytest.raises(exc, match=f"^{re.escape(message)}$")


ALL_LOSSES = [cross_entropy, nll, mse, l1, huber, binary_cross_entropy_with_logits]
REGRESSION_LOSSES = [mse, l1, huber, binary_cross_entropy_with_logits]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_bad_reduction(loss: Callable[..., Tensor]) -> None:
    x, t = torch.zeros(4, 3), torch.zeros(4, 3)
    message = f"{loss.__name__}: reduction must be 'mean', 'sum' or 'none'; got 'avg'"
    with _raises(ValueError, message):
        loss(x, t, reduction="avg")


@pytest.mark.parametrize("loss", REGRESSION_LOSSES, ids=lambda f: f.__name__)
def test_regression_shape_mismatch(loss: Callable[..., Tensor]) -> None:
    name = loss.__name__
    message = (
        f"{name}: target has shape (4,) but input has shape (4, 1); they must be equal "
        f"(torch would broadcast both to (4, 4))"
    )
    with _raises(ShapeError, message):
        loss(torch.zeros(4, 1), torch.zeros(4))
    with _raises(
        ShapeError, f"{name}: target has shape (3,) but input has shape (4,); they must be equal"
    ):
        loss(torch.zeros(4), torch.zeros(3))


@pytest.mark.parametrize("loss", REGRESSION_LOSSES, ids=lambda f: f.__name__)
def test_regression_dtypes(loss: Callable[..., Tensor]) -> None:
    name = loss.__name__
    with _raises(ShapeError, f"{name}: target must have a floating-point dtype; got torch.int64"):
        loss(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with _raises(ShapeError, f"{name}: input must have a floating-point dtype; got torch.int32"):
        loss(torch.zeros(4, dtype=torch.int32), torch.zeros(4))
    with _raises(TypeError, f"{name}: target must be a torch.Tensor; got list"):
        loss(torch.zeros(2), [0.0, 1.0])


def test_shape_error_is_a_value_error_and_purenn_error() -> None:
    with pytest.raises(ShapeError) as info:
        mse(torch.zeros(2), torch.zeros(3))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PurennError)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan")])
def test_huber_bad_delta(delta: float) -> None:
    with _raises(ValueError, f"huber: delta must be > 0; got {delta!r}"):
        huber(torch.zeros(2), torch.zeros(2), delta=delta)


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, float("nan"), float("inf")])
def test_cross_entropy_bad_label_smoothing(smoothing: float) -> None:
    message = f"cross_entropy: label_smoothing must be in [0, 1]; got {smoothing!r}"
    with _raises(ValueError, message):
        cross_entropy(
            torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), label_smoothing=smoothing
        )


LONG = torch.long
CLASS_ERRORS = [
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10), torch.zeros(5, dtype=LONG)),
        {},
        "cross_entropy: target has shape (5,) but input has shape (4, 10) ([N, C]); "
        "expected target shape (4,) of class indices, or (4, 10) of class probabilities",
        id="ce_batch_mismatch",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10, 7, 2), torch.zeros(4, 7, dtype=LONG)),
        {},
        "cross_entropy: target has shape (4, 7) but input has shape (4, 10, 7, 2) ([N, C, d1, d2]); "
        "expected target shape (4, 7, 2) of class indices, or (4, 10, 7, 2) of class probabilities",
        id="ce_spatial_mismatch",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(10), torch.zeros(1, dtype=LONG)),
        {},
        "cross_entropy: target has shape (1,) but input has shape (10,) ([C]); "
        "expected target shape () of class indices, or (10,) of class probabilities",
        id="ce_unbatched_mismatch",
    ),
    pytest.param(
        cross_entropy,
        (torch.tensor(1.0), torch.tensor(0)),
        {},
        "cross_entropy: input must have shape [C], [N, C] or [N, C, d1, ...]; got a 0-dimensional tensor",
        id="ce_scalar_input",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10), torch.zeros(4)),
        {},
        "cross_entropy: target has shape (4,) of class indices but dtype torch.float32; "
        "class indices must have an integer dtype (e.g. target.long())",
        id="ce_float_indices",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10), torch.zeros(4, dtype=torch.bool)),
        {},
        "cross_entropy: target has shape (4,) of class indices but dtype torch.bool; "
        "class indices must have an integer dtype (e.g. target.long())",
        id="ce_bool_indices",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10), torch.zeros(4, 10, dtype=LONG)),
        {},
        "cross_entropy: target has shape (4, 10) of class probabilities but dtype torch.int64; "
        "class probabilities must have a floating-point dtype (e.g. target.float())",
        id="ce_integer_probs",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10), torch.zeros(4, dtype=LONG)),
        {"weight": torch.ones(4)},
        "cross_entropy: weight has shape (4,) but input has shape (4, 10) ([N, C]) with C=10; "
        "expected weight shape (10,)",
        id="ce_weight_shape",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10), torch.zeros(4, dtype=LONG)),
        {"weight": torch.ones(10, dtype=LONG)},
        "cross_entropy: weight must have a floating-point dtype; got torch.int64",
        id="ce_weight_dtype",
    ),
    pytest.param(
        cross_entropy,
        (torch.zeros(4, 10, dtype=LONG), torch.zeros(4, dtype=LONG)),
        {},
        "cross_entropy: input must have a floating-point dtype; got torch.int64",
        id="ce_integer_input",
    ),
    pytest.param(
        nll,
        (torch.zeros(4, 10), torch.zeros(4)),
        {},
        "nll: target has shape (4,) of class indices but dtype torch.float32; "
        "class indices must have an integer dtype (e.g. target.long())",
        id="nll_float_target",
    ),
    pytest.param(
        nll,
        (torch.zeros(4, 10), torch.zeros(4, 10)),
        {},
        "nll: target has shape (4, 10) but input has shape (4, 10) ([N, C]); "
        "expected target shape (4,) of class indices",
        id="nll_probs_target",
    ),
    pytest.param(
        nll,
        (torch.tensor(0.0), torch.tensor(0)),
        {},
        "nll: input must have shape [C], [N, C] or [N, C, d1, ...]; got a 0-dimensional tensor",
        id="nll_scalar_input",
    ),
]


@pytest.mark.parametrize(("loss", "args", "kwargs", "message"), CLASS_ERRORS)
def test_class_loss_errors(
    loss: Callable[..., Tensor], args: tuple[Tensor, Tensor], kwargs: dict[str, Any], message: str
) -> None:
    with _raises(ShapeError, message):
        loss(*args, **kwargs)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("weight", (3,)), ("weight", (2, 4, 5)), ("pos_weight", (4,)), ("pos_weight", (1, 4, 5))],
)
def test_bce_weight_must_broadcast_to_input(name: str, shape: tuple[int, ...]) -> None:
    message = (
        f"binary_cross_entropy_with_logits: {name} has shape {shape}, "
        "which does not broadcast to input's shape (4, 5)"
    )
    with _raises(ShapeError, message):
        binary_cross_entropy_with_logits(
            torch.zeros(4, 5), torch.zeros(4, 5), **{name: torch.ones(shape)}
        )


CLASS_SHAPES = st.tuples(
    st.integers(1, 5), st.integers(1, 6), st.lists(st.integers(1, 3), max_size=2)
).map(lambda s: (s[0], s[1], *s[2]))


@given(
    shape=CLASS_SHAPES,
    reduction=st.sampled_from(REDUCTIONS),
    probs=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_random_shapes(
    shape: tuple[int, ...], reduction: str, probs: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    index_shape = (shape[0], *shape[2:])
    t = (
        torch.randn(shape, generator=g).softmax(1)
        if probs
        else torch.randint(0, shape[1], index_shape, generator=g)
    )
    torch.testing.assert_close(
        cross_entropy(x, t, reduction=reduction), F.cross_entropy(x, t, reduction=reduction)
    )
    log_probs = x.log_softmax(1)
    t = torch.randint(0, shape[1], index_shape, generator=g)
    torch.testing.assert_close(
        nll(log_probs, t, reduction=reduction), F.nll_loss(log_probs, t, reduction=reduction)
    )


@given(shape=CLASS_SHAPES, extra=st.integers(1, 3))
def test_class_target_of_wrong_shape_names_expected_shape(
    shape: tuple[int, ...], extra: int
) -> None:
    index_shape = (shape[0], *shape[2:])
    wrong = (shape[0] + extra, *shape[2:])
    expected = f"expected target shape {index_shape} of class indices"
    for loss in (cross_entropy, nll):
        with pytest.raises(ShapeError, match=re.escape(expected)):
            loss(torch.zeros(shape), torch.zeros(wrong, dtype=LONG))


@given(shape=st.lists(st.integers(1, 4), max_size=3), extra=st.integers(1, 2))
def test_regression_never_broadcasts(shape: list[int], extra: int) -> None:
    for loss in REGRESSION_LOSSES:
        with pytest.raises(ShapeError, match="they must be equal"):
            loss(torch.zeros(shape), torch.zeros([*shape, extra]))
