"""Check of property 4: a rule's parameter trajectory against its `torch.optim` twin's."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
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

    Both start from `params` and, at step `t`, see the same gradient
    `grad_fn(params_t, t)`, taken at purenn's current params; the params are compared
    after every step, so a discrepancy is reported at the step where it first shows.
    The gradients are shared, not taken by each side at its own params, because such
    closed loops can be unstable: a sign-like step (Adam with small betas, LAMB, Lion)
    that oscillates around an optimum amplifies a one-ulp rounding difference by a
    factor per step, so two correct float32 implementations part far beyond any
    rounding tolerance within a few steps. Shared gradients still make the
    sequence depend on the trajectory (sign changes near an optimum, shrinking
    magnitudes), while the difference left to compare is the rule's own. A
    difference beyond `rtol`/`atol` is then accepted only where the problem is
    ill-conditioned enough that rounding explains it: the torch run, perturbed by
    one rounding difference per stored value and step, moves at least a quarter as
    far (see `_Sensitivity`). The torch optimizer is
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

    trajectory, gradients = [], []
    current, state = params, opt.init(params)
    for t in range(steps):
        grads = grad_fn(current, t)
        current, state = pn_step(opt, current, grads, state)
        trajectory.append(current)
        gradients.append(_treeutil.flatten(grads)[0])

    start = _treeutil.flatten(params)[0]
    for variant in variants if variants is not None else default_variants(torch_optimizer_cls):
        name = _variant_name(torch_optimizer_cls, variant)
        runs = _twin_run(torch_optimizer_cls, variant, start, gradients, torch_kwargs)
        sensitivity = _Sensitivity(torch_optimizer_cls, variant, start, gradients, torch_kwargs)
        for t, (ours, theirs) in enumerate(zip(trajectory, runs, strict=True)):
            theirs = _treeutil.unflatten(spec, theirs)
            found = describe_difference(
                ours, theirs, rtol=rtol, atol=atol, names=("torch", "purenn")
            )
            if found is None:
                continue
            verdict = sensitivity.judge(t, ours, theirs)
            if verdict is not None:
                raise AssertionError(
                    f"check_matches_torch: the rule and {name} diverge at step {t + 1} of "
                    f"{steps}: param {found}{verdict}"
                )


# How far beyond the torch optimizer's sensitivity to rounding (see `_Sensitivity`) purenn's
# difference from it may go before it counts as a bug.
ROUNDING_SLACK = 4.0


def _twin_run(
    cls: type[torch.optim.Optimizer],
    variant: Mapping[str, Any],
    start: Sequence[torch.Tensor],
    gradients: Sequence[Sequence[torch.Tensor]],
    torch_kwargs: Mapping[str, Any],
    perturb: torch.Generator | None = None,
) -> Iterator[list[torch.Tensor]]:
    """The torch optimizer's params (flat) after each step, fed `gradients`.

    With `perturb`, every float param and state tensor (not the step count) is moved
    after each step by one unit of its dtype's epsilon, up or down at random, relative
    to the larger of its new value and of the step's change to it: one rounding
    difference in everything an implementation stores, whether it rounds the result
    or the increment (`p + u` that cancels to ~0 carries the error of `u`).
    """
    tensors = [torch.nn.Parameter(leaf.detach().clone()) for leaf in start]
    twin = cls(tensors, **variant, **torch_kwargs)
    for grads in gradients:
        for p, g in zip(tensors, grads, strict=True):
            p.grad = g.detach().clone()
        before = (
            {k: v.clone() for k, v in _stored(twin, tensors).items()} if perturb is not None else {}
        )
        twin.step()
        if perturb is not None:
            with torch.no_grad():
                for key, x in _stored(twin, tensors).items():
                    _nudge(x, before.get(key), perturb)
        yield [p.detach().clone() for p in tensors]


def _stored(twin: torch.optim.Optimizer, tensors: Sequence[torch.Tensor]) -> dict[Any, Any]:
    """The params and their float state tensors (not step counts), by (param, name)."""
    stored: dict[Any, Any] = {}
    for i, p in enumerate(tensors):
        stored[i, None] = p
        for name, value in twin.state[p].items():
            if name != "step" and isinstance(value, torch.Tensor):
                if _treeutil.is_inexact(value):
                    stored[i, name] = value
    return {key: value.detach() for key, value in stored.items()}


def _nudge(x: torch.Tensor, old: torch.Tensor | None, generator: torch.Generator) -> None:
    real = x.real.dtype if x.is_complex() else x.dtype
    scale = x.abs() if old is None else torch.maximum(x.abs(), (x - old).abs())
    scale = torch.nan_to_num(scale, nan=0.0, posinf=0.0)  # nothing to nudge in inf or NaN
    signs = torch.randint(0, 2, x.shape, generator=generator).to(real) * 2 - 1
    x.add_(torch.finfo(real).eps * signs * scale)


class _Sensitivity:
    """Arbiter for differences beyond the tolerance: how much rounding moves the torch run.

    An ill-conditioned problem (a centered RMSprop whose variance cancels, a param
    that crosses 0 and is then divided by a tiny eps) amplifies rounding differences
    far beyond any fixed tolerance, so two correct implementations part there. The
    torch optimizer is run again with one rounding difference injected per stored
    value and step; a difference counts as rounding when, leaf by leaf, purenn's
    largest difference from the torch run is at most `ROUNDING_SLACK` times the
    perturbed run's. On well-conditioned problems that run stays within ulps, so
    real discrepancies still fail.
    """

    def __init__(
        self,
        cls: type[torch.optim.Optimizer],
        variant: Mapping[str, Any],
        start: Sequence[torch.Tensor],
        gradients: Sequence[Sequence[torch.Tensor]],
        torch_kwargs: Mapping[str, Any],
    ) -> None:
        self._args = (cls, variant, start, gradients, torch_kwargs)
        self._run: Iterator[list[torch.Tensor]] | None = None
        self._steps: list[list[torch.Tensor]] = []

    def _at(self, t: int) -> list[torch.Tensor]:
        if self._run is None:
            self._run = _twin_run(*self._args, perturb=torch.Generator().manual_seed(0))
        while len(self._steps) <= t:
            self._steps.append(next(self._run))
        return self._steps[t]

    def judge(self, t: int, ours: Any, theirs: Any) -> str | None:
        """None if the difference at step `t` is within rounding's reach, else why not."""
        paths, our_leaves, _ = _treeutil.flatten_with_paths(ours)
        their_leaves = _treeutil.flatten(theirs)[0]
        for path, a, b, c in zip(paths, our_leaves, their_leaves, self._at(t), strict=True):
            if not _treeutil.is_inexact(a):
                if describe_difference(a, b) is not None:
                    return ""  # exact leaves have no rounding to blame
                continue
            wide = torch.complex128 if a.is_complex() else torch.float64
            ours_gap = _max_gap(a.to(wide), b.to(wide))
            reach = _max_gap(c.to(wide), b.to(wide))
            if ours_gap <= ROUNDING_SLACK * reach:
                continue
            return (
                f"; one rounding difference per stored value and step moves the torch run "
                f"at '{path}' by at most {reach:.3g}, purenn differs by {ours_gap:.3g}, "
                f"more than {ROUNDING_SLACK:g}x that, so it is not rounding"
            )
        return None


def _max_gap(y: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest |y - reference| (0 for empty tensors); a NaN or infinity where `reference` has none counts as infinite."""
    if y.numel() == 0:
        return 0.0
    agree = (torch.isnan(y) & torch.isnan(reference)) | (torch.isinf(reference) & (y == reference))
    gap = (y - reference).abs().masked_fill(agree, 0.0)
    return float(torch.nan_to_num(gap, nan=math.inf).max())
