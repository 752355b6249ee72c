"""The leafwise driver every elementwise rule runs through: one kernel, applied per leaf (or per flat buffer)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .. import _treeutil
from .._packed import Layout, Packed, align, buffers, common_layout
from .._params import Params
from .._scalars import materialize

__all__ = ["hyperparams", "leafwise", "moving_average", "zeros_like"]

Kernel = Callable[..., Sequence[torch.Tensor | None]]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def leafwise(
    kernel: Kernel,
    trees: Sequence[Any | None],
    scalars: Mapping[str, torch.Tensor | float],
    outputs: Sequence[bool],
) -> list[Any | None]:
    """Apply `kernel(*tensors, s)` to corresponding leaves of `trees`; return one tree per output.

    `trees` share a structure (the caller checked it); a None tree passes None to the
    kernel at every leaf. `outputs` says, per kernel output, whether it is a tree
    (True) or always None (False: the kernel returns None there). `s` is `scalars`
    with every tensor cast to the leaf's compute dtype (float64 for float64,
    float32 otherwise), as an n-d tensor computes with a 0-d one anyway; a 0-d leaf
    runs as a 1-element view, so that, as for n-d leaves and torch.optim's Python
    floats, a scalar neither promotes it nor loses precision to its dtype. Outputs are
    cast back to the first tree's leaf dtype. A complex leaf (or flat buffer) runs as
    real pairs (`torch.view_as_real`), as torch.optim's rules treat complex params.
    """
    aligned = align(trees)
    if aligned is not None:
        return _leafwise_packed(kernel, *aligned, scalars, outputs)
    first_index = next(i for i, t in enumerate(trees) if t is not None)
    spec = _treeutil.structure(trees[first_index])
    columns = [_treeutil.flatten(t)[0] if t is not None else None for t in trees]
    n_leaves = spec.num_leaves
    first = columns[first_index]
    cast: dict[tuple[torch.dtype, torch.device], dict[str, Any]] = {}
    results_by_output: list[list[torch.Tensor]] = [[] for _ in outputs]
    for i in range(n_leaves):
        leaf = first[i]
        dtype = leaf.dtype
        cache_key = (dtype, leaf.device)
        s = cast.get(cache_key)
        if s is None:
            s = cast[cache_key] = _cast(scalars, leaf)
        tensors = [col[i] if col is not None else None for col in columns]
        complex_leaf = leaf.is_complex()
        if complex_leaf:
            tensors = [_as_real(t) for t in tensors]
        elif leaf.dim() == 0:
            # Two 0-d operands promote each other (a float32 scalar would turn a bfloat16 leaf
            # into float32); a 1-element view keeps the leaf's dtype with the scalar at full
            # precision, as torch.optim's Python floats do.
            tensors = [t.reshape(1) if t is not None else None for t in tensors]
        results = kernel(*tensors, s)
        for present, out, result in zip(outputs, results_by_output, results, strict=True):
            if present:
                if complex_leaf:
                    out.append(_as_complex(result, dtype))
                    continue
                result = result if result.dtype == dtype else result.to(dtype)
                out.append(result.reshape(()) if leaf.dim() == 0 else result)
    return [
        _treeutil.unflatten(spec, out) if present else None
        for present, out in zip(outputs, results_by_output, strict=True)
    ]


def _as_real(t: torch.Tensor | None) -> torch.Tensor | None:
    """A complex leaf as real pairs (shape `(..., 2)`), as torch.optim's rules see complex params."""
    return None if t is None else torch.view_as_real(t)


def _as_complex(result: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A kernel's real-pair result as the complex `dtype` (its parts in that dtype's real type)."""
    return torch.view_as_complex(result.to(_compute_dtype(dtype)).contiguous())


def _cast(scalars: Mapping[str, torch.Tensor | float], leaf: torch.Tensor) -> dict[str, Any]:
    """Tensor scalars in the leaf's compute dtype, computed once (not per element) when compiled.

    Eagerly they stay on the CPU (a CPU 0-d operand costs no copy); a compiled kernel
    reads them from a buffer, which must then live on the leaf's device.
    """
    compute = _compute_dtype(leaf.dtype)
    device = leaf.device if torch.compiler.is_compiling() else None
    names = [k for k, v in scalars.items() if isinstance(v, torch.Tensor)]
    values = materialize([scalars[k].to(device=device, dtype=compute) for k in names])
    return {**scalars, **dict(zip(names, values, strict=True))}


def _leafwise_packed(
    kernel: Kernel,
    layout: Layout,
    tree_buffers: Sequence[tuple[torch.Tensor, ...] | None],
    scalars: Mapping[str, torch.Tensor | float],
    outputs: Sequence[bool],
) -> list[Any | None]:
    """The same kernel once per flat buffer: one loop however many leaves the trees have."""
    per_output: list[list[torch.Tensor]] = [[] for _ in outputs]
    for group, (dtype, _, _) in enumerate(layout.groups):
        first_buffer = next(b[group] for b in tree_buffers if b is not None)
        complex_buffer = first_buffer.is_complex()
        results = kernel(
            *(
                (_as_real(b[group]) if complex_buffer else b[group]) if b is not None else None
                for b in tree_buffers
            ),
            _cast(scalars, first_buffer),
        )
        for present, out, result in zip(outputs, per_output, results, strict=True):
            if present:
                if complex_buffer:
                    out.append(_as_complex(result, dtype))
                else:
                    out.append(result if result.dtype == dtype else result.to(dtype))
    return [
        Params._from_packed(Packed(layout, tuple(out))) if present else None
        for present, out in zip(outputs, per_output, strict=True)
    ]


def zeros_like(params: Any) -> Any:
    """A params-shaped tree of zeros (a rule's initial moment buffers); packed if `params` is."""
    if common_layout([params]) is not None:
        return Params._from_packed(
            Packed(params._packed.layout, tuple(torch.zeros_like(b) for b in buffers(params)))
        )
    return _treeutil.tree_map(torch.zeros_like, params)


def hyperparams(**values: float) -> Params:
    """Hyperparameters as float64 0-d CPU tensors: readable, settable with `pn.tree.set`, never recompiling."""
    return Params(
        {name: torch.tensor(float(value), dtype=torch.float64) for name, value in values.items()}
    )


def moving_average(average: torch.Tensor, x: torch.Tensor, decay: Any, weight: Any) -> torch.Tensor:
    """The moving average `lerp(average, x, weight)` (`weight` is `1 - decay`), elementwise.

    Eagerly this is torch.optim's `lerp`: one pass over memory. Compiled, it is the
    convex sum `average * decay + x * weight`: inductor evaluates lerp's choice between
    two formulas by the weight as a blend in every vector of the element loop, while
    the sum fuses into two multiplies and an add. The two differ by rounding only, and
    both are exact at the ends (decay 0 gives `x`, decay 1 gives `average`). Measured on
    16M floats (2 cores): eagerly lerp 39 ms against 109 ms for the sum's three ops.

    Example:
        >>> moving_average(torch.zeros(2), torch.ones(2), 0.9, 0.1)
        tensor([0.1000, 0.1000])
    """
    if torch.compiler.is_compiling():
        return average * decay + x * weight
    return torch.lerp(average, x, weight)
