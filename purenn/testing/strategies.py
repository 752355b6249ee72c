"""`purenn.testing.strategies`: hypothesis strategies for params, gradients, hyperparameters, schedules.

Needs hypothesis (`pip install purenn[test]`).

Example:
    >>> from hypothesis import given
    >>> from purenn.testing import strategies
    >>> @given(problem=strategies.problems(), kwargs=strategies.hyperparams(pn.optim.adam))
    ... def test_adam_is_pure(problem, kwargs):
    ...     pn.testing.check_pure(pn.optim.adam(**kwargs), problem.params, problem.grad_fn)
"""

from ._hyperparams import hyperparams as hyperparams
from ._hyperparams import params_for as params_for
from ._hyperparams import supported_rules as supported_rules
from ._schedule_strategies import SCHEDULE_KINDS as SCHEDULE_KINDS
from ._schedule_strategies import ScheduleCase as ScheduleCase
from ._schedule_strategies import schedule_cases as schedule_cases
from ._schedule_strategies import schedules as schedules
from ._tree_strategies import FLOAT_DTYPES as FLOAT_DTYPES
from ._tree_strategies import GRAD_MAGNITUDES as GRAD_MAGNITUDES
from ._tree_strategies import PARAM_MAGNITUDES as PARAM_MAGNITUDES
from ._tree_strategies import Magnitude as Magnitude
from ._tree_strategies import Problem as Problem
from ._tree_strategies import grads_like as grads_like
from ._tree_strategies import params as params
from ._tree_strategies import problems as problems

__all__ = [
    "FLOAT_DTYPES",
    "GRAD_MAGNITUDES",
    "PARAM_MAGNITUDES",
    "SCHEDULE_KINDS",
    "Magnitude",
    "Problem",
    "ScheduleCase",
    "grads_like",
    "hyperparams",
    "params",
    "params_for",
    "problems",
    "schedule_cases",
    "schedules",
    "supported_rules",
]
