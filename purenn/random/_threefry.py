"""The Threefry-2x32-20 block hash (Salmon et al. 2011) on int64 tensors holding uint32 words."""

from __future__ import annotations

from torch import Tensor

__all__ = ["MASK32", "threefry2x32"]

MASK32 = 0xFFFFFFFF
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def _rotl(x: Tensor, r: int) -> Tensor:
    return ((x << r) & MASK32) | (x >> (32 - r))


def threefry2x32(
    key: tuple[Tensor, Tensor], counter: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Hash a 2-word counter under a 2-word key with 20 Threefry rounds; words broadcast elementwise.

    Every input is an int64 tensor whose values are read modulo 2**32; both outputs are int64
    tensors of the broadcast shape holding values in [0, 2**32).

    >>> zero = torch.tensor(0)
    >>> [hex(w) for w in threefry2x32((zero, zero), (zero, zero))]
    ['0x6b200159', '0x99ba4efe']
    """
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    schedule = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = ((counter[0] & MASK32) + k0) & MASK32
    x1 = ((counter[1] & MASK32) + k1) & MASK32
    for block in range(5):
        for r in _ROTATIONS[4 * (block % 2) : 4 * (block % 2) + 4]:
            x0 = (x0 + x1) & MASK32
            x1 = _rotl(x1, r) ^ x0
        s = block + 1
        x0 = (x0 + schedule[s % 3]) & MASK32
        x1 = (x1 + schedule[(s + 1) % 3] + s) & MASK32
    return x0, x1
