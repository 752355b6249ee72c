"""`purenn.testing`: assertions and a pytest plugin for testing code built on purenn."""

from ._assertions import assert_tree_close as assert_tree_close
from ._assertions import assert_tree_equal as assert_tree_equal
