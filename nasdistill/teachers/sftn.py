"""SFTN: a student-friendly teacher trained with branches of one given student (Park et al. 2021).

Teacher and student are split into ``sftn.blocks`` blocks; branch i grafts the student's blocks
i+1..N (deep copies, trained jointly) onto teacher block i through a transform. Loss: SFTN eq. (3)
(:func:`~.grafting.sftn_loss`), CIFAR defaults lam_T = 1, lam_KL = 3, lam_CE = 1, tau~ = 1
(ImageNet: lam_KL = 1). Branch gradients reach the teacher. After training only the plain teacher
is saved as ``model.safetensors``; the branches go to ``branches.safetensors``.

Pretrained teachers (section 4.6): ``sftn.init_from`` starts from a finished teacher run and
``sftn.freeze_teacher_epochs`` trains the branches alone first (the paper: 30 of 60 epochs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


from ..atomic import atomic_path
from ..models.config import ModelConfig
from ..engine.task import StepOutput, TrainTask
from .branch_eval import branch_accuracies
from .branch_stats import BranchStepStats
from .grafting import (Branch, BranchedTeacher, StudentSuffix, Transform, blocks_from_sizes,
                       block_output_shapes, sftn_loss, split_even, teacher_blocks)
from ..registry import register


@dataclass
class SFTNConfig:
    """``sftn`` section: the student whose branches are grafted, and the loss weights."""

    __bounds__ = {"blocks": ">= 1", "lam_t": ">= 0", "lam_kl": ">= 0", "lam_ce": ">= 0",
                  "temperature": "> 0"}

    student: ModelConfig = field(default_factory=lambda: ModelConfig(name="resnet8"))
    blocks: int = 3
    teacher_blocks: Optional[list[int]] = None   # units (stem + stages) per block; default even
    student_blocks: Optional[list[int]] = None
    lam_t: float = 1.0
    lam_kl: float = 3.0
    lam_ce: float = 1.0
    temperature: float = 1.0
    freeze_teacher_epochs: int = 0               # warm the branches with a frozen teacher first
    init_from: Optional[str] = None              # a finished teacher run: start from its weights
    kd_temperature: float = 4.0                  # KD's T, for the logged teacher_entropy_kd

    def __post_init__(self):
        check_warmup_keys(self.freeze_teacher_epochs, self.kd_temperature)


def check_warmup_keys(freeze_teacher_epochs: int, kd_temperature: float) -> None:
    """Range checks of the warm-up and logging keys SFTN and GTN share."""
    from ..config import require

    require(freeze_teacher_epochs >= 0, "freeze_teacher_epochs", f"must be >= 0, got {freeze_teacher_epochs}")
    require(kd_temperature > 0, "kd_temperature", f"must be > 0, got {kd_temperature}")


class BranchTeacherTask(TrainTask):
    """Shared by SFTN and GTN: eval/final weights are the plain teacher; branches saved apart.

    Warm-up (``freeze_teacher_epochs`` = N): for the first N epochs the teacher is frozen -- run in
    eval mode (its BatchNorm statistics unchanged) and without gradient, so its parameters get no
    gradient and the optimizer skips them (no weight decay, no momentum) -- while the branches
    train on its features; then everything trains jointly. The weight steps' branch and teacher
    statistics are logged every epoch (:mod:`.branch_stats`).
    """

    compilable = False
    artifacts = ("branches.safetensors",)
    ce_log = "teacher_ce"
    logit_std_metric = "teacher_logit_std"

    def __init__(self, branched: BranchedTeacher, freeze_teacher_epochs: int = 0,
                 kd_temperature: float = 4.0):
        super().__init__(branched)
        self.freeze_teacher_epochs = freeze_teacher_epochs
        self.step_stats = BranchStepStats(len(branched.branches), kd_temperature)

    @property
    def branched(self) -> BranchedTeacher:
        return self.model

    def eval_model(self):
        return self.branched.teacher

    def final_weights(self) -> dict:
        return self.branched.teacher.state_dict()

    def teacher_frozen(self, epoch: int) -> bool:
        return epoch < self.freeze_teacher_epochs

    def branch_metrics(self, loaders, before_batch=None, recalibrate_batches: int = 0) -> dict:
        """Accuracy of every branch on the validation split (the test split when there is none),
        with the branches' BatchNorm recalibrated on training batches when asked
        (:func:`~.branch_eval.branch_accuracies`)."""
        loader = loaders.val if loaders.val is not None else loaders.test
        if loader is None:
            return {}
        accs = branch_accuracies(self.branched, loader, before_batch, loaders.train, recalibrate_batches)
        return {f"branch{i + 1}_acc": a for i, a in enumerate(accs)}

    def save_artifacts(self, run_dir: Path) -> None:
        from safetensors.torch import save_file

        state, seen = {}, set()
        for k, v in self.branched.branches.state_dict().items():
            # phi shared by several branches appears under each of them: store it once
            if v.numel() and v.untyped_storage().data_ptr() in seen:
                continue
            seen.add(v.untyped_storage().data_ptr())
            state[k] = v.detach().cpu().contiguous()
        with atomic_path(Path(run_dir) / "branches.safetensors") as tmp:
            save_file(state, str(tmp))


class SFTNTask(BranchTeacherTask):
    def __init__(self, branched, cfg: SFTNConfig):
        super().__init__(branched, cfg.freeze_teacher_epochs, cfg.kd_temperature)
        self.cfg = cfg

    def training_step(self, batch, ctx) -> StepOutput:
        x, y, _ = batch
        frozen = self.teacher_frozen(ctx.epoch)
        self.branched.teacher.train(not frozen)
        z_t, zs = self.branched(x, teacher_grad=not frozen)
        c = self.cfg
        loss, logs = sftn_loss(z_t, zs, y, 0.0 if frozen else c.lam_t, c.lam_kl, c.lam_ce, c.temperature)
        self.step_stats.add(z_t, zs, y)
        return StepOutput(loss, z_t, logs)

    def epoch_metrics(self, epoch: int, loaders) -> dict:
        return {**self.step_stats.metrics(), **self.branch_metrics(loaders)}


def graft_student(teacher, student, input_size, n_blocks, t_sizes=None, s_sizes=None) -> BranchedTeacher:
    """Graft copies of ``student``'s blocks 2..N onto ``teacher``'s blocks 1..N-1."""
    t_blocks = teacher_blocks(teacher, n_blocks, t_sizes)
    n_s = len(student.units())
    s_blocks = blocks_from_sizes(s_sizes if s_sizes else split_even(n_s, n_blocks), n_s)
    t_shapes = block_output_shapes(teacher, t_blocks, input_size)
    s_shapes = block_output_shapes(student, s_blocks, input_size)
    branches = []
    for i in range(n_blocks - 1):
        (tc, thw), (sc, shw) = t_shapes[i], s_shapes[i]
        branches.append(Branch(Transform(tc, thw, sc, shw), StudentSuffix(student, s_blocks[i + 1][0])))
    return BranchedTeacher(teacher, t_blocks, branches)


def make_sftn_task(cfg, model, splits) -> SFTNTask:
    from ..network.record import ModelRecord

    c = cfg.sftn
    student = ModelRecord.from_config(c.student, splits.num_classes, splits.input_size, "sftn.student").build()
    branched = graft_student(model, student, splits.input_size, c.blocks, c.teacher_blocks, c.student_blocks)
    return SFTNTask(branched, c)


register("teacher", "sftn", make_sftn_task, config=SFTNConfig,
         help="student-friendly teacher with branches of one student (SFTN)", order=30,
         needs_student=True, warm_startable=True, histories=("branches",))
