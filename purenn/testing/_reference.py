"""Check of property 4: a rule's parameter trajectory against its `torch.optim` twin's."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import _treeutil
from .._step import step as pn_step
from ..optim import GradientTransformation
from ._compare import default_tolerance, describe_difference
from ._problem import GradFn, default_gradient, default_params

__all__ = ["check_matches_torch", "default_variants"]


def default_variants(
    torch_optimizer_cls: type[torch.optim.Optimizer],
) -> tuple[dict[str, Any], ...]:
    """The implementations to compare against: for-loop and foreach where the class offers both."""
    try:
        accepted = inspect.signature(torch_optimizer_cls).parameters
    except (TypeError, ValueError):
        accepted = {}
    return ({"foreach": False}, {"foreach": True}) if "foreach" in accepted else ({},)


def _variant_name(cls: type, variant: Mapping[str, Any]) -> str:
    return f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in variant.items())})"


def check_matches_torch(
    opt: GradientTransformation,
    torch_optimizer_cls: type[torch.optim.Optimizer],
    *,
    params: Any = None,
    steps: int = 50,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
    atol: float | None = None,
    grad_fn: GradFn | None = None,
    variants: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    **torch_kwargs: Any,
) -> None:
    """Property 4: `steps` steps of `opt` give the params that `torch_optimizer_cls` gives.

    Both start from `params` and, at step `t`, see the gradient `grad_fn(params_t, t)`
    at their own current params; the params are compared after every step, so a
    discrepancy is reported at the step where it first shows. The torch optimizer is
    built as `torch_optimizer_cls(tensors, **variant, **torch_kwargs)` once per
    variant (by default the for-loop and the foreach implementation); give `opt` the
    same hyperparameters as `torch_kwargs`.

    Args:
        opt: the purenn rule.
        torch_optimizer_cls: e.g. `torch.optim.AdamW`, or any `torch.optim.Optimizer` subclass.
        params: the start; default a small random tree (4 leaves incl. a 0-d one) in `dtype`.
        steps: how many steps.
        dtype: the default params' dtype (ignored when `params` is given).
        rtol, atol: default by the least precise dtype among the params: float64
            `1e-10, 1e-12`; float32 `1e-5, 1e-6`; float16 `1e-2, 1e-2`; bfloat16 `3e-2, 3e-2`.
        grad_fn: `grad_fn(params, step) -> grads` (trees like params); default
            `sin(3 p) + 0.3 p + 0.1 cos(step)` per leaf.
        variants: extra torch keyword sets to compare against, e.g.
            `({"foreach": False}, {"foreach": True}, {"fused": True})`.
        seed: seeds the default params.
        **torch_kwargs: the torch optimizer's hyperparameters (`lr=`, `betas=`, ...).

    Raises:
        AssertionError: naming the torch variant, the step, the param path and element,
            torch's value (expected) and purenn's (got).

    Example:
        >>> pn.testing.check_matches_torch(
        ...     pn.optim.adamw(1e-2, weight_decay=0.1), torch.optim.AdamW, lr=1e-2, weight_decay=0.1
        ... )
    """
    if params is None:
        params = default_params(dtype, seed)
    grad_fn = grad_fn or default_gradient
    default_rtol, default_atol = default_tolerance(params)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    spec = _treeutil.structure(params)

    trajectory = []
    current, state = params, opt.init(params)
    for t in range(steps):
        current, state = pn_step(opt, current, grad_fn(current, t), state)
        trajectory.append(current)

    for variant in variants if variants is not None else default_variants(torch_optimizer_cls):
        name = _variant_name(torch_optimizer_cls, variant)
        tensors = [
            torch.nn.Parameter(leaf.detach().clone()) for leaf in _treeutil.flatten(params)[0]
        ]
        twin = torch_optimizer_cls(tensors, **variant, **torch_kwargs)
        for t, ours in enumerate(trajectory):
            theirs = _treeutil.unflatten(spec, [p.detach() for p in tensors])
            grads = _treeutil.flatten(grad_fn(theirs, t))[0]
            for p, g in zip(tensors, grads, strict=True):
                p.grad = g.detach().clone()
            twin.step()
            theirs = _treeutil.unflatten(spec, [p.detach() for p in tensors])
            found = describe_difference(
                ours, theirs, rtol=rtol, atol=atol, names=("torch", "purenn")
            )
            if found is not None:
                raise AssertionError(
                    f"check_matches_torch: the rule and {name} diverge at step {t + 1} of "
                    f"{steps}: param {found}"
                )
