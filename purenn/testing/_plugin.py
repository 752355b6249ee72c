"""The purenn pytest plugin: mutation checks on during tests, plus `pn_key` and `assert_tree_close` fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from .. import random as pnr
from .._config import config
from ._assertions import assert_tree_close as _assert_tree_close


@pytest.fixture(autouse=True)
def _purenn_debug() -> Iterator[None]:
    """Every test runs with `pn.config.debug` on, so in-place writes into purenn trees raise."""
    with config.override(debug=True):
        yield


@pytest.fixture
def pn_key() -> torch.Tensor:
    """A fixed PRNG key, `pn.random.key(0)`."""
    return pnr.key(0)


@pytest.fixture
def assert_tree_close() -> Callable[..., Any]:
    """`assert_tree_close(actual, expected, rtol=None, atol=None)`: leaf-wise closeness naming the path."""
    return _assert_tree_close
