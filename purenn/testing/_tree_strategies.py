"""Hypothesis strategies for params trees, gradients like them, and (params, gradients) problems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import torch
from hypothesis import strategies as st

from .. import _treeutil
from .._donation import pack
from .._params import Params

__all__ = [
    "FLOAT_DTYPES",
    "GRAD_MAGNITUDES",
    "PARAM_MAGNITUDES",
    "Magnitude",
    "Problem",
    "grads_like",
    "params",
    "problems",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
Magnitude = Literal["normal", "sparse", "zero", "tiny", "huge"]
PARAM_MAGNITUDES: tuple[Magnitude, ...] = ("normal", "sparse", "zero")
GRAD_MAGNITUDES: tuple[Magnitude, ...] = ("normal", "sparse", "zero", "tiny", "huge")

# Inner-node keys and leaf keys never overlap, so a path is never both a leaf and a node.
_NODE_KEYS = ("0", "1", "2", "layers", "sub", "encoder")
_LEAF_NAMES = ("weight", "bias", "w", "b", "scale", "emb", "gamma")
_leaf_keys = st.one_of(
    st.sampled_from(_LEAF_NAMES),
    st.text(alphabet="abcdefgh_μ", min_size=1, max_size=4).filter(lambda s: s not in _NODE_KEYS),
)


def _scale(kind: Magnitude, dtype: torch.dtype) -> float:
    """The typical size of a `kind` value in `dtype`.

    `tiny` sits at the square root of the smallest normal number and `huge` a factor 64
    below the square root of the largest finite one: squares (second moments, norms)
    land at the edges of the range without leaving it.
    """
    info = torch.finfo(dtype)
    if kind == "tiny":
        return math.sqrt(info.tiny)
    if kind == "huge":
        return math.sqrt(info.max) / 64
    return 1.0


def _values(
    draw: Any, shape: tuple[int, ...], dtype: torch.dtype, device: Any, kinds: Sequence[Magnitude]
) -> torch.Tensor:
    kind = draw(st.sampled_from(kinds))
    if kind == "zero":
        return torch.zeros(shape, dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * _scale(kind, dtype)
    if kind == "sparse":  # about half the elements exactly zero
        values = values * (torch.rand(shape, generator=generator) < 0.5)
    return values.to(dtype=dtype, device=device)


def _shape(draw: Any, max_ndim: int, max_side: int, scalars: bool, empty: bool) -> tuple[int, ...]:
    ndim = draw(st.integers(0 if scalars else 1, max_ndim))
    shape = [draw(st.integers(1, max_side)) for _ in range(ndim)]
    # One leaf in eight has an empty dimension; the shrinker moves away from it (towards 0).
    if empty and ndim and draw(st.integers(0, 7)) == 7:
        shape[draw(st.integers(0, ndim - 1))] = 0
    return tuple(shape)


def _maybe_pack(draw: Any, tree: Params, packed: bool | None) -> Params:
    if packed is None:
        packed = draw(st.booleans())
    return pack(tree) if packed else tree


@st.composite
def params(
    draw: Any,
    *,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    mixed_dtypes: bool = False,
    min_leaves: int = 1,
    max_leaves: int = 4,
    max_depth: int = 3,
    max_ndim: int = 3,
    max_side: int = 4,
    scalars: bool = True,
    empty: bool = True,
    magnitudes: Sequence[Magnitude] = PARAM_MAGNITUDES,
    packed: bool | None = False,
    device: str | torch.device = "cpu",
) -> Params:
    """Random `pn.Params` trees: nested keys, small shapes, floating dtypes, values by magnitude.

    Args:
        dtypes: the dtypes to draw from (any of `FLOAT_DTYPES`).
        mixed_dtypes: draw a dtype per leaf rather than one per tree.
        min_leaves, max_leaves: how many leaves.
        max_depth: the most path segments (1: a flat tree).
        max_ndim, max_side: leaves have 0..max_ndim dims of 1..max_side elements.
        scalars: allow 0-d leaves.
        empty: allow a dimension of size 0 (one leaf in eight).
        magnitudes: what a leaf's values look like, drawn per leaf: `"normal"` (N(0, 1)),
            `"sparse"` (half of them zero), `"zero"`, `"tiny"` (about the square root of
            the dtype's smallest normal number), `"huge"` (about the square root of its
            largest finite number / 64).
        packed: pack the tree into flat buffers (`pn.tree.pack`); None draws either.
        device: where the leaves live.

    Example:
        >>> @given(params=strategies.params(dtypes=strategies.FLOAT_DTYPES, max_leaves=3))
        ... def test_init_accepts_any_tree(params):
        ...     pn.optim.adam().init(params)
    """
    bad = [d for d in dtypes if d not in FLOAT_DTYPES]
    if bad or not dtypes:
        raise ValueError(
            f"strategies.params: dtypes must be floating dtypes among {list(FLOAT_DTYPES)}, got "
            f"{bad or 'none'} (update rules take floating params only)"
        )
    n = draw(st.integers(min_leaves, max_leaves))
    tree_dtype = draw(st.sampled_from(dtypes))
    root: dict[str, Any] = {}
    for _ in range(n):
        node = root
        for _ in range(draw(st.integers(0, max_depth - 1))):
            node = node.setdefault(draw(st.sampled_from(_NODE_KEYS)), {})
        name = draw(_leaf_keys)
        while name in node:
            name += "_"
        dtype = draw(st.sampled_from(dtypes)) if mixed_dtypes else tree_dtype
        shape = _shape(draw, max_ndim, max_side, scalars, empty)
        node[name] = _values(draw, shape, dtype, device, magnitudes)
    return _maybe_pack(draw, Params(root), packed)


@st.composite
def grads_like(
    draw: Any,
    like: Any,
    *,
    magnitudes: Sequence[Magnitude] = GRAD_MAGNITUDES,
    nonfinite: bool = False,
    packed: bool | None = None,
) -> Any:
    """Random gradients for `like` (a params tree): its structure, shapes, dtypes and devices.

    Args:
        like: the params tree.
        magnitudes: drawn per leaf, as for `params` (default includes zeros, tiny and huge values).
        nonfinite: sometimes put NaN, inf or -inf at a drawn element of a leaf.
        packed: pack the result; None packs it when `like` is a packed Params.

    Example:
        >>> @given(data=st.data())
        ... def test_update(data):
        ...     params = data.draw(strategies.params())
        ...     grads = data.draw(strategies.grads_like(params))
    """
    leaves, spec = _treeutil.flatten(like)
    new = []
    for leaf in leaves:
        values = _values(draw, tuple(leaf.shape), leaf.dtype, leaf.device, magnitudes)
        if nonfinite and values.numel() and draw(st.booleans()):
            flat = values.reshape(-1).clone()
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(
                st.sampled_from([math.nan, math.inf, -math.inf])
            )
            values = flat.reshape(values.shape)
        new.append(values)
    tree = _treeutil.unflatten(spec, new)
    if packed is None:
        packed = isinstance(like, Params) and like._packed is not None
    return pack(tree) if packed else tree


@attrs.frozen
class Problem:
    """A params tree and one gradient tree per step (`grads[t]` for step t)."""

    params: Params
    grads: tuple[Any, ...]

    def grad_fn(self, params: Any, step: int) -> Any:
        """`grads[step]` (cycling), for the checks' `grads=` / `grad_fn=` arguments."""
        return self.grads[step % len(self.grads)]


@st.composite
def problems(
    draw: Any,
    *,
    steps: int = 2,
    params_strategy: st.SearchStrategy[Params] | None = None,
    grad_magnitudes: Sequence[Magnitude] = GRAD_MAGNITUDES,
    nonfinite: bool = False,
    **params_options: Any,
) -> Problem:
    """A `Problem`: a params tree and `steps` gradient trees like it.

    Args:
        steps: how many gradient trees.
        params_strategy: where the params come from; default `params(**params_options)`
            (e.g. pass `strategies.params_for(pn.optim.adafactor)`).
        grad_magnitudes, nonfinite: as for `grads_like`.

    Example:
        >>> @given(problem=strategies.problems(steps=3))
        ... def test_pure(problem):
        ...     pn.testing.check_pure(pn.optim.adam(), problem.params, problem.grad_fn, steps=3)
    """
    if params_strategy is not None and params_options:
        raise ValueError("problems: pass params_strategy or params options, not both")
    p = draw(params_strategy if params_strategy is not None else params(**params_options))
    grads = tuple(
        draw(grads_like(p, magnitudes=grad_magnitudes, nonfinite=nonfinite)) for _ in range(steps)
    )
    return Problem(p, grads)
