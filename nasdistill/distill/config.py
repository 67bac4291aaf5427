"""Configuration of `nasdistill distill` (and of the pipeline's distillation step).

One section per distillation method (``kd``, ``dkd``, ``fitnet``, ``at``, ``sp``, ``rkd``, ``pkt``,
``crd``), each the method's own hyper-parameter dataclass from :data:`~nasdistill.distill.
METHOD_CONFIGS`, so ``kd.temperature=2`` or ``dkd.beta=6`` are type-checked and an unknown key is
refused by name like every other key. Only the section of ``method`` is used.

Training defaults are the student KD recipe of GTN's evaluation (REFERENCE.md section 3): SGD
momentum 0.9, lr 0.05, weight decay 5e-4, cosine annealing over all epochs, T = 4 (the methods'
own default), batch 64, 240 epochs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..engine.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from .at import ATConfig
from .crd import CRDConfig
from .dkd import DKDConfig
from .fitnet import FitNetConfig
from .kd import KDConfig
from .pkt import PKTConfig
from .rkd import RKDConfig
from .sp import SPConfig

__all__ = ["DistillConfig", "LOGIT_METHODS", "distill_train_defaults"]

#: Methods that read only the teacher's logits, so cached teacher logits can replace its forward.
LOGIT_METHODS = ("kd", "dkd")


def distill_train_defaults() -> TrainConfig:
    """GTN's student KD recipe: SGD lr 0.05, cosine over the epochs (no milestones)."""
    return TrainConfig(epochs=240, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9,
                       weight_decay=5e-4, schedule="cosine", milestones=[])


@dataclass
class DistillConfig:
    """`nasdistill distill CONFIG`: train ``student`` from the teacher of run directory ``teacher``.

    ``method="none"`` trains the student alone with cross-entropy (the baseline) and needs no
    teacher. ``student`` is a zoo model (``student.name``) or an architecture of a space
    (``student.space`` + ``student.arch``: a mapping, a JSON string, or a JSON file such as a search
    run's ``arch.json``; when that file names its space, ``student.space`` may be left out).
    ``cache_teacher_logits``: compute the teacher's logits once for the whole train split and reuse
    them every epoch (kd/dkd only, and only without random augmentation).
    """

    seed: int = 0
    out_dir: str = "runs/distill"
    teacher: Optional[str] = None
    method: Literal["kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd", "none"] = "kd"
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=distill_train_defaults)
    cache_teacher_logits: bool = False
    kd: KDConfig = field(default_factory=KDConfig)
    dkd: DKDConfig = field(default_factory=DKDConfig)
    fitnet: FitNetConfig = field(default_factory=FitNetConfig)
    at: ATConfig = field(default_factory=ATConfig)
    sp: SPConfig = field(default_factory=SPConfig)
    rkd: RKDConfig = field(default_factory=RKDConfig)
    pkt: PKTConfig = field(default_factory=PKTConfig)
    crd: CRDConfig = field(default_factory=CRDConfig)

    def method_config(self):
        """The hyper-parameter section of ``method`` (None for ``method="none"``)."""
        return None if self.method == "none" else getattr(self, self.method)

    def check(self) -> None:
        """Refuse combinations no single key can reject (called by :func:`run_distill`).

        Not done in ``__post_init__``: a config is often built with defaults and then filled in
        (``cfg.teacher = ...``), and ``--resume`` reads ``out_dir`` from a partial config.
        """
        if self.method == "none":
            if self.cache_teacher_logits:
                raise ConfigError("cache_teacher_logits=true with method=none: the baseline has no "
                                  "teacher; drop the flag")
            return
        if not self.teacher:
            raise ConfigError(f"method={self.method} needs a teacher: set teacher=RUN_DIR, a run "
                              "directory written by `nasdistill teacher CONFIG --out-dir RUN_DIR` "
                              "(or method=none to train the student alone)")
        if self.cache_teacher_logits and self.method not in LOGIT_METHODS:
            raise ConfigError(
                f"cache_teacher_logits=true with method={self.method}: {self.method} compares "
                f"teacher features, which need the teacher's forward on every batch; the cache only "
                f"serves logit methods ({', '.join(LOGIT_METHODS)}). Set cache_teacher_logits=false")

