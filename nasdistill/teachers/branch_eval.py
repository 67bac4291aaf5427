"""Accuracy of each grafted branch (the GTN supplement's Figure 1 curves).

A GTN branch is a path of a weight-sharing supernet whose BatchNorm running statistics are a
mixture over every path it trained: evaluated with them, a branch on its most likely path reads far
below what that path really does. So, as for an extracted student, each branch is evaluated with
branch BatchNorm statistics recalibrated on training batches (``recalibrate_batches``; 0 evaluates
the shared statistics as they are, which is right for SFTN, whose branches are one fixed student).
The recalibrated statistics live only for the evaluation: the branches' own are restored after it,
and the teacher's are never touched.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import torch
from torch import nn

from ..engine.evaluation import eval_batches
from ..models.batchnorm import recalibrating_bn


def _branch_bns(branched) -> list[nn.Module]:
    return [m for m in branched.branches.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def _calibration_passes(branched, bns, batches, num_batches: int, before_batch=None) -> None:
    """Run ``num_batches`` batches through every branch with the BatchNorms ``bns`` in train mode
    (eval mode again afterwards); the teacher runs once per batch, in eval mode."""
    for m in bns:
        m.train()
    try:
        for k, (x, *_) in enumerate(batches):
            if k >= num_batches:
                break
            if before_batch is not None:
                before_batch(branched)
            feats, _ = branched.teacher_features(x)
            for i, branch in enumerate(branched.branches):
                branch(feats[i])
    finally:
        for m in bns:
            m.eval()


@torch.no_grad()
def _recalibrate_branches(branched, batches, num_batches: int, before_batch=None) -> None:
    """Re-estimate the BatchNorm statistics of every branch (transform + suffix) in place; the
    teacher runs once per batch, in eval mode, with its own statistics."""
    bns = _branch_bns(branched)
    with recalibrating_bn(bns):
        _calibration_passes(branched, bns, batches, num_batches, before_batch)


@torch.no_grad()
def branch_accuracies(branched, loader, before_batch: Optional[Callable] = None, calib_loader=None,
                      recalibrate_batches: int = 0) -> list[float]:
    """Top-1 accuracy (%) of every branch of ``branched`` on ``loader`` (eval mode).

    ``before_batch(model)`` selects the paths to evaluate on ``model`` (called before every
    batch, e.g. the gates' argmax). With ``calib_loader`` and ``recalibrate_batches > 0`` the
    branches are evaluated with their BatchNorm statistics recalibrated on that many batches of
    ``calib_loader`` (see the module docstring); their statistics and momentum are restored
    afterwards, and ``branched`` goes back to train mode if it was in it.
    """
    recalibrate = calib_loader is not None and recalibrate_batches > 0
    bns = _branch_bns(branched) if recalibrate else []
    was = branched.training
    branched.eval()
    correct = [0] * len(branched.branches)
    total = 0

    def branch_logits(x):
        if before_batch is not None:
            before_batch(branched)
        return branched(x, teacher_grad=False)[1]

    def count(zs, batch):
        nonlocal total
        y = batch[1]
        for i, z in enumerate(zs):
            correct[i] += int((z.argmax(1) == y).sum())
        total += y.shape[0]

    try:
        with recalibrating_bn(bns, restore=True) if recalibrate else nullcontext():
            if recalibrate:
                if hasattr(calib_loader, "set_epoch"):
                    calib_loader.set_epoch(0)
                _calibration_passes(branched, bns, calib_loader, recalibrate_batches, before_batch)
            eval_batches(branched, loader, count, branch_logits)
    finally:
        branched.train(was)
    return [100.0 * c / max(total, 1) for c in correct]
