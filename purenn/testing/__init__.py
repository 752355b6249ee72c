"""`purenn.testing`: property checks for update rules, tree assertions, hypothesis strategies, a pytest plugin.

The checks raise `AssertionError` naming the step, the path, and the expected and
actual values, so they drop into any test. `purenn.testing.strategies` (which needs
hypothesis, from the `test` extra) is imported on first use.
"""

from typing import Any

from ._assertions import assert_tree_close as assert_tree_close
from ._assertions import assert_tree_equal as assert_tree_equal
from ._chain_checks import check_chain_associativity as check_chain_associativity
from ._chain_checks import check_chain_identity as check_chain_identity
from ._combinator_checks import check_accumulate as check_accumulate
from ._combinator_checks import check_apply_if_finite as check_apply_if_finite
from ._combinator_checks import check_clip_by_global_norm as check_clip_by_global_norm
from ._invariants import check_first_step_bounded as check_first_step_bounded
from ._invariants import check_scale_invariance as check_scale_invariance
from ._invariants import check_sgd_exact as check_sgd_exact
from ._invariants import check_zero_lr_identity as check_zero_lr_identity
from ._jit_checks import check_donation_equivalence as check_donation_equivalence
from ._purity import check_deterministic as check_deterministic
from ._purity import check_pure as check_pure
from ._purity import check_structure as check_structure
from ._purity import check_update_rule as check_update_rule
from ._reference import check_matches_torch as check_matches_torch
from ._schedule_checks import check_schedule as check_schedule

__all__ = [
    "assert_tree_close",
    "assert_tree_equal",
    "check_accumulate",
    "check_apply_if_finite",
    "check_chain_associativity",
    "check_chain_identity",
    "check_clip_by_global_norm",
    "check_deterministic",
    "check_donation_equivalence",
    "check_first_step_bounded",
    "check_matches_torch",
    "check_pure",
    "check_scale_invariance",
    "check_schedule",
    "check_sgd_exact",
    "check_structure",
    "check_update_rule",
    "check_zero_lr_identity",
    "strategies",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: the pytest plugin loads this package in every test session, and
    # hypothesis is only a test-extra dependency.
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module 'purenn.testing' has no attribute {name!r}")
