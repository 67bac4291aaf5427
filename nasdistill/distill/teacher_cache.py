"""Cached teacher logits: one teacher pass over the train split instead of one per step.

Without random augmentation a frozen teacher (eval mode, no dropout) maps a training image to the
same logits in every epoch, so logit-only methods (KD, DKD) can read them from a table indexed by
the dataset index ``idx`` of each batch. The teacher forward then costs one pass in total instead
of one per step.

The distillers (kd.py, dkd.py) read teacher logits through ``Distiller.teacher_features(x)``;
:meth:`TeacherLogitCache.serve` routes that call to the table for one batch. Only ``logits`` is
filled in the returned :class:`~nasdistill.models.staged.Features`: feature methods are refused.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..models.staged import Features

__all__ = ["TeacherLogitCache", "compute_teacher_logits"]


@torch.no_grad()
def compute_teacher_logits(teacher: nn.Module, loader, num_samples: int, num_classes: int,
                           device: torch.device) -> torch.Tensor:
    """``(num_samples, num_classes)`` float32 logits of ``teacher`` (eval mode), row ``idx``.

    ``loader`` yields ``(x, y, idx)`` without augmentation; every index 0..num_samples-1 must
    appear (checked).
    """
    was_training = teacher.training
    teacher.eval()
    table = torch.full((num_samples, num_classes), float("nan"), device=device)
    seen = torch.zeros(num_samples, dtype=torch.bool, device=device)
    try:
        for x, _, idx in loader:
            table[idx] = teacher(x).float()
            seen[idx] = True
    finally:
        teacher.train(was_training)
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise ValueError(f"teacher logit cache: the loader left {missing} of {num_samples} training "
                         "samples out; it must cover the whole train split")
    return table


class TeacherLogitCache:
    """Teacher logits of the whole train split, looked up by dataset index."""

    def __init__(self, logits: torch.Tensor):
        if logits.dim() != 2:
            raise ValueError(f"TeacherLogitCache expects (num_samples, num_classes) logits, "
                             f"got shape {tuple(logits.shape)}")
        self.logits = logits

    @classmethod
    def build(cls, teacher: nn.Module, split, mean, std, device: torch.device,
              batch_size: int = 512) -> "TeacherLogitCache":
        """Run ``teacher`` once over ``split`` (a :class:`~nasdistill.data.Split`), no augmentation."""
        from ..data import DeviceLoader

        loader = DeviceLoader(split, batch_size, shuffle=False, augment=False, mean=mean, std=std,
                              device=device)
        num_classes = int(teacher.classifier.out_features)
        return cls(compute_teacher_logits(teacher, loader, len(split), num_classes, device))

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def to(self, device) -> "TeacherLogitCache":
        self.logits = self.logits.to(device)
        return self

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of the samples ``idx`` (the loader's dataset indices)."""
        if idx is None:
            raise ValueError("cached teacher logits need the dataset indices of the batch (idx)")
        idx = idx.reshape(-1).long()
        # the range check reads the indices on the host: free on the CPU, a sync on a GPU, where the
        # cache is checked once against the train split instead (DistillTask's builder)
        if idx.device.type == "cpu" and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"cached teacher logits: index out of range [0, {len(self)}); the cache "
                             "was built for another train split")
        return self.logits[idx]

    @contextlib.contextmanager
    def serve(self, distiller, idx: torch.Tensor) -> Iterator[None]:
        """Within the block, ``distiller.teacher_features(x)`` returns the cached logits of ``idx``."""
        logits = self.lookup(idx)

        def cached_features(x: torch.Tensor) -> Features:
            if x.shape[0] != logits.shape[0]:
                raise ValueError(f"cached teacher logits: a batch of {x.shape[0]} images for "
                                 f"{logits.shape[0]} indices")
            return Features(stem=None, stages=[], embedding=None, logits=logits)

        distiller.teacher_features = cached_features  # instance attribute shadows the method
        try:
            yield
        finally:
            del distiller.teacher_features
