"""Explicit PRNG keys and the samplers that consume them, all built on the Threefry-2x32 hash."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from purenn._errors import ShapeError

from ._threefry import MASK32, threefry2x32

__all__ = [
    "bernoulli",
    "bits",
    "fold_in",
    "key",
    "normal",
    "permutation",
    "randint",
    "split",
    "uniform",
]

ShapeLike = int | Sequence[int]

# The counter's high word names what a block is for, so bits, split children and folded keys
# drawn from one key use disjoint counters and can never coincide.
_BITS, _SPLIT, _FOLD_IN = 0, 1, 2

_PRECISION = MappingProxyType(
    {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}
)


def _check_key(key: object, argname: str = "key") -> None:
    """Raise unless `key` is a single PRNG key: an int64 tensor of shape (2,) (per member under vmap)."""
    expected = (
        f"{argname} must be a PRNG key from pn.random.key(seed): an int64 tensor of shape (2,)"
    )
    if not isinstance(key, Tensor):
        raise TypeError(f"{expected}, got {type(key).__name__}")
    if key.dtype != torch.int64 or key.shape != (2,):
        got = f"{expected}, got a {key.dtype} tensor of shape {tuple(key.shape)}"
        if key.dtype == torch.int64 and key.ndim > 1 and key.shape[-1] == 2:
            got += "; index a stack of keys (keys[i]) or map over it with torch.func.vmap"
        raise ShapeError(got)


def _fmt(bound: int) -> str:
    magnitude = abs(bound)
    if magnitude >= 2**16 and magnitude & (magnitude - 1) == 0:
        return f"{'-' if bound < 0 else ''}2**{magnitude.bit_length() - 1}"
    return str(bound)


def _as_int(value: object, argname: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value >= high):
        upper = "" if high is None else f" and < {_fmt(high)}"
        raise ValueError(f"{argname} must be an int >= {_fmt(low)}{upper}, got {value}")
    return int(value)


def _as_float(value: object, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argname} must be a float, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{argname} must be finite, got {value}")
    return float(value)


def _as_shape(shape: object) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"shape must be an int or a sequence of ints, got {type(shape).__name__}")
    return tuple(_as_int(size, "shape", 0) for size in shape)


def _precision(dtype: object) -> int:
    if not isinstance(dtype, torch.dtype) or dtype not in _PRECISION:
        names = ", ".join(str(d) for d in _PRECISION)
        raise TypeError(f"dtype must be a floating dtype, one of {names}; got {dtype}")
    return _PRECISION[dtype]


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    if len(shape) > len(target):
        return False
    tail = target[len(target) - len(shape) :]
    return all(size in (1, want) for size, want in zip(shape, tail, strict=True))


def _blocks(key: Tensor, purpose: int, counter: Tensor) -> Tensor:
    """Hash counters (purpose, counter[i]) under `key`; returns shape (*counter.shape, 2)."""
    high = torch.full_like(counter, purpose)
    return torch.stack(threefry2x32((key[0], key[1]), (high, counter)), dim=-1)


def _bits(key: Tensor, shape: tuple[int, ...]) -> Tensor:
    numel = math.prod(shape)
    if numel > 2**33:
        raise ValueError(f"shape asks for {numel} random words, more than one key gives (2**33)")
    counter = torch.arange((numel + 1) // 2, dtype=torch.int64, device=key.device)
    return _blocks(key, _BITS, counter).reshape(-1)[:numel].reshape(shape)


def _random_ints(key: Tensor, shape: tuple[int, ...], nbits: int) -> Tensor:
    """`nbits` (1 to 63) uniformly random bits per element, as non-negative int64."""
    if nbits <= 32:
        return _bits(key, shape) >> (32 - nbits)
    words = _bits(key, (*shape, 2))
    low_bits = nbits // 2
    high_bits = nbits - low_bits
    return ((words[..., 0] >> (32 - high_bits)) << low_bits) | (words[..., 1] >> (32 - low_bits))


def key(seed: int, *, device: torch.device | str | None = None) -> Tensor:
    """Make a PRNG key from an integer seed in [0, 2**64).

    The key is an int64 tensor of shape (2,) holding the seed's high and low 32-bit words, on
    `device` (the default device if None); everything drawn from it is produced there.

    >>> pn.random.key(42)
    tensor([ 0, 42])
    """
    seed = _as_int(seed, "seed", 0, 2**64)
    return torch.tensor([seed >> 32, seed & MASK32], dtype=torch.int64, device=device)


def split(key: Tensor, n: int = 2) -> Tensor:
    """Derive `n` new independent keys from `key`, as a stack of shape (n, 2).

    Child i is the Threefry block of counter (1, i); the parent should not be used again.

    >>> k1, k2 = pn.random.split(pn.random.key(0))
    >>> pn.random.split(pn.random.key(0), 8).shape
    torch.Size([8, 2])
    """
    _check_key(key)
    n = _as_int(n, "n", 1, 2**32)
    return _blocks(key, _SPLIT, torch.arange(n, dtype=torch.int64, device=key.device))


def fold_in(key: Tensor, data: int) -> Tensor:
    """Derive a new key of shape (2,) from `key` and an integer `data` in [0, 2**32).

    The result is the Threefry block of counter (2, data), so it differs from every `split`
    child (counters (1, i)) and every `bits` block (counters (0, i)) of the same key, and two
    different `data` never give the same key.

    >>> step_key = pn.random.fold_in(pn.random.key(0), 1000)
    """
    _check_key(key)
    data = _as_int(data, "data", 0, 2**32)
    return _blocks(key, _FOLD_IN, torch.tensor(data, dtype=torch.int64, device=key.device))


def bits(key: Tensor, shape: ShapeLike) -> Tensor:
    """Draw uniformly random 32-bit words of shape `shape`, as int64 values in [0, 2**32).

    Words are the two outputs of the blocks with counters (0, 0), (0, 1), ... in order.

    >>> pn.random.bits(pn.random.key(0), (2, 3)).shape
    torch.Size([2, 3])
    """
    _check_key(key)
    return _bits(key, _as_shape(shape))


def uniform(
    key: Tensor,
    shape: ShapeLike = (),
    *,
    dtype: torch.dtype = torch.float32,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    """Draw floats of shape `shape` uniformly from [low, high) (bounds rounded to `dtype`).

    A dtype with p bits of precision gets the multiples of 2**-p in [0, 1), each equally likely
    and exact in that dtype (p = 11, 8, 24, 53 for float16, bfloat16, float32, float64), which
    are then scaled to [low, high) and kept strictly below `high`.

    >>> pn.random.uniform(pn.random.key(0), (3,), low=-1.0, high=1.0).shape
    torch.Size([3])
    """
    _check_key(key)
    shape = _as_shape(shape)
    p = _precision(dtype)
    low, high = _as_float(low, "low"), _as_float(high, "high")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low} and high={high}")
    unit = _random_ints(key, shape, p).to(dtype) * 2.0**-p
    low_t = torch.tensor(low, dtype=dtype, device=key.device)
    high_t = torch.tensor(high, dtype=dtype, device=key.device)
    return torch.clamp(unit * (high - low) + low, low_t, torch.nextafter(high_t, low_t))


def normal(
    key: Tensor,
    shape: ShapeLike = (),
    *,
    dtype: torch.dtype = torch.float32,
    mean: float = 0.0,
    std: float = 1.0,
) -> Tensor:
    """Draw normal floats of shape `shape` with the given mean and standard deviation.

    Uses the inverse normal CDF of a uniform on the open interval (0, 1), computed in float32
    (float64 for float64) and then cast, so values lie within about 5.3 (8.2) std of the mean.

    >>> pn.random.normal(pn.random.key(0), (4, 4), dtype=torch.bfloat16).dtype
    torch.bfloat16
    """
    _check_key(key)
    shape = _as_shape(shape)
    _precision(dtype)
    mean, std = _as_float(mean, "mean"), _as_float(std, "std")
    compute, p = (torch.float64, 52) if dtype == torch.float64 else (torch.float32, 23)
    unit = (2 * _random_ints(key, shape, p) + 1).to(compute) * 2.0 ** -(p + 1)
    return (torch.special.ndtri(unit) * std + mean).to(dtype)


def bernoulli(key: Tensor, p: float | Tensor, shape: ShapeLike | None = None) -> Tensor:
    """Draw booleans that are True with probability `p`, of shape `shape`.

    `p` is a float in [0, 1] or a floating tensor broadcastable to `shape`; `shape` defaults
    to p's shape (a scalar for a float `p`).

    >>> keep = pn.random.bernoulli(pn.random.key(0), 0.9, (128, 64))
    """
    _check_key(key)
    if isinstance(p, Tensor):
        if not p.is_floating_point():
            raise TypeError(f"p must be a float or a floating tensor, got a {p.dtype} tensor")
        shape = tuple(p.shape) if shape is None else _as_shape(shape)
        if not _broadcasts_to(tuple(p.shape), shape):
            raise ShapeError(f"p of shape {tuple(p.shape)} does not broadcast to shape {shape}")
    else:
        p = _as_float(p, "p")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        shape = () if shape is None else _as_shape(shape)
    return _random_ints(key, shape, 24).to(torch.float32) * 2.0**-24 < p


def permutation(key: Tensor, n: int) -> Tensor:
    """Draw a uniformly random permutation of 0..n-1, as an int64 tensor of shape (n,).

    Sorts 63 random bits per element, breaking (vanishingly rare) ties by index.

    >>> order = pn.random.permutation(pn.random.key(0), 10)
    """
    _check_key(key)
    n = _as_int(n, "n", 0, 2**32)
    return torch.argsort(_random_ints(key, (n,), 63), stable=True)


def randint(key: Tensor, shape: ShapeLike, low: int, high: int) -> Tensor:
    """Draw int64 integers of shape `shape` uniformly from [low, high), with high - low <= 2**32.

    Reduces 63 random bits modulo high - low, so the bias is below 2**-31.

    >>> pn.random.randint(pn.random.key(0), (5,), 0, 10).shape
    torch.Size([5])
    """
    _check_key(key)
    shape = _as_shape(shape)
    low = _as_int(low, "low", -(2**63), 2**63)
    high = _as_int(high, "high", -(2**63), 2**63)
    if not 0 < high - low <= 2**32:
        raise ValueError(f"need low < high <= low + 2**32, got low={low} and high={high}")
    return _random_ints(key, shape, 63) % (high - low) + low
