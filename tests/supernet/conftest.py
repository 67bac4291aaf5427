"""Fixtures of the supernet's tests."""
import pytest

from nasdistill.space import load_space


@pytest.fixture(scope="module")
def digits():
    """The ``digits_small`` space."""
    return load_space("digits_small")
