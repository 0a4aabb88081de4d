"""Fixtures shared by the test modules, and the hypothesis profiles of the fuzz tests."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

#: ``ci`` (default): a few hundred derandomised examples per fuzz target, the same every run.
#: ``fuzz``: ``SPINLAB_FUZZ_EXAMPLES`` (default 5000) random examples per target; the slow
#: test ``tests/test_fuzz_100k.py`` runs every fuzz target this way (100,000 inputs in all).
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("SPINLAB_FUZZ_EXAMPLES", "5000")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("SPINLAB_FUZZ_PROFILE", "ci"))


@pytest.fixture
def one_torch_thread():
    """One torch thread: fastest for the small models under test, and polite on a 2-core CI."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
