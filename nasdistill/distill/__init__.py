"""Knowledge distillation: plain loss functions (:mod:`.losses`) and one distiller per method.

>>> d = build_distiller("kd", student, teacher, temperature=2.0)
>>> logits, losses = d.forward_train(x, y, idx, epoch)
>>> sum(losses.values()).backward()

``METHOD_CONFIGS[method]`` is the hyper-parameter dataclass of each method (exposed by the config
system as ``<method>.<key>``); ``build_distiller`` takes either an instance (``cfg=``) or keyword
overrides of its fields (or both: the keywords override the instance's fields).
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Optional

from .at import ATConfig, ATDistiller
from .base import Distiller, FeatureDistiller, FeatureKDConfig
from .crd import CRDConfig, CRDDistiller, CRDLoss, ContrastMemory, EmbedHead, nce_contrast_loss
from .dkd import DKDConfig, DKDDistiller, dkd_warmup_factor
from .fitnet import FitNetConfig, FitNetDistiller, HintRegressor
from .kd import KDConfig, KDDistiller
from .losses import (at_loss, attention_map, dkd_loss, fitnet_loss, kd_loss, pairwise_distances,
                     pkt_loss, pool_to_smaller, rkd_loss, sp_loss)
from .pairing import pair_stages
from .pkt import PKTConfig, PKTDistiller
from .rkd import RKDConfig, RKDDistiller
from .sp import SPConfig, SPDistiller

DISTILLERS: dict[str, type[Distiller]] = {
    "kd": KDDistiller,
    "dkd": DKDDistiller,
    "fitnet": FitNetDistiller,
    "at": ATDistiller,
    "sp": SPDistiller,
    "rkd": RKDDistiller,
    "pkt": PKTDistiller,
    "crd": CRDDistiller,
}

METHOD_CONFIGS: dict[str, type] = {name: cls.config_class for name, cls in DISTILLERS.items()}


def _config(method: str, cfg, overrides: dict):
    config_class = METHOD_CONFIGS[method]
    if cfg is None:
        cfg = config_class()
    elif not isinstance(cfg, config_class):
        raise TypeError(f"build_distiller({method!r}): cfg must be a {config_class.__name__}, "
                        f"got {type(cfg).__name__}")
    fields = [f.name for f in dataclasses.fields(config_class)]
    for key in overrides:
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"build_distiller({method!r}): unknown option {key!r}{hint}; "
                             f"valid options: {', '.join(fields)}")
    return dataclasses.replace(cfg, **overrides)


def build_distiller(method: str, student, teacher, num_data: Optional[int] = None,
                    input_size: Optional[tuple] = None, cfg=None, **kwargs) -> Distiller:
    """Build the distiller ``method`` (a key of :data:`DISTILLERS`).

    ``num_data`` (training set size) is required by ``crd``, ``input_size`` ``(C, H, W)`` by
    ``fitnet``; the other methods ignore them. ``cfg``: an instance of ``METHOD_CONFIGS[method]``;
    ``kwargs``: overrides of its fields (an unknown name is a ``ValueError``).
    """
    if method not in DISTILLERS:
        raise ValueError(f"unknown distillation method {method!r}; valid methods: "
                         f"{', '.join(DISTILLERS)}")
    cfg = _config(method, cfg, kwargs)
    cls = DISTILLERS[method]
    if method == "crd":
        return cls(student, teacher, cfg, num_data=num_data)
    if method == "fitnet":
        return cls(student, teacher, cfg, input_size=input_size)
    return cls(student, teacher, cfg)


__all__ = [
    "ATConfig", "ATDistiller", "CRDConfig", "CRDDistiller", "CRDLoss", "ContrastMemory", "DISTILLERS",
    "DKDConfig", "DKDDistiller", "Distiller", "EmbedHead", "FeatureDistiller", "FeatureKDConfig",
    "FitNetConfig", "FitNetDistiller", "HintRegressor", "KDConfig", "KDDistiller", "METHOD_CONFIGS",
    "PKTConfig", "PKTDistiller", "RKDConfig", "RKDDistiller", "SPConfig", "SPDistiller",
    "at_loss", "attention_map", "build_distiller", "dkd_loss", "dkd_warmup_factor", "fitnet_loss",
    "kd_loss", "nce_contrast_loss", "pair_stages", "pairwise_distances", "pkt_loss",
    "pool_to_smaller", "rkd_loss", "sp_loss",
]

# Distillation runs: config, task, cached teacher logits, runner (`nasdistill distill`, pipeline).
from .config import DistillConfig  # noqa: E402
from .task import DistillTask  # noqa: E402
from .teacher_cache import TeacherLogitCache  # noqa: E402
from .runner import run_distill  # noqa: E402

__all__ += ["DistillConfig", "DistillTask", "TeacherLogitCache", "run_distill"]
