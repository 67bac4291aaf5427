"""What the main job and `nasdistill search` check before any file of a run is written.

A value the configuration alone can refuse is refused when it is read (``PipelineConfig.check``);
these checks need the loaded data: the space adapted to the data's classes and input size, and
whether each cost target lies in the range of costs that space can reach
(:meth:`~nasdistill.space.SearchSpace.cost_range`, exact). A target outside it could only give the
smallest or the largest network after the whole search, so it is refused at once, with the range.
Each message names the key the user wrote (``search.targets``, ``search.target``).
"""
from __future__ import annotations

from ..config import ConfigError
from ..search.checks import check_cost_targets, check_held_out_split, check_search_targets  # noqa: F401


def check_job_inputs(cfg, splits):
    """The main job's checks of the loaded data (before its folder is touched); return the space.

    The space must load for the data, every ``search.targets`` entry be a MACs cost the space can
    reach, the search have a held-out split, and each distillation method's configuration pass its
    own check (e.g. ``distill.cache_teacher_logits`` with a feature method)."""
    from ..space import load_space

    space = load_space(cfg.space, splits.num_classes, splits.input_size)
    check_cost_targets(space, cfg.search.targets, "macs", "search.targets")
    if cfg.search.targets:
        check_held_out_split(cfg, splits, ", or search.targets=[] to skip the search")
    _check_distill_sections(cfg, space, augmented(cfg, splits))
    if cfg.teachers.calibrate and (len(splits.val) == 0 or splits.val is splits.test):
        raise ConfigError.for_key("teachers.calibrate", f"needs a validation split (each teacher's "
                                  f"temperature is fitted on it, never on the test split), and data "
                                  f"{cfg.data.name!r} has none of its own; set data.val_size, e.g. "
                                  "data.val_size=5000")
    return space


def augmented(cfg, splits) -> bool:
    """Whether the training images are randomly augmented (``data.augment``, else the dataset's
    default)."""
    return bool(splits.augment if cfg.data.augment is None else cfg.data.augment)


def _check_distill_sections(cfg, space, augmented_data: bool) -> None:
    """Each distillation method's own check, on a stand-in student (the real ones come later)."""
    from ..distill import DISTILLERS, distill_config_class
    from ..models.config import ModelConfig
    from ..registry import config_sections

    cls = distill_config_class()
    sections = {name: getattr(cfg.distill, name) for name, _ in config_sections(DISTILLERS)
                if hasattr(cfg.distill, name)}
    student = ModelConfig(space=cfg.space, arch=dict(space.sample(seed=0)))
    for method in cfg.distill.methods:
        dcfg = cls(seed=cfg.distill.seeds[0], out_dir="", teacher="<teacher run>", method=method,
                   student=student, data=cfg.data, train=cfg.distill.train,
                   cache_teacher_logits=cfg.distill.caches_logits(method, augmented_data),
                   **sections)
        try:
            dcfg.check()
        except ConfigError as err:
            text = str(err).replace("cache_teacher_logits=", "distill.cache_teacher_logits=")
            raise ConfigError(f"distill.methods={cfg.distill.methods}: {text}", "distill.methods") from None


__all__ = ["augmented", "check_cost_targets", "check_job_inputs", "check_search_targets"]
