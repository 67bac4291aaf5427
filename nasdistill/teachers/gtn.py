"""GTN: one generic teacher for a whole student pool (Binici et al. 2024).

The student pool is the weight-sharing supernet of a search space (the same one the search uses).
The supernet's layers are partitioned into ``gtn.blocks`` (4) blocks of about equal layer count; the
teacher's units (stem + stages) likewise. Branch i grafts supernet blocks i+1..4 onto teacher
block i (transform as in SFTN), so there are 3 branches. Gate logits phi are shared by label across
branches (``gtn.share_phi``).

Alternating optimization (``gtn.phi_every`` = 2):
- even iterations: sample a path, update teacher, transforms and the sampled supernet weights on

      L_CT = lam_T CE(z_T, y) + alpha mean_i KL(q_R^i || q_T) + lam_CE mean_i CE(z_R^i, y)

  (the SFTN form; alpha = 3 on CIFAR-100, 1 on ImageNet-200; softmax temperature 1);
- odd iterations: update only phi (Adam) on

      L_phi = lam_CE mean_i CE(z_R^i, y) - |alpha_phi| mean_i KL(q_R^i || q_T)

  with the teacher's features computed without gradient; the negative KL weight pushes phi toward
  students the teacher does not fit yet (exploration; an interpretation of the paper, see
  REFERENCE.md). Alone, that term collapses the gates onto the layer-skipping students; the
  exploration mechanisms of :mod:`.exploration` keep it balanced (an added
  ``lambda sum_l KL(p_l || u)``, an entropy floor and a cap on the parameter-free mass), and every
  epoch logs the entropy and parameter-free mass per label and the MACs of the trained students
  against the pool's, with a warning when the gates collapse anyway.

The phi step passes each branch's share of L_phi with its forward (``branch_loss``): the loss the
estimator's exact terms evaluate belongs to that forward alone (see :mod:`nasdistill.supernet`).
phi's gradient is exact only in those terms (candidates that change a layer's shape); elsewhere it
is ProxylessNAS's first-order, biased estimate.

Branch accuracies are measured with branch BatchNorm statistics recalibrated on training batches
for the branches' most likely paths (``gtn.branch_eval_batches``; restored after the evaluation).
Every epoch also logs the weight steps' own branch accuracies and entropies on the sampled paths
and the teacher's logit spread and entropies (:mod:`.branch_stats`).

Warm-up (the supplement's EfficientNet-b0 recipe): ``gtn.init_from`` starts the teacher from a
finished teacher run (:mod:`.runner`), ``gtn.freeze_teacher_epochs`` keeps it frozen while the
branches and phi train first (:class:`~.sftn.BranchTeacherTask`).

The saved ``model.safetensors`` is the plain teacher; branches + phi go to ``branches.safetensors``
and ``phi.json`` (with the gate statistics the report reads).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from ..atomic import write_json
from ..engine.task import StepOutput
from ..supernet import ArchGates, Supernet
from ..supernet.gates import frozen_bn_stats
from .exploration import ExplorationMonitor, clamp_logits, kl_to_uniform, project
from .grafting import (Branch, BranchedTeacher, Transform, block_output_shapes, kl_branch_teacher,
                       sftn_loss, split_even, teacher_blocks)
from ..registry import register
from .sftn import BranchTeacherTask, check_warmup_keys

@dataclass
class GTNConfig:
    """``gtn`` section."""

    __bounds__ = {"blocks": ">= 1", "alpha": ">= 0", "lam_t": ">= 0", "lam_ce": ">= 0",
                  "temperature": "> 0", "phi_alpha": ">= 0", "phi_ce": ">= 0", "phi_lr": "> 0",
                  "branches_per_step": ">= 1", "collapse_entropy": ">= 0, <= 1",
                  "collapse_mass": ">= 0, <= 1"}

    space: Optional[str] = None                # default: gtn_cifar on CIFAR/ImageNet, digits_small on digits
    blocks: int = 4
    partition: Optional[list[int]] = None      # supernet layers per block (default: even split)
    teacher_blocks: Optional[list[int]] = None # teacher units (stem + stages) per block
    alpha: float = 3.0                         # KL weight in L_CT (1.0 on ImageNet-200)
    lam_t: float = 1.0
    lam_ce: float = 1.0
    temperature: float = 1.0
    phi_alpha: float = 3.0                     # |negative KL weight| in L_phi
    phi_ce: float = 1.0
    phi_every: int = 2                         # one phi iteration out of every phi_every
    phi_lr: float = 1e-3
    phi_betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    mode: Literal["full", "two"] = "two"       # path-binarization estimator for phi
    share_phi: bool = True                     # one phi per label for all branches
    branches_per_step: Optional[int] = None    # run k random branches per iteration (None: all, as
                                               # in the paper); an unbiased estimate of the branch
                                               # mean that cuts the branches' cost by k / 3
    freeze_teacher_epochs: int = 0             # EfficientNet recipe: warm branches 60 epochs first
    init_from: Optional[str] = None            # a finished teacher run: start from its weights
    kd_temperature: float = 4.0                # KD's T, for the logged teacher_entropy_kd
    # balanced exploration of the pool (nasdistill.teachers.exploration; defaults from the ablation)
    explore_entropy_weight: float = 0.0        # lambda of lambda * sum_l KL(p_l || uniform) in L_phi
    entropy_floor: Optional[float] = 0.6       # keep H(p_l) >= entropy_floor * ln K (None: off)
    param_free_cap: Optional[float] = 0.5      # keep P(parameter-free choices) <= this (None: off)
    explore_uniform_mix: float = 0.0           # weight steps sample from (1 - eps) p + eps uniform
    logit_bound: Optional[float] = None        # clamp phi to [-b, b] (None: off)
    collapse_entropy: float = 0.5              # warn when H(p_l) < collapse_entropy * ln K ...
    collapse_mass: float = 0.6                 # ... or P(param-free) > collapse_mass, at an epoch end
    branch_eval_batches: int = 10              # BN recalibration batches for the branch accuracies

    def __post_init__(self):
        from ..config import require

        require(self.phi_every >= 2, "phi_every", f"must be >= 2 (one phi iteration every k), got {self.phi_every}")
        require(self.explore_entropy_weight >= 0, "explore_entropy_weight", "must be >= 0")
        require(self.entropy_floor is None or 0 <= self.entropy_floor < 1, "entropy_floor",
               f"is a fraction of ln K in [0, 1), got {self.entropy_floor}")
        require(self.param_free_cap is None or 0 < self.param_free_cap < 1, "param_free_cap",
               f"is a probability in (0, 1), got {self.param_free_cap}")
        require(0 <= self.explore_uniform_mix < 1, "explore_uniform_mix", "must be in [0, 1)")
        require(self.logit_bound is None or self.logit_bound > 0, "logit_bound", "must be > 0")
        require(self.branch_eval_batches >= 0, "branch_eval_batches", "must be >= 0")
        check_warmup_keys(self.freeze_teacher_epochs, self.kd_temperature)


def layer_blocks(n_layers: int, n_blocks: int, sizes=None) -> list[list[int]]:
    """Supernet layer indices per block (stem belongs to block 1)."""
    sizes = list(sizes) if sizes else split_even(n_layers, n_blocks)
    if sum(sizes) != n_layers or any(s < 1 for s in sizes) or len(sizes) != n_blocks:
        raise ValueError(f"gtn.partition {sizes} must have {n_blocks} positive entries summing to "
                         f"the {n_layers} layers of the space")
    out, start = [], 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


def build_gtn(teacher, space, input_size, cfg: GTNConfig, seed: int = 0):
    """The teacher with 3 supernet branches and the gates they share (or one per branch)."""
    t_blocks = teacher_blocks(teacher, cfg.blocks, cfg.teacher_blocks)
    s_blocks = layer_blocks(len(space.layers), cfg.blocks, cfg.partition)
    t_shapes = block_output_shapes(teacher, t_blocks, input_size)
    shared = ArchGates(space, cfg.mode, seed) if cfg.share_phi else None
    branches, gates = [], []
    for i in range(cfg.blocks - 1):
        start = s_blocks[i + 1][0]
        g = shared if shared is not None else ArchGates(space, cfg.mode, seed + i)
        suffix = Supernet(space, gates=g, start=start)
        ch, hw = suffix.input_state
        tc, thw = t_shapes[i]
        branches.append(Branch(Transform(tc, thw, ch, hw), suffix))
        if g not in gates:
            gates.append(g)
    return BranchedTeacher(teacher, t_blocks, branches), gates


class GTNTask(BranchTeacherTask):
    artifacts = BranchTeacherTask.artifacts + ("phi.json",)

    def __init__(self, branched, gates: list[ArchGates], cfg: GTNConfig):
        super().__init__(branched, cfg.freeze_teacher_epochs, cfg.kd_temperature)
        self.cfg, self.gates = cfg, gates
        first = min(b.suffix.start for b in branched.branches)
        space = gates[0].space
        #: labels the branches actually use (layers before the first branch never run)
        self.used_labels = [l for l in space.labels
                            if any(space.layer_label(i) == l for i in range(first, len(space.layers)))]
        phi_ids = {id(p) for g in gates for p in g.parameters()}
        self._weights = [p for p in branched.parameters() if id(p) not in phi_ids]
        self._branch_weights = [p for p in branched.branches.parameters() if id(p) not in phi_ids]
        k = cfg.branches_per_step
        if k is not None and not 1 <= k <= len(branched.branches):
            raise ValueError(f"gtn.branches_per_step must be in 1..{len(branched.branches)}, got {k}")
        self.branch_rng = torch.Generator().manual_seed(12345)
        self.phi_opt = torch.optim.Adam([p for g in gates for p in g.parameters()], lr=cfg.phi_lr,
                                        betas=tuple(float(b) for b in cfg.phi_betas))
        self.monitors = [ExplorationMonitor(space, self.used_labels, seed=k) for k in range(len(gates))]
        self._warned: set = set()

    def main_parameters(self):
        return self._weights

    def extra_optimizers(self):
        return {"phi": self.phi_opt}

    def is_phi_step(self, step: int) -> bool:
        return step % self.cfg.phi_every == self.cfg.phi_every - 1

    def _sample(self, arch_grad: bool):
        """Sample the paths, and the branches this iteration runs (None: all)."""
        for g, monitor in zip(self.gates, self.monitors):
            if arch_grad:
                g.sample(arch_grad=True)
            else:
                monitor.record(g.sample(mix=self.cfg.explore_uniform_mix))
        k, n = self.cfg.branches_per_step, len(self.branched.branches)
        if k is None or k == n:
            return None
        return sorted(torch.randperm(n, generator=self.branch_rng)[:k].tolist())

    def state_dict(self) -> dict:
        return {"branch_rng": self.branch_rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "branch_rng" in state:
            self.branch_rng.set_state(state["branch_rng"].cpu())

    def training_step(self, batch, ctx) -> StepOutput:
        x, y, _ = batch
        c = self.cfg
        if not self.is_phi_step(ctx.step):
            ids = self._sample(arch_grad=False)
            frozen = self.teacher_frozen(ctx.epoch)
            self.branched.teacher.train(not frozen)
            z_t, zs = self.branched(x, teacher_grad=not frozen, branch_ids=ids)
            loss, logs = sftn_loss(z_t, zs, y, 0.0 if frozen else c.lam_t, c.alpha, c.lam_ce,
                                   c.temperature)
            self.step_stats.add(z_t, zs, y, ids)
            return StepOutput(loss, z_t, logs)
        # phi iteration: teacher and weights fixed, gradient only to phi
        ids = self._sample(arch_grad=True)
        n = len(self.branched.branches) if ids is None else len(ids)

        def phi_loss(ce, kl):
            return c.phi_ce * ce - abs(c.phi_alpha) * kl

        def branch_share(z, z_teacher):
            # this branch's share of L_phi, for candidates that change a layer's shape (the
            # estimator compares their exact losses); it goes with this forward only
            return phi_loss(F.cross_entropy(z.float(), y),
                            kl_branch_teacher(z.float(), z_teacher.detach().float(), c.temperature)) / n

        for p in self._branch_weights:
            p.requires_grad_(False)
        try:
            # batch statistics as in the weight steps, but no running-statistics update: a phi
            # iteration changes phi and nothing else
            with frozen_bn_stats(self.branched):
                z_t, zs = self.branched(x, teacher_grad=False, branch_ids=ids, branch_loss=branch_share)
        finally:
            for p in self._branch_weights:
                p.requires_grad_(True)
        z_ref = z_t.detach().float()  # the teacher ran without gradient

        ce = torch.stack([F.cross_entropy(z.float(), y) for z in zs]).mean()
        kl = torch.stack([kl_branch_teacher(z.float(), z_ref, c.temperature) for z in zs]).mean()
        loss = phi_loss(ce, kl)
        logs = {"phi_ce": ce.detach(), "phi_kl": kl.detach()}
        if c.explore_entropy_weight:
            spread = sum(kl_to_uniform(g, self.used_labels) for g in self.gates)
            loss = loss + c.explore_entropy_weight * spread
            logs["phi_kl_uniform"] = spread.detach()
        return StepOutput(loss, None, logs, optimizer="phi")

    def after_optimizer_step(self, name: str, ctx) -> None:
        if name != "phi":
            return
        c = self.cfg
        for g, monitor in zip(self.gates, self.monitors):
            g.after_arch_step()
            if c.logit_bound is not None:
                clamp_logits(g, self.used_labels, c.logit_bound)
            if c.entropy_floor is not None or c.param_free_cap is not None:
                project(g, self.used_labels, c.entropy_floor, c.param_free_cap, monitor.param_free)

    @staticmethod
    def _argmax_paths(model):
        """Put every gate set of ``model`` (the task's branched teacher or a copy) on its argmax."""
        seen = {}
        for b in model.branches:
            seen[id(b.suffix.gates)] = b.suffix.gates
        for g in seen.values():
            g.use_path(g.export())

    def epoch_metrics(self, epoch: int, loaders) -> dict:
        c = self.cfg
        out = self.step_stats.metrics()
        out.update(self.branch_metrics(loaders, before_batch=self._argmax_paths,
                                       recalibrate_batches=c.branch_eval_batches))
        for k, (g, monitor) in enumerate(zip(self.gates, self.monitors)):
            prefix = "" if len(self.gates) == 1 else f"g{k}/"
            out.update(monitor.epoch_metrics(g, prefix))
            arch = g.export()
            out[f"{prefix}argmax_arch"] = json.dumps(arch)
            out[f"{prefix}argmax_arch_id"] = g.space.arch_id(arch)
            problems = monitor.collapsed(g, c.collapse_entropy, c.collapse_mass)
            out[f"{prefix}gates_collapsed"] = int(bool(problems))
            labels = {p.split()[0] for p in problems}
            if labels - self._warned:  # say it when a label collapses, not again every epoch
                print(f"warning: GTN gates collapsed after epoch {epoch + 1}: {'; '.join(problems)} "
                      "(see the report's \"GTN gate exploration\")", file=sys.stderr, flush=True)
            self._warned = labels
        return out

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        c = self.cfg
        record = []
        for g, monitor in zip(self.gates, self.monitors):
            stats = monitor.label_stats(g)
            record.append({"space": g.space.name, "labels_used_by_branches": self.used_labels,
                           "argmax_arch": g.export(), "entropy": g.entropy(),
                           "probabilities": g.probabilities(), "param_free": monitor.param_free,
                           "param_free_mass": {l: m for l, (_, _, m) in stats.items()},
                           "entropy_floor_frac": c.collapse_entropy, "mass_cap": c.collapse_mass,
                           "collapsed": monitor.collapsed(g, c.collapse_entropy, c.collapse_mass)})
        write_json(Path(run_dir) / "phi.json", record[0] if len(record) == 1 else record)


def resolve_space(cfg, splits):
    """The GTN space (``gtn.space``, or the data's default), adapted to the data."""
    from ..data.registry import default_space
    from ..space import load_space

    name = cfg.gtn.space or default_space(cfg.data.name)
    if name is None:
        raise ValueError(f"gtn.space is not set and data {cfg.data.name!r} has no default space; "
                         f"set gtn.space=gtn_cifar (or a .py file defining SPACE)")
    return load_space(name, splits.num_classes, splits.input_size)


def make_gtn_task(cfg, model, splits) -> GTNTask:
    space = resolve_space(cfg, splits)
    branched, gates = build_gtn(model, space, splits.input_size, cfg.gtn, cfg.seed)
    return GTNTask(branched, gates, cfg.gtn)


# The embedded main job's ~150 phi steps need a larger step than the paper's 1e-3 over 240 epochs
register("teacher", "gtn", make_gtn_task, config=GTNConfig,
         help="generic teacher conditioned on supernet students (GTN)", order=20,
         pipeline_defaults={"phi_lr": 0.02}, headline=True, uses_space=True, warm_startable=True,
         histories=("branches", "gates"))
