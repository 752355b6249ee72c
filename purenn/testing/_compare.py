"""Tree comparison that says where two trees differ: the path, the element, both values, how far."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import _treeutil

__all__ = ["bits", "default_tolerance", "describe_difference", "first_element", "tolerance_for"]

# (rtol, atol) for results whose rounding order may legitimately differ (PROPERTIES.md, 4).
# Half precisions: a few units in the last place of values around 1, compounded over steps.
_TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.complex128: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.complex64: (1e-5, 1e-6),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def tolerance_for(dtype: torch.dtype) -> tuple[float, float]:
    """`(rtol, atol)` for comparing results of one dtype computed in different orders."""
    return _TOLERANCE.get(dtype, (0.0, 0.0))


def default_tolerance(*trees: Any) -> tuple[float, float]:
    """The loosest `tolerance_for` over the floating-point leaves of `trees` (float64's if none)."""
    rtol, atol = _TOLERANCE[torch.float64]
    for leaf in _treeutil.tensor_leaves(trees):
        r, a = tolerance_for(leaf.dtype)
        rtol, atol = max(rtol, r), max(atol, a)
    return rtol, atol


def bits(t: torch.Tensor) -> torch.Tensor:
    """`t`'s elements reinterpreted as integers of the same width, for bitwise comparison.

    Bitwise equality tells -0.0 from 0.0 and equates NaNs with the same payload.
    """
    if t.dtype.is_floating_point or t.dtype.is_complex:
        if t.dtype.is_complex:
            t = torch.view_as_real(t)
        return t.view(_INT_OF_SIZE[t.element_size()])
    return t


def first_element(mask: torch.Tensor) -> tuple[int, ...]:
    """The index of the first True element of `mask` (row-major order)."""
    flat = int(torch.nonzero(mask.reshape(-1))[0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), mask.shape))


def _index_str(index: tuple[int, ...]) -> str:
    return f" [{', '.join(map(str, index))}]" if index else ""


def _value(t: torch.Tensor, index: tuple[int, ...]) -> str:
    return repr(t[index].item())


def describe_difference(
    actual: Any,
    expected: Any,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    bitwise: bool = False,
    signed_zeros: bool = True,
    names: Sequence[str] = ("expected", "got"),
    prefix: str = "",
) -> str | None:
    """None if `actual` matches `expected`, else where and how the first leaf differs.

    Trees must have one structure; leaves one shape, dtype and device; values must
    be bitwise equal (`bitwise=True`; with `signed_zeros=False` -0.0 equals 0.0) or satisfy `|actual - expected| <= atol + rtol
    * |expected|` elementwise (NaNs match NaNs, equal infinities match; computed in
    float64). The message names the path (`prefix` + the leaf's dotted path), the
    first differing element's index and both values, in the words `names`.

    Example:
        >>> describe_difference(pn.Params({"w": torch.ones(2)}), pn.Params({"w": torch.zeros(2)}))
        "at 'w' [0]: expected 0.0, got 1.0 (|diff| 1 > 0 + 0 * |expected|; 2 of 2 elements differ)"
    """
    expected_name, actual_name = names
    expected_spec, actual_spec = _treeutil.structure(expected), _treeutil.structure(actual)
    if expected_spec != actual_spec:
        error = _treeutil.mismatch_error(expected_spec, actual_spec, expected_name, actual_name)
        return f"the structures differ: {error}"
    paths, expected_leaves, _ = _treeutil.flatten_with_paths(expected)
    for path, a, e in zip(paths, _treeutil.flatten(actual)[0], expected_leaves, strict=True):
        where = f"'{prefix}{path}'" if (prefix or path) else "the root"
        found = _leaf_difference(
            a, e, rtol=rtol, atol=atol, bitwise=bitwise, signed_zeros=signed_zeros, names=names
        )
        if found is not None:
            return f"at {where}{found}"
    return None


def _leaf_difference(
    a: Any,
    e: Any,
    *,
    rtol: float,
    atol: float,
    bitwise: bool,
    signed_zeros: bool,
    names: Sequence[str],
) -> str | None:
    expected_name, actual_name = names
    if not (isinstance(a, torch.Tensor) and isinstance(e, torch.Tensor)):
        if a is e or (type(a) is type(e) and a == e):
            return None
        return f": {expected_name} {e!r}, {actual_name} {a!r}"
    for what in ("shape", "dtype", "device"):
        if getattr(a, what) != getattr(e, what):
            shown = (tuple(e.shape), tuple(a.shape)) if what == "shape" else (e.dtype, a.dtype)
            if what == "device":
                shown = (e.device, a.device)
            return f": {expected_name} {what} {shown[0]}, {actual_name} {what} {shown[1]}"
    if a.numel() == 0:
        return None
    inexact = a.dtype.is_floating_point or a.dtype.is_complex
    wide = torch.complex128 if a.dtype.is_complex else torch.float64
    if bitwise:
        if not signed_zeros and inexact:
            a, e = (torch.where(t == 0, torch.zeros_like(t), t) for t in (a, e))
        differ = bits(a) != bits(e)
        if differ.dim() > a.dim():  # complex: real and imaginary parts
            differ = differ.any(-1)
    elif inexact:
        differ = ~torch.isclose(a.to(wide), e.to(wide), rtol=rtol, atol=atol, equal_nan=True)
    else:
        differ = a != e
    if not bool(differ.any()):
        return None
    index = first_element(differ)
    count = f"{int(differ.sum())} of {a.numel()} elements differ"
    if bitwise or not inexact:
        how = "bitwise" if bitwise else "exact"
    else:
        gap = float((a.to(wide) - e.to(wide))[index].abs())
        how = f"|diff| {gap:.3g} > {atol:g} + {rtol:g} * |{expected_name}|"
    return (
        f"{_index_str(index)}: {expected_name} {_value(e, index)}, "
        f"{actual_name} {_value(a, index)} ({how}; {count})"
    )
