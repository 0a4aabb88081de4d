"""Fixtures shared by the test modules."""
import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One torch thread: fastest for the small models under test, and polite on a 2-core CI."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
