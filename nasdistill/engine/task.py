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

Hooks that need data receive the run's :class:`Loaders` (train, val, test): a task never builds
loaders of its own. The order at the end of a run is fixed and explicit: :meth:`on_fit_end`
(e.g. extract the searched student and recalibrate its BatchNorm), then :meth:`final_weights`,
:meth:`model_record`, :meth:`result_extras` and :meth:`save_artifacts`, which only read.

A task that writes files of its own (:meth:`save_artifacts`) declares their names in
:attr:`TrainTask.artifacts`: the run lifecycle records them in ``run.json``, reuses a finished run
only when they exist, and removes them on ``--restart``; the engine never names a method's files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

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


class Loaders(NamedTuple):
    """The loaders of a run: ``train`` (shuffled, augmented, sharded over ranks), ``val`` and
    ``test`` (in order, not augmented, every rank sees all). ``val``/``test`` may be None."""

    train: Any
    val: Any = None
    test: Any = None


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
    #: True when one step is a fixed sequence of kernels with no host synchronisation and no Python
    #: value that changes within an epoch (a fixed model, tensor-only logs): the engine may then
    #: capture the whole step in a CUDA graph (``train.cuda_graphs``), re-captured every epoch.
    graph_safe: bool = False
    #: True when every trainable parameter gets a gradient at every step (no sampled paths, no
    #: frozen phases): under torchrun the engine then trains through DistributedDataParallel.
    ddp_safe: bool = False
    #: Names of the files (or folders) :meth:`save_artifacts` writes directly in the run folder, e.g.
    #: ``("extra.safetensors",)``; a task whose names depend on its configuration overrides this
    #: with a property. Declared names are recorded in ``run.json``, required for a finished run to
    #: be reused and removed by ``--restart``.
    artifacts: tuple = ()
    #: The step log (without ``train_``) holding the cross-entropy of the trained model's own
    #: predictions, and the epoch metric (a key of :meth:`epoch_metrics`) holding the spread of
    #: its logits: the run's health check reads them (:mod:`nasdistill.engine.health`); None: not
    #: logged.
    ce_log: Optional[str] = "ce"
    logit_std_metric: Optional[str] = None

    def __init__(self, model: nn.Module):
        self.model = model
        #: the :class:`~nasdistill.network.record.ModelRecord` of the final network (set by whoever builds
        #: the task); written as ``model.json`` (with the code of custom ops) by the trainer
        self.network_record = None
        #: entries for ``result.json`` known when the task is built (e.g. the method's name)
        self.info: dict = {}

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

    def on_fit_end(self, loaders: Loaders) -> None:
        """Called once after the last epoch (also when a finished checkpoint is finished later),
        before the final weights are taken: e.g. extract a student and recalibrate its BatchNorm."""

    def result_extras(self) -> dict:
        """Entries added to ``result.json`` (called after :meth:`on_fit_end`)."""
        return {}

    @property
    def record(self) -> Optional[dict]:
        """The ``model.json`` mapping of :attr:`network_record` (None without one)."""
        return None if self.network_record is None else self.network_record.to_json()

    def model_record(self):
        """The :class:`~nasdistill.network.record.ModelRecord` of the network :meth:`final_weights` holds
        (default: :attr:`network_record`; None writes no ``model.json``)."""
        return self.network_record

    def eval_model(self) -> nn.Module:
        """The network evaluated for accuracy (default ``model``)."""
        return self.model

    def epoch_metrics(self, epoch: int, loaders: Loaders) -> dict[str, Any]:
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
        """Write method-specific files (branch weights, gates, ...) at the end, each with
        :mod:`nasdistill.atomic`; their names are :attr:`artifacts`."""

    def to(self, device: torch.device) -> "TrainTask":
        """Move every module to ``device`` (default: ``model``)."""
        self.model.to(device)
        return self
