"""The :class:`Distiller` contract shared by every distillation method.

A distiller owns a student (trained), a teacher (frozen: eval mode, ``requires_grad=False``, run
under ``torch.no_grad()``) and the extra modules a method needs (FitNets regressor, CRD heads).
``forward_train`` returns the student logits and a dict of *already weighted* loss terms; the
trainer sums the dict values and back-propagates. Adding a method = one module of this package
with a registered subclass (:mod:`.registry`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.models.staged import Features, StagedModel

from .losses import kd_loss


class Distiller(nn.Module):
    """Base class. Subclasses set ``name``, ``config_class`` (and ``reads_features``,
    ``needs_teacher``, ``graph_safe`` when they differ) and implement :meth:`forward_train`."""

    name: str = ""
    config_class: type = None
    #: reads teacher features (stages, embeddings), not only its logits
    reads_features: bool = True
    #: False for the baseline: the student alone
    needs_teacher: bool = True
    #: one step is a fixed kernel sequence without host syncs (CUDA-graph capture allowed)
    graph_safe: bool = False

    @classmethod
    def build(cls, student, teacher, cfg=None, context=None) -> "Distiller":
        """The distiller for ``student`` and ``teacher``; ``context`` is a
        :class:`~.registry.BuildContext` (training set size, input size) for methods that need it."""
        return cls(student, teacher, cfg)

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], cfg=None):
        super().__init__()
        roles = (("student", student), ("teacher", teacher)) if self.needs_teacher else (("student", student),)
        for role, model in roles:
            if not isinstance(model, StagedModel):
                raise TypeError(f"{type(self).__name__}: the {role} is a {type(model).__name__}, "
                                "not a nasdistill StagedModel; build it with nasdistill.models."
                                "create_model or SearchSpace.build so it exposes forward_features")
        if cfg is None:
            cfg = self.config_class() if self.config_class is not None else None
        elif self.config_class is not None and not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__}: cfg must be a {self.config_class.__name__}, "
                            f"got {type(cfg).__name__}")
        self.cfg = cfg
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.teacher.eval()

    def train(self, mode: bool = True) -> "Distiller":
        """Set train/eval mode on the student and extra modules; the teacher always stays in eval."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode) expects a bool, got {mode!r}")
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: the student's logits."""
        return self.student(x)

    def teacher_features(self, x: torch.Tensor) -> Features:
        """The teacher's features, computed without gradient and in eval mode."""
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher.forward_features(x)

    def forward_train(self, x: torch.Tensor, y: torch.Tensor, idx: Optional[torch.Tensor] = None,
                      epoch: int = 0) -> tuple[torch.Tensor, dict]:
        """One training forward: ``(student logits, {"loss_ce": ..., "loss_kd": ..., ...})``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_train")

    def extra_modules(self) -> list[nn.Module]:
        """Modules besides the student that the optimizer trains (regressor, embedding heads)."""
        return []

    def trainable_modules(self) -> list[nn.Module]:
        """The student and the method's extra modules; never the teacher."""
        return [self.student, *self.extra_modules()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trainable_modules() for p in m.parameters()]

    def extra_repr(self) -> str:
        return f"method={self.name!r}, cfg={self.cfg}"


@dataclass
class FeatureKDConfig:
    """Weights shared by the feature methods (RepDistiller's ``-r`` CE weight, ``-a`` KD weight).

    ``kd_weight`` adds Hinton KD at ``temperature`` on the logits (0 = off, RepDistiller's default);
    ``standardize`` z-scores both logits of that KD term first (logit standardization).
    """

    __bounds__ = {"ce_weight": ">= 0", "kd_weight": ">= 0", "temperature": "> 0", "feat_weight": ">= 0"}

    ce_weight: float = 1.0
    kd_weight: float = 0.0
    temperature: float = 4.0
    standardize: bool = False


class FeatureDistiller(Distiller):
    """A method that adds one feature loss (weighted, under ``loss_feat``) to CE and optional KD.

    Subclasses implement :meth:`feature_loss` on the student and teacher :class:`Features`.
    The dict has the keys ``loss_ce``, ``loss_kd`` (zero when ``kd_weight`` is 0) and ``loss_feat``.
    """

    def feature_loss(self, feats_s: Features, feats_t: Features, y: torch.Tensor,
                     idx: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward_train(self, x, y, idx=None, epoch=0):
        feats_s = self.student.forward_features(x)
        feats_t = self.teacher_features(x)
        logits = feats_s.logits
        cfg = self.cfg
        loss_ce = cfg.ce_weight * F.cross_entropy(logits, y)
        if cfg.kd_weight:
            loss_kd = cfg.kd_weight * kd_loss(logits, feats_t.logits, cfg.temperature, cfg.standardize)
        else:
            loss_kd = logits.new_zeros(())
        loss_feat = cfg.feat_weight * self.feature_loss(feats_s, feats_t, y, idx)
        return logits, {"loss_ce": loss_ce, "loss_kd": loss_kd, "loss_feat": loss_feat}
