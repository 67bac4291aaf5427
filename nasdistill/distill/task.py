"""The :class:`DistillTask`: what the engine's :class:`~nasdistill.engine.trainer.Trainer` trains.

``model`` holds the distiller's trainable modules only (the student, then the method's extra
modules such as the FitNets regressor or the CRD heads and memory bank): the teacher is never in the
optimizer, in ``last.ckpt`` or in ``model.safetensors`` (which holds the student alone, so it loads
into the student architecture rebuilt from ``model.json``).

Epochs: the trainer counts them from 0, the distillers (like mdistiller) from 1, so a step of
trainer epoch ``e`` calls ``forward_train(..., epoch=e + 1)``; DKD's first epoch then has warm-up
factor ``min(1 / 20, 1)``, as in mdistiller.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..engine.task import StepContext, StepOutput, TrainTask
from .base import Distiller
from .teacher_cache import TeacherLogitCache

__all__ = ["DistillTask"]


class DistillTask(TrainTask):
    """Train ``student`` with ``distiller`` (None: the baseline, :class:`VanillaDistiller`).

    Each step returns the sum of the distiller's weighted losses; every named loss is logged
    (``train_loss_ce``, ``train_loss_kd``, ...). ``teacher_cache`` (optional) serves the teacher's
    logits from a table instead of a teacher forward (logit methods only).
    """

    ce_log = None  # its ``loss_ce`` is weighted by the method (e.g. 0.1 in KD)

    def __init__(self, student: nn.Module, distiller: Optional[Distiller] = None,
                 teacher_cache: Optional[TeacherLogitCache] = None):
        from .vanilla import VanillaDistiller

        distiller = distiller if distiller is not None else VanillaDistiller(student)
        if distiller.student is not student:
            raise ValueError("DistillTask: the distiller was built for another student module")
        if teacher_cache is not None:
            if not distiller.needs_teacher:
                raise ValueError(f"DistillTask: a teacher logit cache needs a teacher (method "
                                 f"{distiller.name} has none)")
            if distiller.reads_features:
                raise ValueError(f"DistillTask: cached teacher logits serve logit methods only; "
                                 f"{distiller.name} needs the teacher's features on every batch")
        super().__init__(nn.ModuleList(distiller.trainable_modules()))
        self.student = student
        self.distiller = distiller
        self.teacher_cache = teacher_cache
        self.graph_safe = distiller.graph_safe
        self.ddp_safe = True  # the student and the method's modules all get gradients every step
        self.teacher_test_acc = None

    @property
    def teacher(self) -> Optional[nn.Module]:
        return self.distiller.teacher

    def training_step(self, batch, ctx: StepContext) -> StepOutput:
        x, y, idx = batch
        if self.teacher_cache is not None:
            with self.teacher_cache.serve(self.distiller, idx):
                logits, losses = self.distiller.forward_train(x, y, idx, epoch=ctx.epoch + 1)
        else:
            logits, losses = self.distiller.forward_train(x, y, idx, epoch=ctx.epoch + 1)
        loss = sum(losses.values())
        return StepOutput(loss, logits, {k: v.detach() for k, v in losses.items()})

    def eval_model(self) -> nn.Module:
        return self.student

    def final_weights(self) -> dict[str, torch.Tensor]:
        return self.student.state_dict()

    def on_fit_end(self, loaders) -> None:
        """The teacher's test accuracy on the same split, for the report."""
        if self.teacher is not None and loaders.test is not None:
            from ..engine.trainer import evaluate

            device = next(self.student.parameters()).device
            self.teacher_test_acc = evaluate(self.teacher, loaders.test, device)["top1"]

    def result_extras(self) -> dict:
        return {"student_params": sum(p.numel() for p in self.student.parameters()),
                "teacher_test_acc": self.teacher_test_acc}

    def to(self, device: torch.device) -> "DistillTask":
        self.model.to(device)
        self.distiller.to(device)  # the teacher too (not part of ``model``)
        if self.teacher is not None:
            self.teacher.eval()
        if self.teacher_cache is not None:
            self.teacher_cache.to(device)
        return self
