"""`pn.optim`: pure update rules (`GradientTransformation`s) with torch.optim's names and numbers."""

from ._adam import AdamState as AdamState
from ._adam import adam as adam
from ._adam import adamw as adamw
from ._base import EmptyState as EmptyState
from ._base import GradientTransformation as GradientTransformation
from ._base import Schedule as Schedule
from ._chain import chain as chain
from ._sgd import SgdState as SgdState
from ._sgd import sgd as sgd
