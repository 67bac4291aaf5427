"""The ProxylessNAS search as a :class:`~nasdistill.engine.task.TrainTask`.

Each training step is a weight step of one sampled path on a train batch (main optimizer). After
``warmup_epochs``, every ``arch_every`` weight steps an architecture step follows on a batch of the
held-out split: a path is sampled with binary gates, and phi (Adam, lr 1e-3, betas (0, 0.999))
steps on the cost-aware loss (``mul#log`` or ``add#linear`` of :func:`~nasdistill.supernet.cost_penalty`).
Evaluation runs the argmax path. At the end (:meth:`SearchTask.on_fit_end`) the argmax
architecture is extracted with copied weights, on the supernet's device, and its BatchNorm
statistics are recalibrated on training batches; the run's weights and ``model.json`` are that
student's.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.task import StepOutput, TrainTask
from ..record import ModelRecord
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

    def __init__(self, supernet: Supernet, cfg, val_loader, cost_model: CostModel):
        super().__init__(supernet)
        if cfg.target is None:
            raise ValueError("search.target is required: the cost target in search.cost_metric units "
                             "(e.g. search.target=2000000 for 2 MMACs)")
        self.cfg, self.val_loader = cfg, val_loader
        self.cost_model = cost_model
        self.arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=cfg.arch_lr,
                                         betas=tuple(float(b) for b in cfg.arch_betas), weight_decay=cfg.arch_weight_decay)
        self.val_epoch, self.val_pos = 0, 0
        self._val_iter = None
        self.student, self.arch, self.student_test_acc = None, None, None

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
        c = self.cfg

        def penalised(ce, expected):
            return cost_penalty(ce, expected, c.target, c.penalty, c.alpha, c.beta, c.lam)

        ce = F.cross_entropy(self.supernet(x).float(), y)
        expected = self.cost_model.expected(self.supernet.gates)
        loss = penalised(ce, expected)
        e = expected.detach()
        # the per-path loss the estimator compares where a candidate changes the layer's shape
        self.supernet.path_loss = lambda logits: penalised(F.cross_entropy(logits.float(), y), e)
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

    def epoch_metrics(self, epoch: int, loaders) -> dict:
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

    def on_fit_end(self, loaders) -> None:
        """Extract the argmax student (on the supernet's device) and recalibrate its BatchNorm."""
        from ..engine.trainer import evaluate

        arch = self.supernet.export()
        self.supernet.set_arch(None)
        device = next(self.supernet.parameters()).device
        student = self.supernet.extract(arch).to(device)
        loaders.train.set_epoch(0)
        recalibrate_bn(student, loaders.train, self.cfg.recalibrate_batches)
        self.student, self.arch = student, arch
        if loaders.test is not None:
            self.student_test_acc = evaluate(student, loaders.test, device)["top1"]

    def final_weights(self) -> dict:
        """The extracted student's weights (after :meth:`on_fit_end`)."""
        if self.student is None:
            raise RuntimeError("SearchTask.final_weights() before on_fit_end(): no student extracted yet")
        return self.student.state_dict()

    def model_record(self) -> ModelRecord:
        return ModelRecord.of_space(self.supernet.space, self.arch)

    def result_extras(self) -> dict:
        arch = self.arch if self.arch is not None else self.supernet.export()
        space = self.supernet.space
        cost = space.cost(arch)
        of_arch = self.cost_model.of_arch(arch)
        return {"arch": arch, "arch_id": space.arch_id(arch), "space": space.name,
                "macs": cost["macs"], "params": cost["params"],
                "cost_metric": self.cfg.cost_metric, "target": self.cfg.target,
                "target_macs": self.cfg.target if self.cfg.cost_metric == "macs" else None,
                "cost": of_arch, "cost_over_target": of_arch / self.cfg.target,
                "student_test_acc_before_training": self.student_test_acc,
                "phi": {l: dict(p) for l, p in self.supernet.gates.probabilities().items()}}
