"""Configuration of `nasdistill search`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..engine.config import DataConfig, TrainConfig


@dataclass
class SearchSection:
    """ProxylessNAS search knobs (defaults from the ProxylessNAS paper and code)."""

    space: str = "digits_small"
    mode: Literal["full", "two"] = "full"          # path binarization estimator
    warmup_epochs: int = 5                          # weight-only epochs before phi is updated
    uniform_warmup: bool = True                     # sample paths uniformly during warm-up
    arch_every: int = 1                             # one phi step every k weight steps
    arch_lr: float = 1e-3
    arch_betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    arch_weight_decay: float = 0.0
    cost_metric: Literal["macs", "params", "latency"] = "macs"
    target: Optional[float] = None                  # cost target in cost_metric units (required)
    latency_table: Optional[str] = None             # JSON from `nasdistill bench latency`
    penalty: Literal["mul#log", "add#linear", "add#abs"] = "mul#log"
    alpha: float = 0.2                              # mul#log: CE * alpha * (log E / log T)^beta
    beta: float = 0.3
    lam: float = 0.1                                # add#linear: CE + lam * (E - T) / T; add#abs: |E - T|
    recalibrate_batches: int = 20                   # BN recalibration of the extracted student

    def __post_init__(self):
        from ..engine.config import require

        require(self.target is None or self.target > 0, "target", f"must be > 0, got {self.target}")
        require(self.arch_every >= 1, "arch_every", f"must be >= 1, got {self.arch_every}")
        require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        require(self.arch_lr > 0, "arch_lr", f"must be > 0, got {self.arch_lr}")
        require(self.recalibrate_batches >= 0, "recalibrate_batches", "must be >= 0")


def _search_train() -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=64, lr=0.05, weight_decay=4e-5, schedule="cosine",
                       nesterov=True, milestones=[])


def _search_data() -> DataConfig:
    return DataConfig(name="digits")


@dataclass
class SearchConfig:
    """`nasdistill search CONFIG`: weight-sharing supernet + cost-aware ProxylessNAS search."""

    seed: int = 0
    out_dir: str = "runs/search"
    data: DataConfig = field(default_factory=_search_data)
    train: TrainConfig = field(default_factory=_search_train)
    search: SearchSection = field(default_factory=SearchSection)
