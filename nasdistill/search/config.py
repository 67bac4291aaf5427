"""Configuration of `nasdistill search`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..data.config import DataConfig
from ..engine.config import TrainConfig


@dataclass
class SearchSection:
    """ProxylessNAS search knobs (defaults from the ProxylessNAS paper and code).

    ``target``: one student, written into the run directory. ``targets``: a student per target in
    ``RUN_DIR/target_<T>/``, from one supernet training shared by all targets (each with its own
    phi), or from a separate run per target with ``shared: false``. Each student is the most
    probable architecture under its phi whose cost lies within ``target * (1 +- tolerance)``.

    Convergence (:mod:`nasdistill.search.convergence`): a target's search converged when its most
    probable architecture was the same over the last ``converge_window`` of the phi epochs (at
    least two epochs) and the entropy of its architecture distribution fell to
    ``converge_entropy`` of the entropy of the uniform distribution over the space's label
    assignments, or below; whether that architecture lies in the target's band is reported beside.

    ``target`` and ``targets`` say the same thing two ways: a command-line override of one replaces
    the other one of the config file (:func:`nasdistill.config.load_config`).
    """

    __bounds__ = {"arch_weight_decay": ">= 0", "alpha": ">= 0", "beta": ">= 0", "lam": ">= 0"}

    __exclusive__ = (("target", "targets"),)

    space: str = "digits_small"
    mode: Literal["full", "two"] = "full"          # path binarization estimator
    warmup_epochs: int = 5                          # weight-only epochs before phi is updated
    uniform_warmup: bool = True                     # sample paths uniformly during warm-up
    arch_every: int = 1                             # one phi step every k weight steps
    arch_lr: float = 1e-3
    arch_betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    arch_weight_decay: float = 0.0
    cost_metric: Literal["macs", "params", "latency"] = "macs"
    target: Optional[float] = None                  # cost target in cost_metric units (one student)
    targets: Optional[list[float]] = None           # several targets: one student each, in RUN_DIR/target_<T>/
    shared: bool = True                             # targets share one supernet training (false: a run each)
    tolerance: float = 0.10                         # export the most probable arch within target*(1 +- tol)
    latency_table: Optional[str] = None             # JSON from `nasdistill bench latency`
    penalty: Literal["mul#log", "add#linear", "add#abs", "add#rms"] = "mul#log"
    alpha: float = 0.2                              # mul#log: CE * alpha * (log E / log T)^beta
    beta: float = 0.3
    lam: float = 0.1                                # add#linear: CE + lam * (E - T) / T; add#abs: |E - T|;
                                                    # add#rms: sqrt(E[(c - T)^2])
    recalibrate_batches: int = 20                   # BN recalibration of the extracted student
    converge_window: float = 0.25                   # converged: the most probable arch unchanged over this
                                                    # fraction of the phi epochs (at least 2) ...
    converge_entropy: float = 0.5                   # ... and H(p) <= this fraction of ln(#architectures)

    def __post_init__(self):
        from ..config import require

        require(self.target is None or self.target > 0, "target", f"must be > 0, got {self.target}")
        if self.targets is not None:
            require(self.target is None, "targets", f"and search.target ({self.target}) are both set: give one "
                    "target with search.target, or several with search.targets and search.target=null")
            require(len(self.targets) > 0, "targets", "is empty: give at least one cost target")
            bad = [t for t in self.targets if not t > 0]
            require(not bad, "targets", f"must all be > 0, got {bad}")
            folders = [target_folder(t) for t in self.targets]
            require(len(set(folders)) == len(folders), "targets",
                    f"{self.targets} repeats a target (each gets its folder {', '.join(folders)})")
        require(0.0 <= self.tolerance < 1.0, "tolerance", f"must be in [0, 1), got {self.tolerance}")
        require(self.arch_every >= 1, "arch_every", f"must be >= 1, got {self.arch_every}")
        require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        require(self.arch_lr > 0, "arch_lr", f"must be > 0, got {self.arch_lr}")
        require(self.recalibrate_batches >= 0, "recalibrate_batches", "must be >= 0")
        require(0 < self.converge_window <= 1, "converge_window", f"is a fraction of the phi epochs in (0, 1], "
                f"got {self.converge_window}")
        require(0 < self.converge_entropy <= 1, "converge_entropy", f"is a fraction of ln(#architectures) in "
                f"(0, 1], got {self.converge_entropy}")

    def target_list(self) -> list[float]:
        """The cost targets: ``targets``, or ``[target]`` (empty when neither is set)."""
        if self.targets is not None:
            return [float(t) for t in self.targets]
        return [] if self.target is None else [float(self.target)]


def target_folder(target: float) -> str:
    """The folder of a target's student inside a search run directory: ``target_<int(T)>``."""
    return f"target_{int(target)}"


def _search_train() -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=64, lr=0.05, weight_decay=4e-5, schedule="cosine",
                       nesterov=True, milestones=[])


def _search_data() -> DataConfig:
    return DataConfig(name="digits")


@dataclass
class SearchConfig:
    """`nasdistill search CONFIG`: weight-sharing supernet + cost-aware ProxylessNAS search."""

    seed: int = 0
    out_dir: str = "runs/search"
    data: DataConfig = field(default_factory=_search_data)
    train: TrainConfig = field(default_factory=_search_train)
    search: SearchSection = field(default_factory=SearchSection)
