"""Configuration of `nasdistill distill` (and of the main job's distillation step).

:func:`distill_config_class` returns :class:`DistillConfigBase` with one section per registered
distillation method that has hyper-parameters (``kd``, ``dkd``, ``fitnet``, ``at``, ``sp``,
``rkd``, ``pkt``, ``crd``, and any method added later), each the method's own dataclass, so
``kd.temperature=2`` or ``dkd.beta=6`` are type-checked and an unknown key is refused by name like
every other key. Only the section of ``method`` is used. ``DistillConfig`` is that class for the
methods registered at import.

Training defaults are the student KD recipe of GTN's evaluation (REFERENCE.md section 3): SGD
momentum 0.9, lr 0.05, weight decay 5e-4, cosine annealing over all epochs, T = 4 (the methods'
own default), batch 64, 240 epochs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..config import ConfigError
from ..data.config import DataConfig
from ..models.config import ModelConfig
from ..engine.config import TrainConfig
from ..registry import sectioned_config
from .registry import DISTILLERS, get_distiller, logits_only

__all__ = ["DistillConfigBase", "distill_config_class", "distill_train_defaults"]


def distill_train_defaults() -> TrainConfig:
    """GTN's student KD recipe: SGD lr 0.05, cosine over the epochs (no milestones)."""
    return TrainConfig(epochs=240, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9,
                       weight_decay=5e-4, schedule="cosine", milestones=[])


@dataclass
class DistillConfigBase:
    """`nasdistill distill CONFIG`: train ``student`` from the teacher of run directory ``teacher``.

    ``method="none"`` trains the student alone with cross-entropy (the baseline) and needs no
    teacher. ``student`` is a zoo model (``student.name``) or an architecture of a space
    (``student.space`` + ``student.arch``: a mapping or JSON string), or a network recorded by
    another run (``student.arch`` = a search run directory or any ``model.json``: no
    ``student.space`` needed). ``cache_teacher_logits``: compute the teacher's logits once for the
    whole train split and reuse them every epoch (methods that read only logits, and only without
    random augmentation).
    """

    seed: int = 0
    out_dir: str = "runs/distill"
    teacher: Optional[str] = None
    method: str = "kd"
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=distill_train_defaults)
    cache_teacher_logits: bool = False
    #: divide the teacher's logits by the temperature T_cal that minimises its NLL on the
    #: validation split (Guo et al. 2017) before any loss reads them
    calibrate_teacher: bool = False

    def __post_init__(self):
        if self.method not in DISTILLERS:
            raise ConfigError.for_key("method", f"names no distillation method: "
                                                f"{DISTILLERS.unknown_message(self.method)}")

    def method_config(self):
        """The hyper-parameter section of ``method`` (None for a method without one)."""
        cls = get_distiller(self.method)
        return getattr(self, self.method) if cls.config_class is not None else None

    def check(self) -> None:
        """Refuse combinations no single key can reject (called before a run).

        Not done in ``__post_init__``: a config is often built with defaults and then filled in
        (``cfg.teacher = ...``), and ``--resume`` reads ``out_dir`` from a partial config.
        """
        cls = get_distiller(self.method)
        if not cls.needs_teacher:
            if self.cache_teacher_logits:
                raise ConfigError(f"cache_teacher_logits=true with method={self.method}: this method has "
                                  "no teacher; drop the flag", "cache_teacher_logits")
            return
        if not self.teacher:
            raise ConfigError(f"method={self.method} needs a teacher: set teacher=RUN_DIR, a run "
                              "directory written by `nasdistill teacher CONFIG --out-dir RUN_DIR` "
                              "(or method=none to train the student alone)", "teacher")
        if self.cache_teacher_logits and not logits_only(self.method):
            cached = [n for n in DISTILLERS if logits_only(n)]
            raise ConfigError(
                f"cache_teacher_logits=true with method={self.method}: {self.method} compares "
                f"teacher features, which need the teacher's forward on every batch; the cache only "
                f"serves logit methods ({', '.join(cached)}). Set cache_teacher_logits=false",
                "cache_teacher_logits")


def distill_config_class() -> type:
    """:class:`DistillConfigBase` plus one section per registered method with a config class."""
    return sectioned_config("DistillConfig", DistillConfigBase, DISTILLERS)


def __getattr__(name):  # `from nasdistill.distill.config import DistillConfig`
    if name == "DistillConfig":
        from . import DistillConfig  # the package registers every method first

        return DistillConfig
    raise AttributeError(name)
