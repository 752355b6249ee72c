"""`pn.nn.batch_norm`: batch normalisation with its running statistics as explicit state."""

from __future__ import annotations

import math
import numbers
from typing import Any

import attrs
import torch

from .._errors import ShapeError
from .._params import Params
from ._checks import check_dtype, input_error, non_negative_float, positive_int, take_state
from ._model import Model, layer_name, take_params

__all__ = ["BatchNorm", "batch_norm"]

_KIND = "batch_norm layer"


@attrs.frozen
class BatchNorm(Model):
    """Normalise each channel of `(N, C, *)` over the batch and spatial dims.

    Params (with `affine`): `weight` (ones) and `bias` (zeros), shape `(C,)`. State (with
    `track_running_stats`): `running_mean` (zeros), `running_var` (ones), both `(C,)`, and
    `num_batches_tracked` (a 0-d int64), as torch.nn.BatchNorm1d/2d/3d's buffers.
    `init_state()` has no key to take a device from: it builds the state on torch's
    default device (move it with `pn.tree.map(lambda t: t.to(device), state)`).
    """

    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool
    dtype: torch.dtype

    @property
    def has_state(self) -> bool:
        return self.track_running_stats

    def init(self, key: torch.Tensor) -> Params:
        if not self.affine:
            return Params()
        shape = (self.num_features,)
        return Params(
            {
                "weight": torch.ones(shape, dtype=self.dtype, device=key.device),
                "bias": torch.zeros(shape, dtype=self.dtype, device=key.device),
            }
        )

    def init_state(self) -> Params:
        if not self.track_running_stats:
            return Params()
        shape = (self.num_features,)
        return Params(
            {
                "running_mean": torch.zeros(shape, dtype=self.dtype),
                "running_var": torch.ones(shape, dtype=self.dtype),
                "num_batches_tracked": torch.tensor(0, dtype=torch.long),
            }
        )

    def _check_input(self, x: Any, train: bool, path: str) -> int:
        """Check `x` and return the number of values each channel's statistics average over."""
        c = self.num_features
        if not isinstance(x, torch.Tensor) or not 2 <= x.dim() <= 5 or x.shape[1] != c:
            expected = (
                f"input (N, {c}), (N, {c}, L), (N, {c}, H, W) or (N, {c}, D, H, W) "
                f"(num_features={c})"
            )
            raise input_error(_KIND, path, expected, x)
        check_dtype(x, self.dtype, _KIND, path)
        count = math.prod(size for dim, size in enumerate(x.shape) if dim != 1)
        # Batch statistics of one value per channel have zero variance: every output would be 0.
        if (train or not self.track_running_stats) and count <= 1:
            when = "training" if train else "using batch statistics (track_running_stats=False)"
            raise ShapeError(
                f"the {layer_name(_KIND, path)}: Expected more than 1 value per channel when "
                f"{when}, got input size {tuple(x.shape)}"
            )
        return count

    def _forward(
        self, params: Params, x: Any, *, state: Params, key: Any, train: bool, path: str
    ) -> tuple[Any, Params]:
        c = (self.num_features,)
        weight, bias = take_params(
            params,
            _KIND,
            path,
            {"weight": c if self.affine else None, "bias": c if self.affine else None},
        )
        count = self._check_input(x, train, path)
        if self.track_running_stats:
            running_mean, running_var, tracked = take_state(
                state,
                _KIND,
                path,
                {"running_mean": c, "running_var": c, "num_batches_tracked": ()},
            )
        dims = [0, *range(2, x.dim())]
        if train or not self.track_running_stats:
            # Explicit statistics rather than F.batch_norm(training=True), which writes running
            # statistics in place and so cannot run under torch.func.vmap with per-member state.
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, correction=0)
        else:
            mean, var = running_mean, running_var
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        view = (-1,) + (1,) * (x.dim() - 2)
        y = x * scale.reshape(view) + shift.reshape(view)
        if not (train and self.track_running_stats):
            return y, state
        tracked = tracked + 1
        # momentum=None is torch's cumulative average: factor 1 / num_batches_tracked.
        factor = self.momentum if self.momentum is not None else 1.0 / tracked.to(self.dtype)
        batch_mean = mean.detach()
        unbiased_var = var.detach() * (count / (count - 1))
        new_state = Params(
            {
                "running_mean": (1 - factor) * running_mean + factor * batch_mean,
                "running_var": (1 - factor) * running_var + factor * unbiased_var,
                "num_batches_tracked": tracked,
            }
        )
        return y, new_state


def batch_norm(
    num_features: int,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
) -> BatchNorm:
    """Batch normalisation of `(N, C)`, `(N, C, L)`, `(N, C, H, W)` or `(N, C, D, H, W)`.

    One layer for torch.nn.BatchNorm1d/2d/3d, with their arguments. In training
    (`train=True`) it normalises with the batch's statistics and returns new running
    statistics `new = (1 - momentum) * old + momentum * batch` (the variance unbiased;
    `momentum=None`: the cumulative average); in evaluation it uses the running statistics.
    With `track_running_stats=False` it has no state and always uses batch statistics.

    Example:
        >>> bn = pn.nn.batch_norm(8)
        >>> params, state = bn.init(pn.random.key(0)), bn.init_state()
        >>> y, state = bn.apply(params, torch.randn(16, 8), state=state, train=True)
        >>> int(state["num_batches_tracked"])
        1
    """
    if momentum is not None and (
        isinstance(momentum, bool)
        or not isinstance(momentum, numbers.Real)
        or not 0.0 <= momentum <= 1.0
    ):
        raise ValueError(
            f"batch_norm: momentum must be a float in [0, 1] or None, got {momentum!r}"
        )
    return BatchNorm(
        positive_int("batch_norm", "num_features", num_features),
        non_negative_float("batch_norm", "eps", eps),
        None if momentum is None else float(momentum),
        bool(affine),
        bool(track_running_stats),
        dtype,
    )
