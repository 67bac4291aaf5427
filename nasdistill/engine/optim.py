"""Optimizers and learning-rate schedules of the main optimizer.

Schedules are pure functions of the epoch (``lr_at``), set at the start of every epoch: nothing to
drift, nothing extra to checkpoint, and a resumed run gets exactly the same floats.

- ``multistep``: ``lr * gamma ** (number of milestones <= epoch)`` (torch ``MultiStepLR``).
- ``cosine``: ``lr * 0.5 * (1 + cos(pi * epoch / epochs))`` (torch ``CosineAnnealingLR``,
  ``T_max=epochs``, ``eta_min=0``).
- ``constant``: ``lr``.

``epoch`` counts from 0, so epoch 0 always runs at the base lr.

Warm-up (``train.warmup_epochs`` = W > 0): during the first W epochs the lr of step ``t`` (global,
0-based, ``S`` steps per epoch) is the schedule's lr times ``(t + 1) / (W S)``, a linear ramp from
almost 0 (Goyal et al. 2017): large early gradients of freshly initialised branches or heads then
meet a small step. :func:`warmup_factor` gives the factor.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch


def build_optimizer(train_cfg, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov option, weight decay) or Adam from a :class:`TrainConfig`."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the task has no trainable parameters for the main optimizer")
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train_cfg.lr, momentum=train_cfg.momentum,
                               nesterov=train_cfg.nesterov and train_cfg.momentum > 0,
                               weight_decay=train_cfg.weight_decay)
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    raise ValueError(f"train.optimizer: unknown optimizer {train_cfg.optimizer!r}; use 'sgd' or 'adam'")


def lr_at(train_cfg, epoch: int) -> float:
    """Learning rate of the main optimizer during ``epoch`` (0-based)."""
    base = train_cfg.lr
    if train_cfg.schedule == "constant":
        return base
    if train_cfg.schedule == "multistep":
        passed = bisect.bisect_right(sorted(train_cfg.milestones), epoch)
        return base * train_cfg.gamma ** passed
    if train_cfg.schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, train_cfg.epochs)))
    raise ValueError(f"train.schedule: unknown schedule {train_cfg.schedule!r}; "
                     "use 'multistep', 'cosine' or 'constant'")


def warmup_factor(train_cfg, step: int, steps_per_epoch: int) -> float:
    """The warm-up factor of global step ``step`` (0-based): ``min(1, (step + 1) / (W * S))``."""
    ramp = train_cfg.warmup_epochs * steps_per_epoch
    if ramp <= 0:
        return 1.0
    return min(1.0, (step + 1) / ramp)


def in_warmup(train_cfg, epoch: int) -> bool:
    """Whether any step of ``epoch`` (0-based) runs below the schedule's lr."""
    return epoch < train_cfg.warmup_epochs


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
