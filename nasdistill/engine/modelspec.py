"""Build a model from a :class:`~nasdistill.engine.config.ModelConfig`, and rebuild a run's model.

A run directory holds ``model.json`` (:func:`model_record`: zoo name or space + arch, classes,
input size) next to ``model.safetensors``; :func:`load_model_record` turns the pair back into the
trained network, e.g. for ``nasdistill distill teacher=RUN_DIR``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ..models.staged import StagedModel


def resolve_arch(arch: Any) -> dict:
    """An architecture mapping from a mapping, a JSON string, or a JSON file path.

    A file may hold the mapping itself or ``{"arch": mapping}`` (as search writes ``arch.json``).
    """
    if isinstance(arch, str):
        text = arch.strip()
        if os.path.isfile(arch):
            with open(arch) as f:
                arch = json.load(f)
        elif text.startswith("{"):
            try:
                arch = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"model.arch: not valid JSON ({err}): {arch!r}") from None
        else:
            raise ValueError(f"model.arch: {arch!r} is neither an existing JSON file nor a JSON mapping")
    if isinstance(arch, dict) and isinstance(arch.get("arch"), dict):
        arch = arch["arch"]
    if not isinstance(arch, dict):
        raise ValueError(f"model.arch must be a mapping label -> choice, got {type(arch).__name__}")
    return dict(arch)


def _space_spec(space: str) -> str:
    """Spaces given by file are recorded by absolute path, so the record works from any cwd."""
    return os.path.abspath(space) if space.endswith(".py") or os.sep in space else space


def model_record(model_cfg, num_classes: int, input_size) -> dict:
    """What ``model.json`` holds: enough to rebuild the model without the original config."""
    rec = {"num_classes": int(num_classes), "input_size": [int(v) for v in input_size]}
    if model_cfg.space is not None:
        if model_cfg.arch is None:
            raise ValueError(f"model.space={model_cfg.space!r} needs model.arch (a mapping, JSON, or arch.json path)")
        rec.update(kind="space", space=_space_spec(model_cfg.space), arch=resolve_arch(model_cfg.arch))
    else:
        rec.update(kind="zoo", name=model_cfg.name)
        if getattr(model_cfg, "options", None):
            rec["options"] = dict(model_cfg.options)
    return rec


def build_from_record(record: dict) -> StagedModel:
    """A fresh (untrained) model described by a :func:`model_record` mapping."""
    num_classes = record["num_classes"]
    input_size = tuple(record["input_size"])
    if record.get("kind") == "space":
        from ..space import load_space
        space = load_space(record["space"], num_classes=num_classes, input_size=input_size)
        return space.build(record["arch"])
    if record.get("kind") == "zoo":
        try:
            from ..models import create_model
        except ImportError:
            raise ValueError(f"model.name={record['name']!r} needs the model zoo (nasdistill.models."
                             "create_model), which is not available; use model.space + model.arch") from None
        return create_model(record["name"], num_classes=num_classes, in_channels=input_size[0],
                            **record.get("options", {}))
    raise ValueError(f"model record has unknown kind {record.get('kind')!r}; expected 'zoo' or 'space'")


def build_model(model_cfg, num_classes: int, input_size) -> StagedModel:
    """The network ``model_cfg`` names, adapted to ``num_classes`` and ``input_size`` (C, H, W)."""
    return build_from_record(model_record(model_cfg, num_classes, input_size))


def save_model_record(run_dir, record: dict) -> None:
    """Write ``record`` as ``run_dir/model.json``."""
    with open(Path(run_dir) / "model.json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def load_model_record(run_dir, weights: Optional[str] = "model.safetensors", device="cpu") -> StagedModel:
    """Rebuild the model of ``run_dir`` (``model.json``) and load its trained weights."""
    run_dir = Path(run_dir)
    path = run_dir / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a finished training run "
                                "(train one with `nasdistill teacher CONFIG --out-dir DIR`)")
    with open(path) as f:
        model = build_from_record(json.load(f))
    if weights is not None:
        wpath = run_dir / weights
        if not wpath.is_file():
            raise FileNotFoundError(f"{wpath} does not exist: the run in {run_dir} has not finished; "
                                    "continue it with --resume")
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(wpath), device=str(device)))
    return model.to(device)
