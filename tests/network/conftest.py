"""Fixtures shared by the tests of saved networks (exports, model.py copies, records)."""
import pytest
import torch


def _randomize(model, seed=0):
    """Non-trivial weights and BatchNorm statistics, so equal outputs mean equal networks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                r = torch.rand(t.shape, generator=gen)
                t.copy_(0.5 + r if name.endswith("running_var") else (r - 0.5) * 0.5)
    return model


@pytest.fixture
def randomize():
    """``randomize(model, seed=0)``: ``model`` with non-trivial weights and BatchNorm statistics
    (returned, its mode unchanged)."""
    return _randomize
