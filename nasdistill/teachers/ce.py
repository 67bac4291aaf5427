"""The plain cross-entropy teacher (the standard recipe).

Label smoothing is a knob, off by default: a smoothed teacher distills worse
(REFERENCE.md section 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..engine.task import StepOutput, TrainTask
from ..registry import register


@dataclass
class CEConfig:
    """``ce`` section of the teacher config."""

    __bounds__ = {"label_smoothing": ">= 0, < 1"}

    label_smoothing: float = 0.0


class CETask(TrainTask):
    """Minimize ``CE(model(x), y)`` (with optional label smoothing)."""

    graph_safe = True
    ddp_safe = True

    def __init__(self, model, label_smoothing: float = 0.0):
        super().__init__(model)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"ce.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def training_step(self, batch, ctx) -> StepOutput:
        x, y, _ = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return StepOutput(loss, logits, {"ce": loss.detach()})


def make_ce_task(cfg, model, splits) -> CETask:
    return CETask(model, cfg.ce.label_smoothing)


register("teacher", "ce", make_ce_task, config=CEConfig, help="plain cross-entropy", display_name="CE", order=10,
         reference=True)
