"""What the :class:`~nasdistill.engine.trainer.Trainer` trains: a :class:`TrainTask` per method.

A task owns its modules and computes one step's loss; the trainer owns everything else
(optimizers, schedule, precision, gradient sync, evaluation, checkpoints, logs). Subclass and
override :meth:`TrainTask.training_step`; the other hooks have sensible defaults::

    class CETask(TrainTask):
        def training_step(self, batch, ctx):
            x, y, idx = batch
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            return StepOutput(loss, logits, {"ce": loss.detach()})

A step may name another optimizer (``StepOutput.optimizer="arch"``) returned by
:meth:`TrainTask.extra_optimizers`; only the main optimizer follows the lr schedule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn


@dataclass
class StepOutput:
    """The result of one training step.

    ``loss`` is back-propagated; ``logits`` (optional) give the train accuracy; ``logs`` (numbers
    or 0-d tensors, detached) are averaged over the epoch as ``train_<key>``; ``optimizer`` names
    which optimizer steps on this loss.
    """

    loss: torch.Tensor
    logits: Optional[torch.Tensor] = None
    logs: dict = field(default_factory=dict)
    optimizer: str = "main"


@dataclass
class StepContext:
    """Where a step sits in the run: epoch (0-based), global step, step within the epoch."""

    epoch: int
    step: int
    step_in_epoch: int
    device: torch.device
    world_size: int = 1
    rank: int = 0


class TrainTask:
    """Base class of what gets trained. ``model`` holds every module of the main optimizer."""

    #: False for models whose graph changes from step to step (supernets): never torch.compile them.
    compilable: bool = True

    def __init__(self, model: nn.Module):
        self.model = model

    def main_parameters(self):
        """Parameters stepped by the main optimizer (default: trainable params of ``model``)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Other optimizers by name, e.g. ``{"arch": Adam(phi)}``; called once, after ``to``."""
        return {}

    def training_step(self, batch, ctx: StepContext) -> StepOutput:
        """Loss of one batch ``(x, y, idx)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(batch, ctx)")

    def extra_steps(self, ctx: StepContext) -> list:
        """More optimizer steps after the main one on this batch (e.g. a phi step of the search on
        a held-out batch every k steps); each :class:`StepOutput` is applied like the main one."""
        return []

    def after_optimizer_step(self, name: str, ctx: StepContext) -> None:
        """Called after optimizer ``name`` stepped (e.g. ProxylessNAS ``two``-mode logit rescale)."""

    def result_extras(self) -> dict:
        """Entries added to ``result.json`` (called after :meth:`final_weights`)."""
        return {}

    def eval_model(self) -> nn.Module:
        """The network evaluated for accuracy (default ``model``)."""
        return self.model

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """Extra numbers logged after ``epoch`` (0-based), e.g. gate entropy."""
        return {}

    def state_dict(self) -> dict:
        """Extra state to checkpoint beyond ``model`` and optimizers (tensors, numbers, lists)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def final_weights(self) -> dict[str, torch.Tensor]:
        """What ``model.safetensors`` holds at the end (default: ``eval_model()``'s state dict)."""
        return self.eval_model().state_dict()

    def save_artifacts(self, run_dir: Path) -> None:
        """Write method-specific files (``arch.json``, branch weights, ...) at the end."""

    def to(self, device: torch.device) -> "TrainTask":
        """Move every module to ``device`` (default: ``model``)."""
        self.model.to(device)
        return self
