"""The engine's configuration section, :class:`TrainConfig` (optimizer, schedule, precision,
device). The parser is :mod:`nasdistill.config`; the data and model sections are
:mod:`nasdistill.data.config` and :mod:`nasdistill.models.config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from ..config import ConfigError, require


def _check_device(name: str, key: str = "device") -> None:
    if name == "auto":
        return
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError.for_key(key, f"is {name!r}, not a device name; use auto, cpu, cuda or cuda:N") from None


@dataclass
class TrainConfig:
    """Optimizer, schedule, precision and evaluation cadence of one training run."""

    epochs: int = 240
    batch_size: int = 64                     # global batch (split over ranks when distributed)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: float = 0.0               # linear lr warm-up from 0 over the first N epochs (per step)
    clip_grad_norm: Optional[float] = None   # clip the main optimizer's gradient norm to this (None: off)
    amp: Literal["auto", "bf16", "off"] = "auto"          # auto: bf16 on CUDA, fp32 on CPU; bf16: everywhere
    channels_last: Union[bool, Literal["auto"]] = "auto"  # auto: on CUDA only
    compile: bool = False                                 # torch.compile (fixed models only)
    cuda_graphs: Union[bool, Literal["auto"]] = "auto"    # whole-step CUDA graphs (fixed models, CUDA)
    device: str = "auto"                                  # auto, cpu, cuda, cuda:1, ...
    eval_every: int = 1
    check_every: int = 50                    # steps between checks of the on-device non-finite flag
    sync_bn: bool = False                    # SyncBatchNorm under torchrun (fixed models)
    threads: Optional[int] = None            # CPU intra-op threads (torch.set_num_threads); None: torch default

    def __post_init__(self):
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.momentum >= 0, "momentum", f"must be >= 0, got {self.momentum}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.gamma > 0, "gamma", f"must be > 0, got {self.gamma}")
        require(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
                f"must be in [0, train.epochs = {self.epochs}], got {self.warmup_epochs}")
        require(self.clip_grad_norm is None or self.clip_grad_norm > 0, "clip_grad_norm",
                f"must be > 0 or null, got {self.clip_grad_norm}")
        require(all(m >= 0 for m in self.milestones), "milestones", f"must be epochs >= 0, got {self.milestones}")
        require(self.eval_every >= 1, "eval_every", f"must be >= 1 (evaluate every N epochs), got {self.eval_every}")
        require(self.check_every >= 1, "check_every", f"must be >= 1, got {self.check_every}")
        require(self.threads is None or self.threads >= 1, "threads", f"must be >= 1 or null, got {self.threads}")
        _check_device(self.device)
