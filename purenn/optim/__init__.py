"""`pn.optim`: pure update rules (`GradientTransformation`s) with torch.optim's names and numbers.

Non-finite gradients pass through every rule as through its torch.optim twin (NaN or
inf in, non-finite out for the elements, or with a norm the leaves, they reach); wrap
a rule in `apply_if_finite` to skip such updates instead.
"""

from ._accumulate import AccumulateState as AccumulateState
from ._accumulate import accumulate as accumulate
from ._adadelta import AdadeltaState as AdadeltaState
from ._adadelta import adadelta as adadelta
from ._adafactor import AdafactorState as AdafactorState
from ._adafactor import adafactor as adafactor
from ._adagrad import AdagradState as AdagradState
from ._adagrad import adagrad as adagrad
from ._adam import AdamState as AdamState
from ._adam import adam as adam
from ._adam import adamw as adamw
from ._adamax import AdamaxState as AdamaxState
from ._adamax import adamax as adamax
from ._apply_if_finite import ApplyIfFiniteState as ApplyIfFiniteState
from ._apply_if_finite import apply_if_finite as apply_if_finite
from ._base import EmptyState as EmptyState
from ._base import GradientTransformation as GradientTransformation
from ._base import Schedule as Schedule
from ._chain import chain as chain
from ._clip import ClipByGlobalNormState as ClipByGlobalNormState
from ._clip import ClipState as ClipState
from ._clip import clip as clip
from ._clip import clip_by_global_norm as clip_by_global_norm
from ._convert import from_torch_state as from_torch_state
from ._convert import to_torch_state as to_torch_state
from ._ema import EmaState as EmaState
from ._ema import ema as ema
from ._inject import InjectHyperparamsState as InjectHyperparamsState
from ._inject import inject_hyperparams as inject_hyperparams
from ._lamb import LambState as LambState
from ._lamb import lamb as lamb
from ._lion import LionState as LionState
from ._lion import lion as lion
from ._lookahead import LookaheadState as LookaheadState
from ._lookahead import lookahead as lookahead
from ._masked import MaskedState as MaskedState
from ._masked import freeze as freeze
from ._masked import masked as masked
from ._multi_transform import MultiTransformState as MultiTransformState
from ._multi_transform import multi_transform as multi_transform
from ._nadam import NadamState as NadamState
from ._nadam import nadam as nadam
from ._radam import RadamState as RadamState
from ._radam import radam as radam
from ._rmsprop import RmspropState as RmspropState
from ._rmsprop import rmsprop as rmsprop
from ._sgd import SgdState as SgdState
from ._sgd import sgd as sgd
from ._weight_decay import AddDecayedWeightsState as AddDecayedWeightsState
from ._weight_decay import add_decayed_weights as add_decayed_weights
