"""The one evaluation loop.

:func:`eval_batches` runs a model over a loader in eval mode, under ``no_grad`` and the run's
autocast, and hands every batch's outputs (logits, or a list of logits for a model with several
heads) to a consumer; the model's train/eval mode is restored afterwards. The trainer's
:func:`evaluate` (top-1/top-5/loss), the teacher-quality predictions and the per-branch accuracies
of a grafted teacher are all consumers of it.

BatchNorm recalibration (a path of a weight-sharing network before it is evaluated) is a model
operation: :mod:`nasdistill.models.batchnorm`.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from . import distributed
from .precision import autocast_for, to_channels_last


@torch.no_grad()
def eval_batches(model: nn.Module, loader, consume: Callable, forward: Optional[Callable] = None, *,
                 device="cpu", amp: str = "off", channels_last: bool = False) -> None:
    """Call ``consume(outputs, batch)`` for every ``batch`` of ``loader``, ``model`` in eval mode.

    ``outputs = forward(x)`` (default ``model(x)``) for the batch's inputs ``x = batch[0]``, under
    ``no_grad`` and the autocast of ``amp`` on ``device``; ``forward`` may return a tensor of logits
    or several (a model with several heads). ``model`` goes back to train mode if it was in it.
    """
    forward = model if forward is None else forward
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            x = batch[0]
            x = to_channels_last(x) if channels_last else x
            with autocast_for(device, amp):
                outputs = forward(x)
            consume(outputs, batch)
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, loader, device: torch.device, amp: str = "auto",
             channels_last: bool = False) -> dict:
    """Top-1 and top-5 accuracy (percent) and mean CE loss of ``model`` on ``loader``.

    Counts are summed over ranks, so a sharded or a full loader on every rank both work.
    """
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    total = 0

    def count(logits, batch):
        nonlocal correct1, correct5, loss_sum, total
        y = batch[1]
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(y[:, None])
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        total += y.shape[0]

    eval_batches(model, loader, count, device=device, amp=amp, channels_last=channels_last)
    c1, c5, ls = torch.stack([correct1, correct5, loss_sum]).tolist()
    c1, c5, ls, n = distributed.all_reduce_sum([c1, c5, ls, float(total)], device)
    if n == 0:
        raise ValueError("evaluation loader is empty")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": ls / n}


__all__ = ["eval_batches", "evaluate"]
