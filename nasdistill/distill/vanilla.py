"""The baseline: the student trained alone with cross-entropy, ``L = CE(z_s, y)`` (mdistiller's
``Vanilla``). It is a distiller like any other, so every run of the main job has one shape."""
from __future__ import annotations

import torch.nn.functional as F

from .base import Distiller
from ..registry import register


@register("distiller", "none", order=0, reads_features=False, needs_teacher=False, graph_safe=True)
class VanillaDistiller(Distiller):
    """Keys: ``loss_ce``. No teacher, no hyper-parameters (method ``none``)."""

    def __init__(self, student, teacher=None, cfg=None):
        super().__init__(student, None, cfg)

    def forward_train(self, x, y, idx=None, epoch=0):
        logits = self.student(x)
        return logits, {"loss_ce": F.cross_entropy(logits, y)}
