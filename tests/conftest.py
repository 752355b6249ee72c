"""Hypothesis profiles: `ci` (default, fast) and `thorough`; the example database stays out of the repo."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]  # tests/test_testing.py runs the purenn plugin in a fresh session

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
