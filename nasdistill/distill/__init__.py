"""Knowledge distillation: plain loss functions (:mod:`.losses`) and one distiller per method.

>>> d = build_distiller("kd", student, teacher, temperature=2.0)
>>> logits, losses = d.forward_train(x, y, idx, epoch)
>>> sum(losses.values()).backward()

Every module of this package is imported here, and a distiller module registers its class
(``@register("distiller", name, config=..., **meta)``): adding a method is one file. ``METHOD_CONFIGS[method]`` is the
hyper-parameter dataclass of each method (exposed by the config system as ``<method>.<key>``);
``build_distiller`` takes either an instance (``cfg=``) or keyword overrides of its fields (or
both: the keywords override the instance's fields).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..registry import config_sections, did_you_mean, import_submodules
from .base import Distiller, FeatureDistiller, FeatureKDConfig
from .losses import (at_loss, attention_map, dkd_loss, fitnet_loss, kd_loss, pairwise_distances,
                     pkt_loss, pool_to_smaller, rkd_loss, sp_loss)
from .pairing import pair_stages
from .registry import BuildContext, DISTILLERS, get_distiller, logits_only

import_submodules(__name__)

from .at import ATConfig, ATDistiller  # noqa: E402
from .config import DistillConfigBase, distill_config_class  # noqa: E402
from .crd import CRDConfig, CRDDistiller, CRDLoss, ContrastMemory, EmbedHead, nce_contrast_loss  # noqa: E402
from .dkd import DKDConfig, DKDDistiller, dkd_warmup_factor  # noqa: E402
from .fitnet import FitNetConfig, FitNetDistiller, HintRegressor  # noqa: E402
from .kd import KDConfig, KDDistiller  # noqa: E402
from .pkt import PKTConfig, PKTDistiller  # noqa: E402
from .rkd import RKDConfig, RKDDistiller  # noqa: E402
from .sp import SPConfig, SPDistiller  # noqa: E402
from .vanilla import VanillaDistiller  # noqa: E402

#: hyper-parameter dataclass of every registered method that has one
METHOD_CONFIGS: dict[str, type] = dict(config_sections(DISTILLERS))
DistillConfig = distill_config_class()


def _config(method: str, cfg, overrides: dict):
    config_class = get_distiller(method).config_class
    if config_class is None:
        if cfg is not None or overrides:
            raise ValueError(f"build_distiller({method!r}): this method has no hyper-parameters")
        return None
    if cfg is None:
        cfg = config_class()
    elif not isinstance(cfg, config_class):
        raise TypeError(f"build_distiller({method!r}): cfg must be a {config_class.__name__}, "
                        f"got {type(cfg).__name__}")
    fields = [f.name for f in dataclasses.fields(config_class)]
    for key in overrides:
        if key not in fields:
            raise ValueError(f"build_distiller({method!r}): unknown option {key!r};"
                             f"{did_you_mean(key, fields)} valid options: {', '.join(fields)}")
    return dataclasses.replace(cfg, **overrides)


def build_distiller(method: str, student, teacher=None, num_data: Optional[int] = None,
                    input_size: Optional[tuple] = None, cfg=None, **kwargs) -> Distiller:
    """Build the distiller ``method`` (a name of :data:`DISTILLERS`).

    ``num_data`` (training set size) is required by ``crd``, ``input_size`` ``(C, H, W)`` by
    ``fitnet``; the other methods ignore them. ``cfg``: an instance of the method's config class;
    ``kwargs``: overrides of its fields (an unknown name is a ``ValueError``).
    """
    cls = get_distiller(method)
    cfg = _config(method, cfg, kwargs)
    return cls.build(student, teacher, cfg, BuildContext(num_data, input_size))


__all__ = [
    "ATConfig", "ATDistiller", "BuildContext", "CRDConfig", "CRDDistiller", "CRDLoss", "ContrastMemory",
    "DISTILLERS", "DKDConfig", "DKDDistiller", "DistillConfig", "DistillConfigBase", "Distiller",
    "EmbedHead", "FeatureDistiller", "FeatureKDConfig", "FitNetConfig", "FitNetDistiller",
    "HintRegressor", "KDConfig", "KDDistiller", "METHOD_CONFIGS", "PKTConfig", "PKTDistiller",
    "RKDConfig", "RKDDistiller", "SPConfig", "SPDistiller", "VanillaDistiller", "at_loss",
    "attention_map", "build_distiller", "distill_config_class", "dkd_loss", "dkd_warmup_factor",
    "fitnet_loss", "get_distiller", "kd_loss", "logits_only", "nce_contrast_loss", "pair_stages",
    "pairwise_distances", "pkt_loss", "pool_to_smaller", "rkd_loss", "sp_loss",
]

# Distillation runs: task, cached teacher logits, runner (`nasdistill distill`, the main job).
from .task import DistillTask  # noqa: E402
from .teacher_cache import TeacherLogitCache  # noqa: E402
from .runner import run_distill  # noqa: E402

__all__ += ["DistillTask", "TeacherLogitCache", "run_distill"]
