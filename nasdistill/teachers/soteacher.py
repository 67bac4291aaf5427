"""SoTeacher (Dong et al., "Toward student-oriented teacher network training"), official-code semantics.

    L = CE(z, y) + lip_weight * Lip1(model) + w(epoch) * cons_weight * ||softmax(z_i) - t_i||^2

- ``Lip1``: :func:`nasdistill.teachers.lipschitz.lip1` (sum over conv / BN / linear layers of a
  per-layer l1 Lipschitz bound). ``lip_weight`` = 1e-5 as in the official code.
- consistency: squared distance, summed over classes and averaged over the batch (the official
  ``mse_soft``), between the current prediction of train sample i and its running target ``t_i``.
- running targets: a (N_train, K) buffer indexed by the batch's ``idx``. After each step (with the
  old targets in the loss), ``t_i <- (1 - tau_e) t_i + tau_e softmax(z_i)`` with
  ``tau_e = 1 / (1 + epoch)`` (0-based epoch): epoch 0 replaces the zeros, and after epoch e,
  ``t_i`` is exactly the mean of sample i's predictions of epochs 0..e (one per epoch).
- ramp: ``w(e) = 0`` for ``e < start_epoch`` (default 1: there are no targets before one full
  epoch), else ``min(1, (e + 1) / ramp_epochs)``; ``ramp_epochs`` defaults to ``train.epochs``,
  which is the official ``linear`` scheduler ``(e + 1) / epochs``.

Both regularizers are on by default and always add up (``soteacher.lipschitz=false`` /
``soteacher.consistency=false`` turn one off); the official code's silent drop of a term when
several are combined is not reproduced. The target buffer lives in the task's checkpoint state (so
``--resume`` is exact) and never in ``model.safetensors``. Under ``torchrun`` every rank applies
the updates of all ranks, so the buffers stay identical and rank 0's checkpoint is complete.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..engine.task import StepOutput, TrainTask
from .lipschitz import lip1
from ..registry import register


@dataclass
class SoTeacherConfig:
    """``soteacher`` section of the teacher config."""

    __bounds__ = {"lip_weight": ">= 0", "cons_weight": ">= 0", "start_epoch": ">= 0", "ramp_epochs": ">= 0"}

    lipschitz: bool = True                 # add lip_weight * Lip1(model)
    lip_weight: float = 1e-5
    consistency: bool = True               # add w(epoch) * cons_weight * ||p_i - t_i||^2
    cons_weight: float = 1.0               # C, the consistency weight once the ramp is done
    start_epoch: int = 1                   # first (0-based) epoch with the consistency term
    ramp_epochs: Optional[int] = None      # w(e) = min(1, (e+1)/ramp_epochs); None: train.epochs


def running_tau(epoch: int) -> float:
    """Weight of the current prediction in the running target at 0-based ``epoch``: 1 / (1 + epoch)."""
    return 1.0 / (1.0 + epoch)


def consistency_ramp(epoch: int, start_epoch: int = 1, ramp_epochs: int = 1) -> float:
    """``0`` before ``start_epoch``, then ``min(1, (epoch + 1) / ramp_epochs)`` (1 if ramp_epochs <= 0)."""
    if epoch < start_epoch:
        return 0.0
    if ramp_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / ramp_epochs)


def consistency_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_b sum_k (probs_bk - targets_bk)^2`` (official ``mse_soft``: sum over classes, batch mean)."""
    return (probs - targets).square().sum(dim=1).mean()


class SoTeacherTask(TrainTask):
    """CE + Lipschitz + ramped consistency to per-sample running targets (see the module docstring).

    Logs per step (averaged per epoch as ``train_<key>``): ``ce``, ``lip1`` (the raw Lip1 value),
    ``cons`` (the raw consistency distance, 0 before ``start_epoch``) and ``cons_w``
    (``w(epoch) * cons_weight``).
    """

    ddp_safe = True   # every parameter gets a gradient every step (the targets are a buffer)

    def __init__(self, model, num_train: int, num_classes: int, *, lipschitz: bool = True,
                 lip_weight: float = 1e-5, consistency: bool = True, cons_weight: float = 1.0,
                 start_epoch: int = 1, ramp_epochs: int = 240):
        super().__init__(model)
        if lip_weight < 0 or cons_weight < 0:
            raise ValueError(f"soteacher.lip_weight and soteacher.cons_weight must be >= 0, got "
                             f"{lip_weight} and {cons_weight}")
        if start_epoch < 1:
            raise ValueError(f"soteacher.start_epoch must be >= 1 (targets exist only after one "
                             f"epoch), got {start_epoch}")
        if not (lipschitz or consistency):
            import warnings
            warnings.warn("soteacher.lipschitz and soteacher.consistency are both off: this is plain CE")
        self.lipschitz = bool(lipschitz)
        self.lip_weight = float(lip_weight)
        self.consistency = bool(consistency)
        self.cons_weight = float(cons_weight)
        self.start_epoch = int(start_epoch)
        self.ramp_epochs = int(ramp_epochs)
        self.targets = torch.zeros(int(num_train), int(num_classes))

    def consistency_weight(self, epoch: int) -> float:
        """``w(epoch) * cons_weight``: what multiplies the consistency distance at ``epoch``."""
        return consistency_ramp(epoch, self.start_epoch, self.ramp_epochs) * self.cons_weight

    @torch.no_grad()
    def update_targets(self, idx: torch.Tensor, probs: torch.Tensor, epoch: int) -> None:
        """``t[idx] <- (1 - tau) t[idx] + tau probs`` with ``tau = 1 / (1 + epoch)``."""
        idx, probs = _gather_all_ranks(idx, probs.float())
        idx = idx.to(self.targets.device)
        tau = running_tau(epoch)
        self.targets[idx] = (1.0 - tau) * self.targets[idx] + tau * probs.to(self.targets.device)

    def training_step(self, batch, ctx) -> StepOutput:
        x, y, idx = batch
        logits = self.model(x)
        ce = F.cross_entropy(logits.float(), y)
        loss = ce
        logs = {"ce": ce.detach()}
        if self.lipschitz:
            lip = lip1(self.model)
            loss = loss + self.lip_weight * lip
            logs["lip1"] = lip.detach()
        if self.consistency:
            probs = torch.softmax(logits.float(), dim=1)
            w = self.consistency_weight(ctx.epoch)
            if ctx.epoch >= self.start_epoch:
                cons = consistency_loss(probs, self.targets[idx.to(self.targets.device)].to(probs.device))
                loss = loss + w * cons
            else:
                cons = torch.zeros((), device=probs.device)
            logs["cons"] = cons.detach()
            logs["cons_w"] = w
            self.update_targets(idx, probs.detach(), ctx.epoch)   # after the loss used the old targets
        return StepOutput(loss, logits, logs)

    def epoch_metrics(self, epoch: int, loaders) -> dict[str, float]:
        return {"soteacher_cons_w": self.consistency_weight(epoch)} if self.consistency else {}

    def state_dict(self) -> dict:
        return {"targets": self.targets.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        targets = state.get("targets")
        if targets is None:
            return
        if tuple(targets.shape) != tuple(self.targets.shape):
            raise ValueError(f"soteacher checkpoint holds running targets of shape {tuple(targets.shape)}, "
                             f"this run needs {tuple(self.targets.shape)} (train set size x classes): "
                             "was it written for another dataset?")
        self.targets.copy_(targets.to(self.targets.device))

    def to(self, device: torch.device) -> "SoTeacherTask":
        super().to(device)
        self.targets = self.targets.to(device)
        return self


def _gather_all_ranks(idx: torch.Tensor, probs: torch.Tensor):
    """(idx, probs) of every rank concatenated (unchanged when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return idx, probs
    world = dist.get_world_size()
    n = torch.tensor([idx.shape[0]], device=probs.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    most = max(sizes)
    pad_idx = torch.zeros(most, dtype=idx.dtype, device=probs.device)
    pad_idx[:idx.shape[0]] = idx.to(probs.device)
    pad_p = probs.new_zeros(most, probs.shape[1])
    pad_p[:probs.shape[0]] = probs
    all_idx = [torch.empty_like(pad_idx) for _ in range(world)]
    all_p = [torch.empty_like(pad_p) for _ in range(world)]
    dist.all_gather(all_idx, pad_idx)
    dist.all_gather(all_p, pad_p)
    return (torch.cat([t[:s] for t, s in zip(all_idx, sizes)]),
            torch.cat([t[:s] for t, s in zip(all_p, sizes)]))


def make_soteacher_task(cfg, model, splits) -> SoTeacherTask:
    s = cfg.soteacher
    ramp = cfg.train.epochs if s.ramp_epochs is None else s.ramp_epochs
    return SoTeacherTask(model, len(splits.train), splits.num_classes, lipschitz=s.lipschitz,
                         lip_weight=s.lip_weight, consistency=s.consistency, cons_weight=s.cons_weight,
                         start_epoch=s.start_epoch, ramp_epochs=ramp)


register("teacher", "soteacher", make_soteacher_task, config=SoTeacherConfig,
         help="CE + Lipschitz + consistency to running per-sample targets", display_name="SoTeacher", order=50)
