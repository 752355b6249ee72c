"""Pure loss functions: `torch.nn.functional` numbers, with clear errors instead of broadcasting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from purenn._errors import ShapeError

from ._checks import (
    Reduction,
    check_broadcasts_to,
    check_class_input,
    check_positive,
    check_reduction,
    check_same_shape,
    check_tensor,
    check_unit_interval,
    fmt_shape,
    is_integer,
    layout,
)


def _class_target(
    fn: str, input: Tensor, target: Tensor, index_shape: tuple[int, ...], allow_probs: bool
) -> Tensor:
    """Return `target` as int64 class indices, or unchanged as class probabilities."""
    check_tensor(fn, "target", target)
    if target.shape == index_shape:
        if not is_integer(target):
            raise ShapeError(
                f"{fn}: target has shape {fmt_shape(target.shape)} of class indices but dtype "
                f"{target.dtype}; class indices must have an integer dtype (e.g. target.long())"
            )
        return target if target.dtype == torch.int64 else target.long()
    if allow_probs and target.shape == input.shape:
        if not target.is_floating_point():
            raise ShapeError(
                f"{fn}: target has shape {fmt_shape(target.shape)} of class probabilities but "
                f"dtype {target.dtype}; class probabilities must have a floating-point dtype "
                f"(e.g. target.float())"
            )
        return target
    expected = f"expected target shape {fmt_shape(index_shape)} of class indices"
    if allow_probs:
        expected += f", or {fmt_shape(input.shape)} of class probabilities"
    raise ShapeError(
        f"{fn}: target has shape {fmt_shape(target.shape)} but input has shape "
        f"{fmt_shape(input.shape)} ({layout(input.ndim)}); {expected}"
    )


def cross_entropy(
    input: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross entropy of logits against class indices or class probabilities, as `F.cross_entropy`.

    Math: ``loss_n = -sum_c w_c * q_nc * log_softmax(input_n)_c``, ``q_n = (1 - s) * p_n + s / C``.

    ``p_n`` is ``onehot(target_n)`` or the given probabilities and ``s`` is ``label_smoothing``.
    With class indices, ``"mean"`` divides by the summed ``w_{target_n}`` of non-ignored targets.

    Shapes: ``input`` is ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``; ``target`` is class indices
    of ``input``'s shape without the class dim (``(N,)``, ``()``, ``(N, d1, ...)``, any integer
    dtype) or class probabilities of ``input``'s shape (floating point); ``weight`` is ``(C,)``.
    The result is a scalar, or the target's index shape with ``reduction="none"``. As in torch,
    an input ``(C, d1, ...)`` reads as ``(N, C, ...)``: under ``vmap``, keep a batch of one.

    Example:
        >>> cross_entropy(torch.zeros(2, 4), torch.tensor([1, 3]))
        tensor(1.3863)
    """
    fn = "cross_entropy"
    check_reduction(fn, reduction)
    check_unit_interval(fn, "label_smoothing", label_smoothing)
    index_shape = check_class_input(fn, input, weight)
    target = _class_target(fn, input, target, index_shape, allow_probs=True)
    return F.cross_entropy(
        input,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def nll(
    input: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities at class indices, as `F.nll_loss`.

    Math: ``loss_n = -w_{y_n} * input[n, y_n]``, ``0`` where ``y_n == ignore_index``.

    ``"mean"`` divides by the summed ``w_{y_n}`` of non-ignored targets.

    Shapes: ``input`` is ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` of log-probabilities;
    ``target`` is class indices of ``input``'s shape without the class dim (any integer dtype);
    ``weight`` is ``(C,)``. The result is a scalar, or ``target``'s shape with ``"none"``. As in
    torch, an input ``(C, d1, ...)`` reads as ``(N, C, ...)``: under ``vmap``, keep a batch of one.

    Example:
        >>> nll(torch.tensor([[-0.5, -1.0], [-2.0, -0.1]]), torch.tensor([0, 0]))
        tensor(1.2500)
    """
    fn = "nll"
    check_reduction(fn, reduction)
    index_shape = check_class_input(fn, input, weight)
    target = _class_target(fn, input, target, index_shape, allow_probs=False)
    return F.nll_loss(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction)


def mse(input: Tensor, target: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    """Mean squared error, as `F.mse_loss`.

    Math: ``loss_i = (input_i - target_i) ** 2``.

    Shapes: ``input`` and ``target`` have the same shape (never broadcast) and a floating-point
    dtype; the result is a scalar, or that shape with ``reduction="none"``.

    Example:
        >>> mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(2.)
    """
    check_reduction("mse", reduction)
    check_same_shape("mse", input, target)
    return F.mse_loss(input, target, reduction=reduction)


def l1(input: Tensor, target: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    """Mean absolute error, as `F.l1_loss`.

    Math: ``loss_i = |input_i - target_i|``.

    Shapes: ``input`` and ``target`` have the same shape (never broadcast) and a floating-point
    dtype; the result is a scalar, or that shape with ``reduction="none"``.

    Example:
        >>> l1(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(1.)
    """
    check_reduction("l1", reduction)
    check_same_shape("l1", input, target)
    return F.l1_loss(input, target, reduction=reduction)


def huber(
    input: Tensor, target: Tensor, *, reduction: Reduction = "mean", delta: float = 1.0
) -> Tensor:
    """Huber loss: quadratic near zero, linear beyond ``delta``, as `F.huber_loss`.

    Math: ``loss_i = 0.5 * e_i**2 if |e_i| < delta else delta * (|e_i| - 0.5 * delta)``.

    Here ``e = input - target``, and ``delta`` must be positive.

    Shapes: ``input`` and ``target`` have the same shape (never broadcast) and a floating-point
    dtype; the result is a scalar, or that shape with ``reduction="none"``.

    Example:
        >>> huber(torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0]))
        tensor(1.3125)
    """
    check_reduction("huber", reduction)
    check_positive("huber", "delta", delta)
    check_same_shape("huber", input, target)
    return F.huber_loss(input, target, reduction=reduction, delta=delta)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Binary cross entropy of logits against targets in [0, 1], as `F.binary_cross_entropy_with_logits`.

    Math: ``loss_i = -w_i * (p_i * y_i * log(sigmoid(x_i)) + (1 - y_i) * log(1 - sigmoid(x_i)))``.

    ``w`` and ``p`` are ``weight`` and ``pos_weight`` broadcast to ``input``'s shape.

    Shapes: ``input`` and ``target`` have the same shape (never broadcast) and a floating-point
    dtype; ``weight`` and ``pos_weight`` (typically ``(C,)`` for ``input`` ``(N, C)``) must
    broadcast to ``input``'s shape. The result is a scalar, or that shape with ``"none"``.

    Example:
        >>> binary_cross_entropy_with_logits(torch.zeros(3), torch.tensor([0.0, 1.0, 1.0]))
        tensor(0.6931)
    """
    fn = "binary_cross_entropy_with_logits"
    check_reduction(fn, reduction)
    check_same_shape(fn, input, target)
    check_broadcasts_to(fn, "weight", weight, input)
    check_broadcasts_to(fn, "pos_weight", pos_weight, input)
    return F.binary_cross_entropy_with_logits(
        input, target, weight=weight, pos_weight=pos_weight, reduction=reduction
    )
