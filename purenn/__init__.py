"""purenn: pure functional training for PyTorch."""

from . import distributed as distributed
from . import losses as losses
from . import nn as nn
from . import optim as optim
from . import random as random
from . import schedules as schedules
from . import tree as tree
from ._checkpoint import load as load
from ._checkpoint import save as save
from ._config import config as config
from ._errors import CheckpointError as CheckpointError
from ._errors import CheckpointMismatchError as CheckpointMismatchError
from ._errors import DonatedError as DonatedError
from ._errors import MutatedError as MutatedError
from ._errors import NonFiniteError as NonFiniteError
from ._errors import PurennError as PurennError
from ._errors import ShapeError as ShapeError
from ._errors import StateError as StateError
from ._errors import TreeMismatchError as TreeMismatchError
from ._finite import check_finite as check_finite
from ._grad import grad as grad
from ._grad import loss as loss
from ._grad import value_and_grad as value_and_grad
from ._guard import check_unmodified as check_unmodified
from ._jit import Jitted as Jitted
from ._jit import jit as jit
from ._params import Params as Params
from ._step import apply_updates as apply_updates
from ._step import step as step
from .nn import from_torch as from_torch

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # purenn.testing needs hypothesis (the test extra), so it is imported on first use:
    # `pn.testing.check_pure(...)` works after a plain `import purenn as pn`.
    if name == "testing":
        import importlib

        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module 'purenn' has no attribute {name!r}")
