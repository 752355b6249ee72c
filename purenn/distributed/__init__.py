"""`pn.distributed`: data parallelism over `torch.distributed` (gloo on CPU, NCCL on GPU) for purenn trees."""

from ._collectives import all_reduce_mean as all_reduce_mean
from ._collectives import broadcast as broadcast

__all__ = ["all_reduce_mean", "broadcast"]
