"""`pn.tree`: functions over purenn trees (Params, states, and any optree-compatible nesting)."""

from .._donation import pack as pack
from .._node import node as node
from ._basic import flatten as flatten
from ._basic import leaves as leaves
from ._basic import paths as paths
from ._basic import set_leaf as set
from ._basic import structure as structure
from ._basic import tree_map as map
from ._basic import unflatten as unflatten
from ._basic import zeros_like as zeros_like
from ._math import add as add
from ._math import allclose as allclose
from ._math import diff as diff
from ._math import global_norm as global_norm
from ._math import scale as scale
from ._math import sub as sub
from ._stack import stack as stack
from ._stack import unstack as unstack
from ._summary import Summary as Summary
from ._summary import summary as summary

__all__ = [
    "Summary",
    "add",
    "allclose",
    "diff",
    "flatten",
    "global_norm",
    "leaves",
    "map",
    "node",
    "pack",
    "paths",
    "scale",
    "set",
    "stack",
    "structure",
    "sub",
    "summary",
    "unflatten",
    "unstack",
    "zeros_like",
]
