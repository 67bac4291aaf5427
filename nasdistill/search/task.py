"""The ProxylessNAS search as a :class:`~nasdistill.engine.task.TrainTask`.

Each training step is a weight step of one sampled path on a train batch (main optimizer). After
``warmup_epochs``, every ``arch_every`` weight steps an architecture step follows on a batch of the
held-out split: a path is sampled with binary gates, and phi (Adam, lr 1e-3, betas (0, 0.999))
steps on the cost-aware loss (``mul#log`` or ``add#linear`` of :func:`~nasdistill.supernet.cost_penalty`).
Evaluation runs the argmax path. At the end the argmax architecture is extracted with copied
weights and its BatchNorm statistics are recalibrated on training batches.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.task import StepOutput, TrainTask
from ..supernet import CostModel, Supernet, cost_penalty, recalibrate_bn


class ArgmaxPath(nn.Module):
    """Evaluates the supernet on its current argmax architecture."""

    def __init__(self, supernet: Supernet):
        super().__init__()
        self.supernet = supernet

    def forward(self, x):
        self.supernet.gates.use_path(self.supernet.export())
        return self.supernet(x)


class SearchTask(TrainTask):
    compilable = False

    def __init__(self, supernet: Supernet, cfg, val_loader, train_loader, cost_model: CostModel):
        super().__init__(supernet)
        if cfg.target is None:
            raise ValueError("search.target is required: the cost target in search.cost_metric units "
                             "(e.g. search.target=2000000 for 2 MMACs)")
        if cfg.arch_every < 1:
            raise ValueError(f"search.arch_every must be >= 1, got {cfg.arch_every}")
        self.cfg, self.val_loader, self.train_loader = cfg, val_loader, train_loader
        self.cost_model = cost_model
        self.arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=cfg.arch_lr,
                                         betas=tuple(float(b) for b in cfg.arch_betas), weight_decay=cfg.arch_weight_decay)
        self.val_epoch, self.val_pos = 0, 0
        self._val_iter = None
        self.student = None

    @property
    def supernet(self) -> Supernet:
        return self.model

    def main_parameters(self):
        return self.supernet.weight_parameters()

    def extra_optimizers(self):
        return {"arch": self.arch_opt}

    def training_step(self, batch, ctx) -> StepOutput:
        x, y, _ = batch
        warm = ctx.epoch < self.cfg.warmup_epochs
        self.supernet.sample(uniform=warm and self.cfg.uniform_warmup)
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        return StepOutput(loss, logits, {"ce": loss.detach()})

    def extra_steps(self, ctx):
        if ctx.epoch < self.cfg.warmup_epochs or (ctx.step_in_epoch + 1) % self.cfg.arch_every:
            return []
        x, y, _ = self._next_val_batch()
        self.supernet.sample(arch_grad=True)
        ce = F.cross_entropy(self.supernet(x), y)
        expected = self.cost_model.expected(self.supernet.gates)
        loss = cost_penalty(ce, expected, self.cfg.target, self.cfg.penalty, self.cfg.alpha,
                            self.cfg.beta, self.cfg.lam)
        return [StepOutput(loss, None, {"arch_ce": ce.detach(), "expected_cost": expected.detach()},
                           optimizer="arch")]

    def after_optimizer_step(self, name: str, ctx) -> None:
        if name == "arch":
            self.supernet.gates.after_arch_step()

    def _next_val_batch(self):
        """Endless pass over the held-out split; position is checkpointed (exact resume)."""
        if self._val_iter is None:
            self.val_loader.set_epoch(self.val_epoch)
            self._val_iter = iter(self.val_loader)
            for _ in range(self.val_pos):
                next(self._val_iter)
        try:
            batch = next(self._val_iter)
        except StopIteration:
            self.val_epoch, self.val_pos = self.val_epoch + 1, 0
            self.val_loader.set_epoch(self.val_epoch)
            self._val_iter = iter(self.val_loader)
            batch = next(self._val_iter)
        self.val_pos += 1
        return batch

    def eval_model(self) -> nn.Module:
        return ArgmaxPath(self.supernet)

    def epoch_metrics(self, epoch: int) -> dict:
        sn = self.supernet
        arch = sn.export()
        out = {"expected_cost": float(self.cost_model.expected(sn.gates).detach()),
               "argmax_cost": self.cost_model.of_arch(arch),
               "argmax_arch_id": sn.space.arch_id(arch),
               "argmax_arch": json.dumps(arch, sort_keys=False)}
        out.update({f"phi_entropy/{l}": h for l, h in sn.gates.entropy().items()})
        return out

    def state_dict(self) -> dict:
        return {"val_epoch": self.val_epoch, "val_pos": self.val_pos}

    def load_state_dict(self, state: dict) -> None:
        self.val_epoch, self.val_pos = int(state["val_epoch"]), int(state["val_pos"])
        self._val_iter = None

    def final_weights(self) -> dict:
        """The extracted argmax student, BatchNorm recalibrated on training batches."""
        arch = self.supernet.export()
        self.supernet.set_arch(None)
        student = self.supernet.extract(arch)
        self.train_loader.set_epoch(0)
        recalibrate_bn(student, self.train_loader, self.cfg.recalibrate_batches)
        self.student, self.arch = student, arch
        return student.state_dict()

    def result_extras(self) -> dict:
        arch = self.arch if self.student is not None else self.supernet.export()
        space = self.supernet.space
        cost = space.cost(arch)
        extras = {"arch": arch, "arch_id": space.arch_id(arch), "space": space.name,
                  "macs": cost["macs"], "params": cost["params"],
                  "cost_metric": self.cfg.cost_metric, "target": self.cfg.target,
                  "target_macs": self.cfg.target if self.cfg.cost_metric == "macs" else None,
                  "cost": self.cost_model.of_arch(arch),
                  "cost_over_target": self.cost_model.of_arch(arch) / self.cfg.target,
                  "phi": {l: dict(p) for l, p in self.supernet.gates.probabilities().items()}}
        return extras

    def save_artifacts(self, run_dir: Path) -> None:
        arch = self.arch if self.student is not None else self.supernet.export()
        space = self.supernet.space
        record = {"space": space.name, "num_classes": space.num_classes,
                  "input_size": list(space.input_size), "arch": arch, "arch_id": space.arch_id(arch)}
        tmp = Path(run_dir) / "arch.json.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(Path(run_dir) / "arch.json")
