"""Explicit, tensor-valued PRNG keys (Threefry-2x32) that never touch torch's global RNG."""

from ._keys import bernoulli as bernoulli
from ._keys import bits as bits
from ._keys import fold_in as fold_in
from ._keys import key as key
from ._keys import normal as normal
from ._keys import permutation as permutation
from ._keys import randint as randint
from ._keys import split as split
from ._keys import uniform as uniform

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
