"""`pn.nn`: model factories that hold no tensors; `init(key)` makes params, `apply` is pure."""

from ._activations import gelu as gelu
from ._activations import log_softmax as log_softmax
from ._activations import relu as relu
from ._activations import sigmoid as sigmoid
from ._activations import silu as silu
from ._activations import softmax as softmax
from ._activations import tanh as tanh
from ._dropout import Dropout as Dropout
from ._dropout import dropout as dropout
from ._from_torch import TorchModel as TorchModel
from ._from_torch import from_torch as from_torch
from ._linear import Linear as Linear
from ._linear import linear as linear
from ._model import Model as Model
from ._sequential import Sequential as Sequential
from ._sequential import Wrapped as Wrapped
from ._sequential import mlp as mlp
from ._sequential import sequential as sequential
from ._sequential import wrap as wrap
