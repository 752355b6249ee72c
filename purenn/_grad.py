"""Pure gradients: `pn.loss`, `pn.grad`, `pn.value_and_grad` over purenn trees (torch.func underneath)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.func

from . import _treeutil
from ._errors import ShapeError
from ._guard import debug_check
from ._packed import Packed, buffers, common_layout
from ._params import Params

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
    f: Callable[..., Any], argnums: int | tuple[int, ...] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """The gradient of a scalar function with respect to argument(s) `argnums`.

    Returns a function with `f`'s signature that returns gradients as trees of the
    same structure as the differentiated arguments (a tuple of them when
    `argnums` is a tuple), and `(grads, aux)` with `has_aux=True`. Built on
    `torch.func.grad`, so it composes with itself (second order, MAML inner
    loops) and with `torch.func.vmap` (per-example or per-member gradients).

    Example:
        >>> grads = pn.grad(loss_fn)(params, x, y)
        >>> g_params, g_x = pn.grad(loss_fn, argnums=(0, 1))(params, x, y)
    """
    return _through_buffers(
        torch.func.grad, _checked_scalar(f, has_aux, "pn.grad"), argnums, has_aux, "pn.grad"
    )


def value_and_grad(
    f: Callable[..., Any], argnums: int | tuple[int, ...] = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Like `grad` but returns `(value, grads)`, or `((value, aux), grads)` with `has_aux=True`.

    Example:
        >>> value, grads = pn.value_and_grad(loss_fn)(params, x, y)
    """
    inner = _through_buffers(
        torch.func.grad_and_value,
        _checked_scalar(f, has_aux, "pn.value_and_grad"),
        argnums,
        has_aux,
        "pn.value_and_grad",
    )

    @functools.wraps(f)
    def value_and_grad_fn(*args: Any, **kwargs: Any) -> Any:
        grads, value = inner(*args, **kwargs)
        return value, grads

    return value_and_grad_fn


def _through_buffers(
    transform: Callable[..., Any],
    fn: Callable[..., Any],
    argnums: int | tuple[int, ...],
    has_aux: bool,
    name: str,
) -> Callable[..., Any]:
    """`transform(fn, argnums)` that differentiates packed Params arguments through their flat buffers.

    The gradient of a packed argument then comes out packed with the same layout, so
    an update rule runs on a few flat buffers instead of on every leaf.
    """
    plain = transform(fn, argnums=argnums, has_aux=has_aux)
    positions = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    bare = transform is torch.func.grad and not has_aux  # returns grads alone, not a tuple

    @functools.wraps(fn)
    def differentiated(*args: Any, **kwargs: Any) -> Any:
        debug_check(**{f"argument {i}": args[i] for i in positions if i < len(args)})
        try:
            return _differentiated(*args, **kwargs)
        except RuntimeError as error:
            if "floating point dtype can require gradients" in str(error):
                _raise_for_non_float_leaves(name, args, positions, error)
            raise

    def _differentiated(*args: Any, **kwargs: Any) -> Any:
        layouts = {i: common_layout([args[i]]) for i in positions if i < len(args)}
        if all(layout is None for layout in layouts.values()):
            return plain(*args, **kwargs)

        def on_buffers(*flat_args: Any, **kw: Any) -> Any:
            rebuilt = list(flat_args)
            for i, layout in layouts.items():
                if layout is not None:
                    rebuilt[i] = Params._from_packed(Packed(layout, tuple(flat_args[i])))
            return fn(*rebuilt, **kw)

        flat = list(args)
        for i, layout in layouts.items():
            if layout is not None:
                flat[i] = buffers(args[i])
        out = transform(on_buffers, argnums=argnums, has_aux=has_aux)(*flat, **kwargs)
        grads = out if bare else out[0]

        def repack(i: int, g: Any) -> Any:
            layout = layouts.get(i)
            return Params._from_packed(Packed(layout, tuple(g))) if layout is not None else g

        if isinstance(argnums, int):
            grads = repack(argnums, grads)
        else:
            grads = tuple(repack(i, g) for i, g in zip(positions, grads, strict=True))
        return grads if bare else (grads, *out[1:])

    return differentiated


def _raise_for_non_float_leaves(
    name: str, args: tuple[Any, ...], positions: tuple[int, ...], error: RuntimeError
) -> None:
    """Re-raise torch's bare "only floating point" error naming the leaves at fault."""
    for i in positions:
        if i >= len(args):
            continue
        bad = [
            f"{path or '<root>'} ({leaf.dtype})"
            for path, leaf in _treeutil.exact_tensor_leaves(args[i])
        ]
        if bad:
            raise TypeError(
                f"{name}: argument {i} has leaves that cannot be differentiated, "
                f"{', '.join(bad)}; gradients need float leaves: pass integer data "
                "(counts, indices) as a separate argument outside argnums"
            ) from error
