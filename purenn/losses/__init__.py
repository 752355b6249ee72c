"""Pure loss functions with `torch.nn.functional` semantics and clear errors on bad input."""

from ._losses import binary_cross_entropy_with_logits as binary_cross_entropy_with_logits
from ._losses import cross_entropy as cross_entropy
from ._losses import huber as huber
from ._losses import l1 as l1
from ._losses import mse as mse
from ._losses import nll as nll

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber",
    "l1",
    "mse",
    "nll",
]
