"""Step scalars computed once per step: an opaque op that keeps the compiler from inlining them into loops.

Inductor fuses a 0-d computation (a bias correction `1 - beta**t`, a scheduled learning
rate) into every consumer loop, so a compiled AdamW would recompute two `pow`s per
vector of 8 floats and run many times slower than torch.optim's fused kernel. The
scalars are therefore stacked into one small buffer per dtype and device, which the
elementwise loop only reads. On the CPU, inductor lowers that stack to a buffer of its
own (it never fuses a `cat` into its consumers there), computed once at the top of the
same C++ kernel. Elsewhere it may fuse the stack into the loop, so the buffer goes
through `purenn::materialize`, an op it cannot see into. On the CPU that op would only
add a call through Python to every step: 77 us of a 1k-param AdamW step (315 against
392 us), nothing measurable at 16M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["materialize"]


@torch.library.custom_op("purenn::materialize", mutates_args=())
def _materialize(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_materialize.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
    return grad


_materialize.register_autograd(_backward)


def materialize(scalars: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The same 0-d tensors, computed once into one buffer per dtype and device when compiling.

    Outside torch.compile this is the identity (eager code computes each scalar once anyway).
    """
    if not torch.compiler.is_compiling() or not scalars:
        return list(scalars)
    out: list[torch.Tensor | None] = [None] * len(scalars)
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, s in enumerate(scalars):
        groups.setdefault((s.dtype, s.device), []).append(i)
    for indices in groups.values():
        stacked = torch.stack([scalars[i] for i in indices])
        if stacked.device.type != "cpu":
            stacked = _materialize(stacked)
        values = stacked.unbind(0)
        for i, value in zip(indices, values, strict=True):
            out[i] = value
    return out  # type: ignore[return-value]
