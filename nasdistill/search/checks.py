"""What a search refuses before any file of its run is written, once the data is loaded.

A target outside the range of costs the space can reach for the data's classes and input size
(:meth:`~nasdistill.space.SearchSpace.cost_range`, exact) could only give the smallest or the
largest network after the whole search, so it is refused at once, with the range; phi must be tuned
on a held-out split. Each message names the key the user wrote (``search.targets``,
``search.target``); the main job calls the same checks with its own keys.
"""
from __future__ import annotations

from ..config import ConfigError


def _number(x: float) -> str:
    return f"{x:,.0f}" if float(x) == int(x) else f"{x:,}"


def check_cost_targets(space, targets, metric: str, key: str) -> None:
    """Refuse a target of ``targets`` outside the ``metric`` range ``space`` reaches (``key``: the
    key the targets came from). Latency targets are not checked (their table decides)."""
    if metric not in ("macs", "params") or not targets:
        return
    bounds = space.cost_range()
    lo, hi = bounds[f"{metric}_min"], bounds[f"{metric}_max"]
    bad = [t for t in targets if not lo <= float(t) <= hi]
    if bad:
        c, h, w = space.input_size
        unit = "MACs" if metric == "macs" else "parameters"
        raise ConfigError.for_key(
            key, f"holds {', '.join(_number(t) for t in bad)}, outside the {unit} the space {space.name!r} "
                 f"can reach for this data ({c}x{h}x{w} inputs, {space.num_classes} classes): "
                 f"{_number(lo)} to {_number(hi)}; choose targets in that range")


def check_search_targets(cfg, splits) -> None:
    """`nasdistill search`: the space loads for the data, and ``search.target`` (or each of
    ``search.targets``) is a cost the space can reach (``cfg``: a SearchConfig)."""
    from ..space import load_space

    s = cfg.search
    space = load_space(s.space, splits.num_classes, splits.input_size)
    targets = list(getattr(s, "targets", None) or [])
    if targets:
        check_cost_targets(space, targets, s.cost_metric, "search.targets")
    if s.target is not None:
        check_cost_targets(space, [s.target], s.cost_metric, "search.target")


def check_held_out_split(cfg, splits, hint: str = "") -> None:
    """The search tunes phi on a held-out split: refuse data without one (never the test split)."""
    if len(splits.val) == 0 or splits.val is splits.test:
        raise ConfigError.for_key(
            "data.val_size", f"is needed: the search tunes phi on a held-out split, and data "
                             f"{cfg.data.name!r} has none of its own (phi must not be tuned on test data); "
                             f"set data.val_size, e.g. data.val_size=5000{hint}")


def check_search_data(cfg, splits) -> None:
    """What ``nasdistill search`` refuses once the data is loaded, before any file is written: a
    target the space cannot reach, data without a held-out split."""
    check_search_targets(cfg, splits)
    check_held_out_split(cfg, splits)


__all__ = ["check_cost_targets", "check_held_out_split", "check_search_data", "check_search_targets"]
