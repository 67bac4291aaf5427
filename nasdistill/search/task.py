"""The ProxylessNAS search as a :class:`~nasdistill.engine.task.TrainTask`, for one cost target or
several sharing one supernet.

Each training step is a weight step of one sampled path on a train batch (main optimizer). After
``warmup_epochs``, every ``arch_every`` weight steps an architecture step follows on a batch of the
held-out split: a path is sampled with binary gates, and phi (Adam, lr 1e-3, betas (0, 0.999))
steps on the cost-aware loss (``mul#log``, ``add#linear`` or ``add#abs`` of
:func:`~nasdistill.search.penalty.cost_penalty`).

Several targets (``search.targets``) share the supernet's weights; each target keeps its own phi
(:class:`~nasdistill.supernet.ArchGates`), Adam and cost penalty (:mod:`.targets`). Weight step t
samples its path from the phi of target ``t mod K``; the phi steps go to the targets in turn, so a
search with K targets costs about one search (each target gets 1/K of the phi steps).

Evaluation (``val_acc``) runs the first target's argmax path; the metrics hold every target's
expected and argmax cost and phi entropy. At the end (:meth:`SearchTask.on_fit_end`) each
target's student -- the most probable architecture within ``target * (1 +- search.tolerance)``
(:mod:`.students`) -- is extracted with copied weights, on the supernet's device, and its BatchNorm
statistics are recalibrated on training batches. One target (``search.target``): the run's
weights and ``model.json`` are that student's. Several: each student goes to
``RUN_DIR/target_<T>/``, and the run's ``model.safetensors`` holds the trained supernet (weights
and every target's phi).
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from ..models.batchnorm import recalibrate_bn
from ..engine.task import StepOutput, TrainTask
from ..network.record import ModelRecord
from ..supernet import ArchGates, Supernet
from ..space.cost import CostModel
from .penalty import cost_penalty
from .config import target_folder
from .convergence import convergence, entropy_fraction
from .students import (MARKER, constrained_choice, remove_stale_students, serialize_weights, student_entry,
                       write_student)
from .targets import SearchModel


class ArgmaxPath(nn.Module):
    """Evaluates the supernet on the current argmax architecture of its gates (of target ``k`` of
    a :class:`~.targets.SearchModel`)."""

    def __init__(self, model, k: int = 0):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        supernet = self.model.use(self.k) if isinstance(self.model, SearchModel) else self.model
        supernet.gates.use_path(supernet.export())
        return supernet(x)


class SearchTask(TrainTask):
    compilable = False

    def __init__(self, supernet: Supernet, cfg, val_loader, cost_model: CostModel, seed: int = 0):
        targets = cfg.target_list()
        if not targets:
            raise ValueError("search.target is required: the cost target in search.cost_metric units "
                             "(e.g. search.target=2000000 for 2 MMACs), or search.targets=[...] for several")
        # target k samples with seed + k (one target: the supernet's own gates, seeded with ``seed``)
        gates = [supernet.gates] + [ArchGates(supernet.space, cfg.mode, seed + k) for k in range(1, len(targets))]
        super().__init__(SearchModel(supernet, gates))
        self.cfg, self.val_loader = cfg, val_loader
        self.targets = targets
        self.multi = cfg.targets is not None  # students in target folders (even for one target)
        self.cost_model = cost_model
        betas = tuple(float(b) for b in cfg.arch_betas)
        self.arch_opts = [torch.optim.Adam(g.parameters(), lr=cfg.arch_lr, betas=betas,
                                           weight_decay=cfg.arch_weight_decay) for g in gates]
        self.val_epoch, self.val_pos, self.arch_steps = 0, 0, 0
        self._val_iter = None
        #: per target: its most probable architecture after each epoch with phi steps (arch ids)
        self.mode_history: list[list[str]] = [[] for _ in targets]
        self.students: list = []    # per target: {"student", "entry", "data", "sha256"} after on_fit_end

    @property
    def supernet(self) -> Supernet:
        return self.model.supernet

    def _opt_name(self, k: int) -> str:
        return "arch" if len(self.targets) == 1 else f"arch_{k}"

    def main_parameters(self):
        return self.model.weight_parameters()

    @property
    def artifacts(self) -> tuple:
        """Several targets: each student's folder ``target_<T>/`` (written by save_artifacts)."""
        return tuple(target_folder(t) for t in self.targets) if self.multi else ()

    def extra_optimizers(self):
        return {self._opt_name(k): opt for k, opt in enumerate(self.arch_opts)}

    def training_step(self, batch, ctx) -> StepOutput:
        x, y, _ = batch
        warm = ctx.epoch < self.cfg.warmup_epochs
        supernet = self.model.use(ctx.step % len(self.targets))  # the targets' phi in turn
        supernet.sample(uniform=warm and self.cfg.uniform_warmup)
        logits = supernet(x)
        loss = F.cross_entropy(logits, y)
        return StepOutput(loss, logits, {"ce": loss.detach()})

    def extra_steps(self, ctx):
        if ctx.epoch < self.cfg.warmup_epochs or (ctx.step_in_epoch + 1) % self.cfg.arch_every:
            return []
        k = self.arch_steps % len(self.targets)  # one target's phi step, in turn
        self.arch_steps += 1
        x, y, _ = self._next_val_batch()
        supernet = self.model.use(k)
        supernet.sample(arch_grad=True)
        c, target = self.cfg, self.targets[k]

        def penalised(ce, expected, second):
            return cost_penalty(ce, expected, target, c.penalty, c.alpha, c.beta, c.lam, second)

        expected, second = self.cost_model.moments(supernet.gates)
        e, e2 = expected.detach(), second.detach()
        # the per-path loss the estimator compares where a candidate changes the layer's shape,
        # given with this forward (it belongs to this target's step, whatever runs next)
        logits = supernet(x, path_loss=lambda out: penalised(F.cross_entropy(out.float(), y), e, e2))
        ce = F.cross_entropy(logits.float(), y)
        loss = penalised(ce, expected, second)
        logs = {"arch_ce": ce.detach()}
        if len(self.targets) == 1:
            logs["expected_cost"] = e
        return [StepOutput(loss, None, logs, optimizer=self._opt_name(k))]

    def after_optimizer_step(self, name: str, ctx) -> None:
        if name.startswith("arch"):
            self.model.gates[0 if name == "arch" else int(name.split("_")[1])].after_arch_step()

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
        return ArgmaxPath(self.model, 0)

    def epoch_metrics(self, epoch: int, loaders) -> dict:
        """Per target: expected and argmax cost, phi entropy per label, and the convergence
        figures (:mod:`.convergence`): the architecture entropy and the student it would export
        now, recorded for every epoch with phi steps."""
        out = {}
        space, c = self.supernet.space, self.cfg
        for k, target in enumerate(self.targets):
            gates = self.model.gates[k]
            arch = gates.export()
            tag = "" if not self.multi else f"/{target_folder(target)}"
            entropies = gates.entropy()
            h, frac = entropy_fraction(entropies, {l: len(gates.choices[l]) for l in gates.labels})
            choice = constrained_choice(space, gates.probabilities(), self.cost_model, target, c.tolerance)
            band_id = space.arch_id(choice.arch)
            if epoch >= c.warmup_epochs:
                self.mode_history[k].append(space.arch_id(arch))
            out.update({f"expected_cost{tag}": float(self.cost_model.expected(gates).detach()),
                        f"argmax_cost{tag}": self.cost_model.of_arch(arch),
                        f"argmax_arch_id{tag}": space.arch_id(arch),
                        f"argmax_arch{tag}": json.dumps(arch, sort_keys=False),
                        f"arch_entropy{tag}": h, f"arch_entropy_frac{tag}": frac,
                        f"band_arch_id{tag}": band_id, f"band_prob{tag}": choice.prob})
            out.update({f"phi_entropy{tag}/{l}": v for l, v in entropies.items()})
        return out

    def convergence_of(self, k: int, choice) -> dict:
        """Target ``k``'s convergence verdict (:func:`.convergence.convergence`) now; ``choice``:
        the :class:`~nasdistill.space.ConstrainedArch` it exports."""
        gates = self.model.gates[k]
        frac = entropy_fraction(gates.entropy(), {l: len(gates.choices[l]) for l in gates.labels})[1]
        lo, hi = choice.band
        return convergence(self.mode_history[k], frac, choice.prob, self.cfg.converge_window,
                           self.cfg.converge_entropy, lo <= choice.argmax_cost <= hi, choice.argmax_cost)

    def state_dict(self) -> dict:
        return {"val_epoch": self.val_epoch, "val_pos": self.val_pos, "arch_steps": self.arch_steps,
                "mode_history": json.dumps(self.mode_history)}

    def load_state_dict(self, state: dict) -> None:
        self.val_epoch, self.val_pos = int(state["val_epoch"]), int(state["val_pos"])
        self.arch_steps = int(state.get("arch_steps", 0))
        if "mode_history" in state:
            self.mode_history = json.loads(state["mode_history"])
        self._val_iter = None

    # ------------------------------------------------------------------ the students
    def on_fit_end(self, loaders) -> None:
        """Per target: choose the student within the band, extract it (on the supernet's device),
        recalibrate its BatchNorm and evaluate it on the test split."""
        from ..engine.trainer import evaluate

        space, c = self.supernet.space, self.cfg
        device = next(self.supernet.parameters()).device
        self.students = []
        for k, target in enumerate(self.targets):
            supernet = self.model.use(k)
            supernet.set_arch(None)
            phi = supernet.gates.probabilities()
            choice = constrained_choice(space, phi, self.cost_model, target, c.tolerance)
            entry = student_entry(space, choice, target, c.tolerance, c.cost_metric, phi)
            entry["convergence"] = self.convergence_of(k, choice)
            student = supernet.extract(entry["arch"]).to(device)
            loaders.train.set_epoch(0)
            recalibrate_bn(student, loaders.train, c.recalibrate_batches)
            entry["student_test_acc_before_training"] = (
                evaluate(student, loaders.test, device)["top1"] if loaders.test is not None else None)
            data, digest = serialize_weights(student.state_dict())
            self.students.append({"student": student, "entry": entry, "data": data, "sha256": digest})
        self.model.use(0)

    def _need_students(self) -> None:
        if not self.students:
            raise RuntimeError("SearchTask: no student extracted yet (on_fit_end() comes first)")

    def final_weights(self) -> dict:
        """One target: the extracted student's weights; several: the trained supernet (weights and
        every target's phi)."""
        self._need_students()
        if not self.multi:
            return self.students[0]["student"].state_dict()
        return {k: v for k, v in self.model.state_dict().items() if not k.endswith("_extra_state")}

    def model_record(self):
        if self.multi:
            return None  # the run's weights are the supernet's: each student has its own folder
        return ModelRecord.of_space(self.supernet.space, self.students[0]["entry"]["arch"])

    def result_extras(self) -> dict:
        self._need_students()
        space = self.supernet.space
        if not self.multi:
            return dict(self.students[0]["entry"])
        rows = [{"folder": target_folder(t), "weights_sha256": s["sha256"],
                 **{k: v for k, v in s["entry"].items() if k not in ("phi", "space", "cost_metric")}}
                for t, s in zip(self.targets, self.students)]
        return {"space": space.name, "cost_metric": self.cfg.cost_metric, "targets": self.targets,
                "tolerance": self.cfg.tolerance, "shared": True, "students": rows}

    def save_artifacts(self, run_dir) -> None:
        """Several targets: each student's folder ``target_<T>/`` (result.json written last)."""
        if not self.multi:
            return
        space = self.supernet.space
        for target, s in zip(self.targets, self.students):
            result = {**s["entry"], "weights_sha256": s["sha256"], MARKER: ".."}
            write_student(run_dir / target_folder(target), ModelRecord.of_space(space, s["entry"]["arch"]),
                          s["data"], result)
        remove_stale_students(run_dir, {target_folder(t) for t in self.targets})
