"""`pn.optim.adafactor`: Adafactor with factored second moments (Shazeer & Stern), as torch.optim.Adafactor."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import Tensor

from .. import _treeutil
from .._errors import TreeMismatchError
from .._node import node
from .._params import Params
from ._base import GradientTransformation
from ._checks import check_left_out, check_lr, check_settings, check_state, need_params
from ._common import (
    LearningRate,
    check_update_args,
    float_leaves,
    initial_lr,
    lr_value,
)
from ._kernel import hyperparams
from ._subset import select

__all__ = ["AdafactorState", "adafactor"]


@node
class AdafactorState:
    """State of `adafactor`.

    Fields: `count` (updates done, int64 0-d); `hyperparams` (`lr`, `beta2_decay`,
    `eps1` (absent when `eps[0]` is None: then each leaf uses its dtype's machine
    epsilon), `eps2`, `d`, `weight_decay` as float64 0-d tensors). The second moment
    of a leaf with 2 or more dims is factored over its last two: `row_var[path]` has
    the leaf's shape with the last dim 1, `col_var[path]` with the second-to-last 1.
    Leaves with fewer dims keep an unfactored `variance[path]` of their own shape.
    These three are `Params` keyed by the params' paths. Static: `maximize`.
    """

    count: torch.Tensor
    hyperparams: Params
    row_var: Params
    col_var: Params
    variance: Params
    maximize: bool = attrs.field(default=False, metadata={"static": True})


def _leaf_update(
    g: Tensor,
    p: Tensor,
    row: Tensor | None,
    col: Tensor | None,
    var: Tensor | None,
    s: dict[str, Any],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    # torch.optim's single-tensor Adafactor (torch/optim/_adafactor.py), operation for operation;
    # its `.item()` maxima are torch.maximum on 0-d tensors, so nothing leaves the graph.
    if s["maximize"]:
        g = -g
    # eps1 as torch.optim's Python float meets the leaf: cast to the leaf's dtype (0-d leaves would promote).
    eps1 = (
        s["eps1"]
        if s["eps1"] is not None
        else torch.tensor(torch.finfo(p.dtype).eps, dtype=torch.float64)
    )
    eps1_sq = (eps1 * eps1).to(g.dtype)
    eps1 = eps1.to(g.dtype)
    numel_sqrt = math.sqrt(p.numel())
    param_rms = torch.linalg.vector_norm(p).to(torch.float64) / numel_sqrt
    alpha = torch.maximum(param_rms, s["eps2"]) * s["rho"]
    beta_weight = s["one_minus_beta2"].to(g.dtype)
    if row is not None and col is not None:  # a leaf with >= 2 dims
        row_mean = torch.square(torch.linalg.vector_norm(g, dim=-1, keepdim=True)) / g.size(-1)
        row = torch.lerp(row, row_mean, beta_weight)
        col_mean = torch.square(torch.linalg.vector_norm(g, dim=-2, keepdim=True)) / g.size(-2)
        col = torch.lerp(col, col_mean, beta_weight)
        estimate = (row @ col) / torch.clamp(torch.mean(row, dim=-2, keepdim=True), min=eps1)
    elif var is not None:
        var = torch.lerp(var, g * g, beta_weight)
        estimate = var
    else:  # _check_state_fits rules this out
        raise TreeMismatchError("adafactor: the state has no second moment for a leaf")
    direction = torch.rsqrt(torch.clamp(estimate, min=eps1_sq)) * g
    direction_rms = torch.linalg.vector_norm(direction).to(torch.float64) / (numel_sqrt * s["d"])
    # max(1, rms) as torch.optim.Adafactor's Python max: 1 when rms is NaN (clamp would keep the NaN).
    scale = -alpha / torch.where(direction_rms > 1.0, direction_rms, 1.0)
    update = direction * scale.to(direction.dtype)
    if s["decay"]:
        update = update - p * s["lr_decay"].to(p.dtype)
    return update, row, col, var


def _check_state_fits(
    paths: list[str],
    leaves: list[Tensor],
    rows: dict[str, Tensor],
    cols: dict[str, Tensor],
    variances: dict[str, Tensor],
) -> None:
    """The state's moments must cover exactly these leaves, with the shapes init gives them."""
    for path, leaf in zip(paths, leaves, strict=True):
        if leaf.dim() > 1:
            row, col = rows.get(path), cols.get(path)
            ok = (
                row is not None
                and col is not None
                and row.shape == (*leaf.shape[:-1], 1)
                and col.shape == (*leaf.shape[:-2], 1, leaf.shape[-1])
            )
        else:
            var = variances.get(path)
            ok = var is not None and var.shape == leaf.shape
        if not ok:
            raise TreeMismatchError(
                f"adafactor: the optimizer state does not fit grads '{path}' of shape "
                f"{tuple(leaf.shape)}: pass the state from opt.init on these params"
            )
    extra = sorted((set(rows) | set(variances)) - set(paths))
    if extra:
        raise TreeMismatchError(
            f"adafactor: the optimizer state has moments for '{extra[0]}', which grads lack: "
            "pass the state from opt.init on these params"
        )


def adafactor(
    lr: LearningRate = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018), with torch.optim.Adafactor's arguments, defaults and numbers.

    With `g` the gradient (negated if `maximize`), `t` the update number (from 1),
    `b_t = t^beta2_decay` and `rho_t = min(lr, 1 / sqrt(t))`, per leaf `p`:

        R <- (1 - b_t) R + b_t mean(g^2, last dim)              (leaves with >= 2 dims)
        C <- (1 - b_t) C + b_t mean(g^2, second-to-last dim)
        V = R C / max(mean(R, second-to-last dim), eps1)
        V <- (1 - b_t) V + b_t g^2                              (leaves with < 2 dims)
        u = g / sqrt(max(V, eps1^2))
        update = -max(eps2, rms(p)) rho_t / max(1, rms(u) / d) * u - lr * weight_decay * p

    `eps1` defaults to the leaf dtype's machine epsilon. The per-leaf norms make this
    rule run leaf by leaf rather than through the elementwise driver.

    Args:
        lr: learning rate (caps the relative step size rho_t), or a schedule `count -> lr`.

    Example:
        >>> params = pn.nn.sequential(pn.nn.linear(4, 8), pn.nn.linear(8, 2)).init(pn.random.key(0))
        >>> grads = pn.tree.zeros_like(params)
        >>> opt = pn.optim.adafactor(1e-2)
        >>> state = opt.init(params)
        >>> params, state = pn.step(opt, params, grads, state)
        >>> sorted(state.row_var.to_state_dict())  # the factored (>= 2-d) leaves
        ['0.weight', '1.weight']
    """
    check_lr(lr, "Learning rate should be >= 0 but is: {lr}")
    if not 0.0 >= beta2_decay:
        raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
    if not (isinstance(eps, (tuple, list)) and len(eps) == 2):
        raise ValueError(f"eps must be a pair (eps1 or None, eps2), got {eps!r}")
    if eps[0] is not None and not 0.0 <= eps[0]:
        raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
    if not 0.0 <= eps[1]:
        raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
    if not 1.0 <= d:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
    eps1 = {} if eps[0] is None else {"eps1": eps[0]}

    def init(params: Any) -> AdafactorState:
        paths, leaves, _ = float_leaves(
            "adafactor",
            params,
            no_complex="its second moment factors into row and column means of real "
            "matrices; torch.optim.Adafactor refuses them too",
        )
        factored = [leaf.dim() > 1 for leaf in leaves]
        rows = [
            leaf.new_zeros((*leaf.shape[:-1], 1)) if f else leaf
            for leaf, f in zip(leaves, factored, strict=True)
        ]
        cols = [
            leaf.new_zeros((*leaf.shape[:-2], 1, leaf.shape[-1])) if f else leaf
            for leaf, f in zip(leaves, factored, strict=True)
        ]
        return AdafactorState(
            count=torch.zeros((), dtype=torch.int64),
            hyperparams=hyperparams(
                lr=initial_lr(lr),
                beta2_decay=beta2_decay,
                **eps1,
                eps2=eps[1],
                d=d,
                weight_decay=weight_decay,
            ),
            row_var=select(paths, rows, factored),
            col_var=select(paths, cols, factored),
            variance=select(
                paths, [torch.zeros_like(x) for x in leaves], [not f for f in factored]
            ),
            maximize=maximize,
        )

    def update(grads: Any, state: AdafactorState, params: Any = None) -> tuple[Any, AdafactorState]:
        check_state("adafactor", state, AdafactorState)
        check_settings("adafactor", state, maximize=maximize)
        need_params("adafactor", params, "for the relative step size")
        check_update_args("adafactor", grads, state, params, params)
        check_left_out("adafactor", state, weight_decay=weight_decay)
        paths, g_leaves, spec = _treeutil.flatten_with_paths(grads)
        h = state.hyperparams
        count = state.count + 1
        step = count.to(torch.float64)
        step_lr = lr_value(lr, state.count, h["lr"])
        rows, cols, variances = (
            state.row_var.to_state_dict(),
            state.col_var.to_state_dict(),
            state.variance.to_state_dict(),
        )
        _check_state_fits(paths, g_leaves, rows, cols, variances)
        s = {
            "maximize": state.maximize,
            "eps1": h["eps1"] if "eps1" in h else None,
            "eps2": h["eps2"],
            "d": h["d"],
            "one_minus_beta2": torch.pow(step, h["beta2_decay"]),
            "rho": torch.minimum(step_lr, 1.0 / torch.sqrt(step)),
            "decay": weight_decay != 0,
            "lr_decay": step_lr * h["weight_decay"],
        }
        updates, new_rows, new_cols, new_vars = [], {}, {}, {}
        for path, g, p in zip(paths, g_leaves, _treeutil.flatten(params)[0], strict=True):
            u, row, col, var = _leaf_update(
                g, p, rows.get(path), cols.get(path), variances.get(path), s
            )
            updates.append(u)
            if var is None:
                new_rows[path], new_cols[path] = row, col
            else:
                new_vars[path] = var
        new_state = attrs.evolve(
            state,
            count=count,
            hyperparams=Params({**h, "lr": step_lr}),
            row_var=Params.from_state_dict(new_rows),
            col_var=Params.from_state_dict(new_cols),
            variance=Params.from_state_dict(new_vars),
        )
        return _treeutil.unflatten(spec, updates), new_state

    return GradientTransformation(init, update)
