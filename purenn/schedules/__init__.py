"""`pn.schedules`: step-count schedules with Optax's names and meanings, as compile-friendly tensor functions."""

from ._base import Schedule as Schedule
from ._cosine import cosine_decay as cosine_decay
from ._cosine import warmup_cosine_decay as warmup_cosine_decay
from ._exponential import exponential_decay as exponential_decay
from ._piecewise import join as join
from ._piecewise import piecewise_constant as piecewise_constant
from ._simple import constant as constant
from ._simple import linear as linear

__all__ = [
    "Schedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "join",
    "linear",
    "piecewise_constant",
    "warmup_cosine_decay",
]
