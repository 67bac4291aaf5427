"""BatchNorm recalibration: re-estimate running statistics on a few batches.

A path of a weight-sharing network needs it before it is evaluated: the statistics it shares are a
mixture over every path the supernet trained.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Optional

import torch
from torch import nn


@contextmanager
def recalibrating_bn(bns: Iterable[nn.Module], restore: bool = False):
    """BatchNorms ``bns`` with reset running statistics that average cumulatively
    (``momentum=None``) over the batches run inside the block.

    On exit their momentum is restored and, with ``restore``, the running statistics they had
    before (copied back in place: the block may evaluate with the recalibrated statistics and
    leave the modules as they were). Train/eval modes are the caller's.
    """
    saved = [(m, m.momentum, [(b, b.clone()) for b in m.buffers(recurse=False)] if restore else ())
             for m in bns]
    for m, _, _ in saved:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    try:
        yield
    finally:
        with torch.no_grad():
            for m, momentum, buffers in saved:
                m.momentum = momentum
                for b, value in buffers:
                    b.copy_(value)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, num_batches: Optional[int] = None) -> nn.Module:
    """Re-estimate BatchNorm running statistics of ``model`` on ``batches`` (cumulative average).

    Weight-sharing supernet statistics are a mixture over paths; an extracted path needs its own.
    ``batches`` yields tensors or ``(x, ...)`` tuples. Returns the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with recalibrating_bn(bns):
        model.train()
        for i, batch in enumerate(batches):
            if num_batches is not None and i >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
    return model.eval()


__all__ = ["recalibrate_bn", "recalibrating_bn"]
