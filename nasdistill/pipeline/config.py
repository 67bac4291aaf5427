"""Configuration of the main job, `nasdistill run`.

The defaults are the embedded default: scikit-learn digits, the ``digits_small`` space, students
searched at three MACs targets plus three sampled ones, a CE and a GTN teacher (resnet8, 15 epochs)
trained once per seed, KD of every student from each teacher and the students alone (5 epochs),
over two seeds -- under two minutes on 2 CPU cores: it shows every stage, not what a teacher is
worth (``examples/synthetic_gtn.yaml`` is the benchmark where teachers differ). ``examples/cifar100_gtn.yaml``, ``examples/imagenet200_gtn.yaml`` and
``examples/synthetic_gtn.yaml`` hold other settings.

The teacher and distillation sections come from the method registries: every registered teacher
method has its section under ``teachers.`` (``teachers.gtn.alpha``) and every distillation method
under ``distill.`` (``distill.dkd.beta``), so a method added to nasdistill is usable here at once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from ..distill import DISTILLERS
from ..config import ConfigError
from ..data.config import DataConfig
from ..models.config import ModelConfig
from ..engine.config import TrainConfig
from ..registry import sectioned_config
from ..search.config import SearchSection
from ..teachers import TEACHERS, pipeline_section_defaults, reference_teacher


def _search_train() -> TrainConfig:
    return TrainConfig(epochs=8, batch_size=64, lr=0.05, weight_decay=4e-5, schedule="cosine",
                       nesterov=True, milestones=[])


def _search_section() -> SearchSection:
    # Chosen by measurement (examples/search_convergence.py, README "Does the search converge?"):
    # the short CPU search converges -- its most probable architecture stable over the last phi
    # epochs, the architecture entropy at half of ln N or below -- on digits and on the synthetic
    # task, for every target and seed tried, with a large phi step (0.3: ProxylessNAS' 1e-3 is
    # tuned for hundreds of epochs), every candidate's gradient at each phi step (``full``) and a
    # penalty on the root-mean-square distance of the sampled architectures' cost from the target
    # (``add#rms``: the distribution's mass, not only its mean, goes to the target). The earlier
    # setting (two, 0.02, add#abs) converged for none of the targets.
    return SearchSection(space="", mode="full", warmup_epochs=2, arch_lr=0.3, penalty="add#rms", lam=1.0)


@dataclass
class PipelineSearch:
    """Students discovered by ProxylessNAS at each MACs target (an empty list: none). The targets
    share one supernet training, each with its own phi (``search.search.shared=false``: one search
    per target); each target's student is the most probable architecture within
    ``target * (1 +- search.search.tolerance)``."""

    targets: list[float] = field(default_factory=lambda: [600_000.0, 1_500_000.0, 3_000_000.0])
    train: TrainConfig = field(default_factory=_search_train)
    search: SearchSection = field(default_factory=_search_section)

    def __post_init__(self):
        if self.search.targets is not None:
            raise ConfigError.for_key("search.targets", "is set by the main job: give the MACs targets "
                                      "with 'search.targets' (the list one level up)")


@dataclass
class PipelineStudents:
    """Random students besides the searched ones: ``random_per_target`` per search target, drawn
    uniformly from the networks whose MACs lie in that target's band (the baseline of the report's
    "Did the search help?"), and ``sampled`` drawn from the whole pool."""

    sampled: int = 3
    random_per_target: int = 1
    sample_seed: int = 1000


def _teacher_train() -> TrainConfig:
    # Gradient clipping at norm 5, for every teacher alike: without it, branch-trained teachers
    # larger than the pool's students (vgg8, resnet8x4) blow up in their first epochs and never
    # recover (examples/branch_teacher_stability.py, README "Branch-trained teachers that train
    # stably"); it never binds for a teacher that trains stably (resnet8: bit-identical runs).
    return TrainConfig(epochs=15, batch_size=64, lr=0.1, weight_decay=5e-4, schedule="cosine",
                       milestones=[], clip_grad_norm=5.0)





@dataclass
class PipelineTeachersBase:
    """Teachers trained once per seed; ``methods`` picks them (ce and gtn by default).

    ``seeds``: the teacher seeds (null: the distillation seeds). The distillation of seed s uses
    the teacher of seed s, or the single teacher seed when there is one.

    ``init_from_ce``: every GTN and SFTN teacher of seed s starts from the CE teacher of seed s
    (trained first; the papers' warm-up, with ``teachers.gtn.freeze_teacher_epochs`` /
    ``teachers.sftn.freeze_teacher_epochs``); the teacher table then counts the CE epochs in
    those teachers' cost.

    ``calibrate``: every distillation from a teacher divides the teacher's logits by its
    temperature-scaling temperature T_cal, fitted on the validation split (Guo et al. 2017), the
    same rule for every teacher; the teacher table shows T_cal either way.
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="resnet8"))
    methods: list[str] = field(default_factory=lambda: ["ce", "gtn"])
    seeds: Optional[list[int]] = None
    train: TrainConfig = field(default_factory=_teacher_train)
    student_from_search: bool = True        # teachers that graft a student (SFTN) take the first searched one
    init_from_ce: bool = False              # GTN / SFTN teachers start from the CE teacher of their seed
    calibrate: bool = False                 # distill from each teacher's logits / T_cal (fitted on val)

    def __post_init__(self):
        reference = reference_teacher()
        if self.init_from_ce and reference not in self.methods:
            raise ConfigError.for_key("init_from_ce", f"needs the {reference} teachers it starts from: add "
                                      f"{reference} to teachers.methods (now {self.methods}), or set it to false")


def _distill_train() -> TrainConfig:
    return TrainConfig(epochs=5, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine",
                       milestones=[])


@dataclass
class PipelineDistillBase:
    """Every student distilled from every teacher with every method, over ``seeds``."""

    methods: list[str] = field(default_factory=lambda: ["kd"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    baseline: bool = True                   # each student trained alone (CE) as the reference
    train: TrainConfig = field(default_factory=_distill_train)
    #: compute each teacher's logits once per run instead of at every step: ``auto`` does it for
    #: the methods that read only logits (KD, DKD) when the data is not augmented (the same image,
    #: hence the same logits, at every epoch); true asks for it (refused where it cannot hold)
    cache_teacher_logits: Union[bool, Literal["auto"]] = "auto"

    def caches_logits(self, method: str, augmented: bool) -> bool:
        """Whether the distillations with ``method`` use cached teacher logits."""
        from ..distill.registry import logits_only

        if method == "none" or self.cache_teacher_logits is False:
            return False
        if self.cache_teacher_logits == "auto":
            return logits_only(method) and not augmented
        return True


@dataclass
class PipelineExport:
    enabled: bool = True
    onnx: Union[bool, Literal["auto"]] = "auto"


@dataclass
class RaySection:
    """Where ``backend=ray`` runs the job's runs (each run a Ray task; the ``ray`` extra).

    ``address``: ``local`` starts a Ray instance on this machine for the job (no dashboard, the
    loopback only); ``auto`` or ``HOST:PORT`` joins a running cluster (``ray start --head`` /
    ``ray start --address=HOST:PORT`` on the nodes). ``gpus_per_run`` (fractional: 0.25 puts four
    runs on a GPU) and ``cpus_per_run`` are each run's Ray resources. The job's folder must lie on
    storage every node sees: the job checks it on every node before the first run."""

    __bounds__ = {"gpus_per_run": ">= 0", "cpus_per_run": "> 0"}

    address: str = "local"
    gpus_per_run: float = 0.0
    cpus_per_run: float = 1.0


@dataclass
class PipelineConfigBase:
    """`nasdistill run [CONFIG]`: search -> teachers -> distill -> report -> export."""

    __bounds__ = {"threads": ">= 1"}

    seed: int = 0
    out_dir: str = "runs/nasdistill"
    about: Optional[str] = None             # a paragraph for the report's "Task" section
    space: str = "digits_small"
    data: DataConfig = field(default_factory=DataConfig)
    threads: Optional[int] = 1              # torch CPU threads per process (tiny models: 1 is fastest)
    workers: Union[int, Literal["auto"]] = 2  # runs in parallel (processes); auto: per GPU x runs_per_gpu, or per CPU
    runs_per_gpu: int = 1                   # runs sharing one GPU at a time (local workers pinned to GPUs)
    backend: Literal["local", "ray"] = "local"  # local: worker processes here; ray: Ray tasks (section ray)
    ray: RaySection = field(default_factory=RaySection)
    search: PipelineSearch = field(default_factory=PipelineSearch)
    students: PipelineStudents = field(default_factory=PipelineStudents)
    export: PipelineExport = field(default_factory=PipelineExport)

    def check(self) -> None:
        for m in self.teachers.methods:
            if m not in TEACHERS:
                raise ConfigError.for_key("teachers.methods", f"names an unknown teacher {m!r}; "
                                          f"choose from {TEACHERS.names()}")
        for m in self.distill.methods:
            if m not in DISTILLERS or m == "none":
                raise ConfigError.for_key("distill.methods", f"names an unknown method {m!r}; choose "
                                          f"from {[n for n in DISTILLERS if n != 'none']} (the baseline is "
                                          "distill.baseline)")
        if self.search.search.target is not None:
            raise ConfigError.for_key("search.search.target", "is not a key of the main job: set the targets "
                                      "with 'search.targets' (a list), one search per target")
        _check_targets(self.search.targets)
        if self.search.search.space not in ("", self.space):
            raise ConfigError.for_key("search.search.space", f"({self.search.search.space!r}) differs from "
                                      f"'space' ({self.space!r}); set only 'space'")
        if not self.distill.seeds:
            raise ConfigError.for_key("distill.seeds", "is empty: give at least one seed")
        seeds = self.teacher_seeds()
        if not seeds:
            raise ConfigError.for_key("teachers.seeds", "is empty: give at least one seed (or null)")
        if len(seeds) > 1:
            missing = [s for s in self.distill.seeds if s not in seeds]
            if missing:
                raise ConfigError.for_key("teachers.seeds", f"({seeds}) lacks the distillation seeds {missing}: "
                                          "the distillation of seed s uses the teacher of seed s; add them, "
                                          "or give one teacher seed for all")
        if self.workers != "auto" and self.workers < 1:
            raise ConfigError.for_key("workers", f"must be >= 1 or auto, got {self.workers}")
        if self.runs_per_gpu < 1:
            raise ConfigError.for_key("runs_per_gpu", f"must be >= 1, got {self.runs_per_gpu}")
        for name in TEACHERS.having("uses_space"):
            section = getattr(self.teachers, name, None)
            if section is not None and section.space not in (None, self.space):
                raise ConfigError.for_key(f"teachers.{name}.space", f"({section.space!r}) differs from 'space' "
                                          f"({self.space!r}): {TEACHERS.meta(name, 'display_name', name.upper())} "
                                          "uses the main job's space; set only 'space'")
        if self.students.sampled < 0:
            raise ConfigError.for_key("students.sampled", f"must be >= 0, got {self.students.sampled}")
        if self.students.random_per_target < 0:
            raise ConfigError.for_key("students.random_per_target",
                                      f"must be >= 0, got {self.students.random_per_target}")
        if not self.search.targets and self.students.sampled == 0:
            raise ConfigError.for_key("students.sampled", "is 0 and search.targets is empty: the job has no "
                                      "students; give targets or a number of sampled students")

    def teacher_seeds(self) -> list[int]:
        return list(self.teachers.seeds) if self.teachers.seeds is not None else list(self.distill.seeds)

    def teacher_seed_for(self, seed: int) -> int:
        """The seed of the teacher a distillation of ``seed`` uses."""
        seeds = self.teacher_seeds()
        return seeds[0] if len(seeds) == 1 else seed


def _check_targets(targets) -> None:
    """``search.targets``: MACs targets > 0, each once (the range the space reaches is checked
    with the data: :mod:`nasdistill.pipeline.checks`)."""
    bad = [t for t in targets if not t > 0]
    if bad:
        raise ConfigError.for_key("search.targets", f"must hold MACs targets > 0, got {bad}")
    seen = [int(t) for t in targets]
    if len(set(seen)) != len(seen):
        raise ConfigError.for_key("search.targets", f"{list(targets)} repeats a target; give each once")


_CLASSES: dict = {}


def pipeline_config_class() -> type:
    """The main job's config class for the methods registered now (see the module docstring)."""
    teachers = sectioned_config("PipelineTeachers", PipelineTeachersBase, TEACHERS,
                                pipeline_section_defaults())
    distill = sectioned_config("PipelineDistill", PipelineDistillBase, DISTILLERS)
    key = (teachers, distill)
    if key not in _CLASSES:
        _CLASSES[key] = dataclasses.make_dataclass(
            "PipelineConfig",
            [("teachers", teachers, field(default_factory=teachers)),
             ("distill", distill, field(default_factory=distill))],
            bases=(PipelineConfigBase,),
            namespace={"__doc__": PipelineConfigBase.__doc__, "__module__": __name__})
    return _CLASSES[key]


PipelineConfig = pipeline_config_class()
