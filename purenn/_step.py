"""`pn.apply_updates` and `pn.step`: new params from updates, never writing into the old ones."""

from __future__ import annotations

from typing import Any

import torch

from . import _treeutil
from ._config import config
from ._errors import ShapeError
from ._finite import check_step
from ._guard import debug_check
from ._packed import Packed, align
from ._params import Params
from .optim import GradientTransformation

__all__ = ["apply_updates", "step"]


def apply_updates(params: Any, updates: Any) -> Any:
    """`params + updates`, leaf by leaf, as a new tree; each result keeps its param's dtype.

    Raises:
        TreeMismatchError: the structures differ (naming the first differing path).
        ShapeError: a leaf's update has another shape (no silent broadcasting).

    Example:
        >>> updates, state = opt.update(grads, state, params)
        >>> params = pn.apply_updates(params, updates)
    """
    debug_check(params=params, updates=updates)
    aligned = align([params, updates]) if isinstance(params, Params) else None
    if aligned is not None:  # one add per flat buffer
        layout, (p_buffers, u_buffers) = aligned
        added = tuple(_add(p, u) for p, u in zip(p_buffers, u_buffers, strict=True))
        return Params._from_packed(Packed(layout, added))
    paths, p_leaves, spec = _treeutil.flatten_with_paths(params)
    _treeutil.check_same_structure(params, [updates], ["params", "updates"])
    new = []
    for path, p, u in zip(paths, p_leaves, _treeutil.flatten(updates)[0], strict=True):
        if p.shape != u.shape:
            raise ShapeError(
                f"apply_updates: update '{path}' has shape {tuple(u.shape)} but the param has {tuple(p.shape)}"
            )
        if p.device != u.device:
            raise ShapeError(
                f"apply_updates: update '{path}' is on {u.device} but the param is on {p.device}"
            )
        new.append(_add(p, u))
    return _treeutil.unflatten(spec, new)


def _add(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    out = p + u
    return out if out.dtype == p.dtype else out.to(p.dtype)


def step(opt: Any, params: Any, grads: Any, opt_state: Any) -> tuple[Any, Any]:
    """One optimizer step: `(new_params, new_opt_state)`. Pure: no argument is modified.

    Equivalent to `updates, s = opt.update(grads, opt_state, params)` followed by
    `pn.apply_updates(params, updates)`. With `pn.config.check_finite` on, a step
    whose new params or state hold NaN or inf raises `pn.NonFiniteError` naming the
    first such path and the step.

    Example:
        >>> opt = pn.optim.adamw(1e-3)
        >>> opt_state = opt.init(params)
        >>> for x, y in batches:
        ...     grads = pn.grad(loss_fn)(params, x, y)
        ...     params, opt_state = pn.step(opt, params, grads, opt_state)
    """
    if not isinstance(opt, GradientTransformation):
        raise TypeError(
            f"pn.step(opt, params, grads, opt_state): opt must be a GradientTransformation, got {type(opt).__name__}"
        )
    debug_check(params=params, grads=grads, opt_state=opt_state)
    updates, new_state = opt.update(grads, opt_state, params)
    new_params = apply_updates(params, updates)
    if config.check_finite:
        check_step(params, grads, new_params, new_state)
    return new_params, new_state
