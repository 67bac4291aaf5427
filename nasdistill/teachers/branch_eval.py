"""Accuracy of each grafted branch (the GTN supplement's Figure 1 curves)."""
from __future__ import annotations

import torch


@torch.no_grad()
def branch_accuracies(branched, loader, before_batch=None) -> list[float]:
    """Top-1 accuracy (%) of every branch of ``branched`` on ``loader`` (eval mode)."""
    was = branched.training
    branched.eval()
    correct = [0] * len(branched.branches)
    total = 0
    try:
        for x, y, *_ in loader:
            if before_batch is not None:
                before_batch()
            _, zs = branched(x, teacher_grad=False)
            for i, z in enumerate(zs):
                correct[i] += int((z.argmax(1) == y).sum())
            total += y.shape[0]
    finally:
        branched.train(was)
    return [100.0 * c / max(total, 1) for c in correct]


def eval_loader_for(splits, device, batch_size: int = 256):
    """A plain (no shuffle, no augmentation) loader over the validation split, or test if empty."""
    from ..data import DeviceLoader

    split = splits.val if len(splits.val) else splits.test
    return DeviceLoader(split, batch_size, shuffle=False, augment=False, mean=splits.mean,
                        std=splits.std, device=device, seed=0)
