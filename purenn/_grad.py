"""Pure gradients: `pn.loss`, `pn.grad`, `pn.value_and_grad` over purenn trees (torch.func underneath)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.func

from ._errors import ShapeError

__all__ = ["grad", "loss", "value_and_grad"]


def loss(
    apply_fn: Callable[..., Any], criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> Callable[..., Any]:
    """Compose a model's `apply` with a loss: `loss_fn(params, x, y, **apply_kwargs) -> scalar`.

    Keyword arguments go to `apply_fn` (`key=`, `train=`, `state=`). When `state=`
    is given, `apply_fn` returns `(output, new_state)` and `loss_fn` returns
    `(loss, new_state)`: differentiate it with `has_aux=True`.

    Example:
        >>> loss_fn = pn.loss(model.apply, pn.losses.cross_entropy)
        >>> value = loss_fn(params, x, y)                   # 0-d tensor
        >>> grads = pn.grad(loss_fn)(params, x, y)          # tree like params
    """
    if not callable(apply_fn) or not callable(criterion):
        raise TypeError("pn.loss(apply_fn, criterion): both arguments must be callables")

    @functools.wraps(criterion)
    def loss_fn(params: Any, x: Any, y: Any, **apply_kwargs: Any) -> Any:
        out = apply_fn(params, x, **apply_kwargs)
        if apply_kwargs.get("state") is not None:
            prediction, new_state = out
            return criterion(prediction, y), new_state
        return criterion(out, y)

    return loss_fn


def _checked_scalar(fn: Callable[..., Any], has_aux: bool, name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    f"{name}(..., has_aux=True): the function must return (scalar, aux), got {type(out).__name__}"
                )
            value = out[0]
        else:
            if isinstance(out, tuple):
                raise TypeError(
                    f"{name}: the function returned a tuple of {len(out)}; if it returns (loss, aux), "
                    "pass has_aux=True"
                )
            value = out
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            got = (
                f"shape {tuple(value.shape)}"
                if isinstance(value, torch.Tensor)
                else type(value).__name__
            )
            raise ShapeError(
                f"{name}: the function must return a scalar (0-d) tensor, got {got}; reduce it (e.g. .mean())"
            )
        if not value.is_floating_point():
            raise TypeError(
                f"{name}: the function returned a {value.dtype} scalar; gradients need a float"
            )
        return out

    return wrapped


def grad(
    fn: Callable[..., Any], argnums: int | tuple[int, ...] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """The gradient of a scalar function with respect to argument(s) `argnums`.

    Returns a function with `fn`'s signature that returns gradients as trees of the
    same structure as the differentiated arguments (a tuple of them when
    `argnums` is a tuple), and `(grads, aux)` with `has_aux=True`. Built on
    `torch.func.grad`, so it composes with itself (second order, MAML inner
    loops) and with `torch.func.vmap` (per-example or per-member gradients).

    Example:
        >>> grads = pn.grad(loss_fn)(params, x, y)
        >>> g_params, g_x = pn.grad(loss_fn, argnums=(0, 1))(params, x, y)
    """
    return torch.func.grad(
        _checked_scalar(fn, has_aux, "pn.grad"), argnums=argnums, has_aux=has_aux
    )


def value_and_grad(
    fn: Callable[..., Any], argnums: int | tuple[int, ...] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Like `grad` but returns `(value, grads)`, or `((value, aux), grads)` with `has_aux=True`.

    Example:
        >>> value, grads = pn.value_and_grad(loss_fn)(params, x, y)
    """
    inner = torch.func.grad_and_value(
        _checked_scalar(fn, has_aux, "pn.value_and_grad"), argnums=argnums, has_aux=has_aux
    )

    @functools.wraps(fn)
    def value_and_grad_fn(*args: Any, **kwargs: Any) -> Any:
        grads, value = inner(*args, **kwargs)
        return value, grads

    return value_and_grad_fn
