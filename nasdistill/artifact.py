"""An export folder as a file format: ``arch.json`` (how to rebuild the network), its weights,
and loading it back with no supernet class (:func:`load`, :func:`load_pt2`).

``arch.json`` holds either a search-space architecture (space spec, num_classes, input_size, arch,
arch_id, macs, params) or a zoo model (model name, num_classes, in_channels, input_size). The
``arch.json`` of a ``nasdistill search`` run directory has the same keys, so :func:`load` also reads
a search run directory directly. Writing the formats lives in :mod:`nasdistill.export`.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

FORMAT = "nasdistill-export"
FORMAT_VERSION = 1
FILES = {"safetensors": "model.safetensors", "pt2": "model.pt2", "onnx": "model.onnx"}
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
ONNX_HINT = "pip install 'nasdistill[onnx]'  (onnx, onnxscript, onnxruntime)"
# Files that mark a training run directory: an export must not overwrite its arch.json / weights.
RUN_MARKERS = ("config.yaml", "last.ckpt", "result.json", "metrics.jsonl")

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------- records
def load_space_for(spec: str, num_classes: int, input_size) -> Any:
    """``load_space(spec)`` adapted to ``num_classes`` / ``input_size``, as search builds it."""
    from .space import load_space

    input_size = tuple(int(v) for v in input_size)
    try:
        return load_space(spec, num_classes=num_classes, input_size=input_size)
    except ValueError as err:
        if "make_space" not in str(err):
            raise
    space = load_space(spec)  # a space without make_space(): only its own classes / input size
    if space.num_classes != num_classes or tuple(space.input_size) != input_size:
        raise ValueError(f"space {spec!r} is for {space.num_classes} classes and inputs "
                         f"{tuple(space.input_size)}, the record asks for {num_classes} classes and "
                         f"{input_size}; give the space a make_space(num_classes, input_size) function")
    return space


def space_record(space, arch: Mapping, spec: Optional[str] = None) -> dict:
    """The ``arch.json`` of ``space.build(arch)``: enough to rebuild it, plus its id and cost.

    ``spec`` is how :func:`~nasdistill.space.load_space` finds the space again (default
    ``space.name``, i.e. a module of ``search_spaces``; give the path of a ``.py`` file otherwise).
    """
    arch = space.validate(arch)
    cost = space.cost(arch)
    if spec is not None and (spec.endswith(".py") or os.sep in spec):
        spec = os.path.abspath(spec)  # works from any working directory
    return {"format": FORMAT, "version": FORMAT_VERSION, "kind": "space",
            "space": spec or space.name, "num_classes": int(space.num_classes),
            "input_size": [int(v) for v in space.input_size], "arch": arch,
            "arch_id": space.arch_id(arch), "macs": int(cost["macs"]), "params": int(cost["params"])}


def zoo_record(name: str, num_classes: int, input_size) -> dict:
    """The ``arch.json`` of ``create_model(name, num_classes, in_channels=input_size[0])``."""
    input_size = [int(v) for v in input_size]
    return {"format": FORMAT, "version": FORMAT_VERSION, "kind": "zoo", "model": name,
            "num_classes": int(num_classes), "in_channels": input_size[0], "input_size": input_size}


def normalize_record(record: Mapping) -> dict:
    """An ``arch.json`` mapping from an export record, a search ``arch.json`` or a ``model.json``
    (:mod:`nasdistill.engine.modelspec`); raises ``ValueError`` naming what is missing."""
    if not isinstance(record, Mapping):
        raise ValueError(f"a model record is a mapping, got {type(record).__name__}")
    kind = record.get("kind") or ("space" if "arch" in record else "zoo" if "model" in record else None)
    need = {"space": ("space", "arch", "num_classes", "input_size"),
            "zoo": ("num_classes", "input_size")}.get(kind)
    if need is None:
        raise ValueError("a model record needs kind 'space' (space, arch, num_classes, input_size) "
                         f"or 'zoo' (model, num_classes, input_size); got keys {sorted(record)}")
    missing = [k for k in need if k not in record]
    if kind == "zoo" and not (record.get("model") or record.get("name")):
        missing.append("model")
    if missing:
        raise ValueError(f"model record of kind {kind!r} misses {missing}; got keys {sorted(record)}")
    if kind == "space":
        out = dict(record)
        out.update(format=FORMAT, version=FORMAT_VERSION, kind="space")
        return out
    return zoo_record(record.get("model") or record["name"], record["num_classes"], record["input_size"])


def build_from_export_record(record: Mapping) -> nn.Module:
    """A fresh network described by an ``arch.json`` mapping (space build or model zoo)."""
    record = normalize_record(record)
    if record["kind"] == "space":
        space = load_space_for(record["space"], int(record["num_classes"]), record["input_size"])
        return space.build(record["arch"])
    from .models import create_model

    return create_model(record["model"], num_classes=int(record["num_classes"]),
                        in_channels=int(record["input_size"][0]))


def _measured_cost(model: nn.Module, input_size) -> dict:
    """MACs (FLOPs / 2 of one input) and parameters, measured on the network itself."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    x = torch.zeros(1, *input_size, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()  # a training-mode forward would update BatchNorm statistics
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return {"macs": int(counter.get_total_flops() // 2),
            "params": int(sum(t.numel() for t in model.parameters()))}


def _record_for(model, space, arch, record, example_input) -> dict:
    """Resolve the ``arch.json`` of ``model`` from the arguments of :func:`export_model`."""
    from .space import SearchSpace

    if record is not None:
        if space is not None or arch is not None:
            raise ValueError("export_model: give either record= or space= (+ arch=), not both")
        rec = normalize_record(record)
        if rec["kind"] == "space":
            space_obj = load_space_for(rec["space"], int(rec["num_classes"]), rec["input_size"])
            return space_record(space_obj, rec["arch"], spec=rec["space"])
        rec.update(_measured_cost(model, rec["input_size"]))
        return rec
    # a SpaceNet records its space name and arch
    arch = arch if arch is not None else getattr(model, "arch", None)
    space = space if space is not None else getattr(model, "space_name", None)
    if space is None or arch is None:
        raise ValueError(f"export_model: cannot tell how to rebuild a {type(model).__name__}: pass "
                         "space= and arch= for a search-space network, or record={'model': NAME, "
                         "'num_classes': N, 'input_size': [C, H, W]} for a zoo model")
    if isinstance(space, str):  # a spec: adapted to the model's classes and the example's size
        spec = space
        if example_input is not None:
            space = load_space_for(spec, int(model.classifier.out_features), tuple(example_input.shape[1:]))
        else:
            from .space import load_space
            space = load_space(spec)
        return space_record(space, arch, spec=spec)
    if not isinstance(space, SearchSpace):
        raise ValueError(f"export_model: space= is a SearchSpace or a space spec, got {type(space).__name__}")
    return space_record(space, arch)


# ---------------------------------------------------------------------------- files
@contextmanager
def _atomic_path(final: Path):
    """Yield a temporary path next to ``final``; rename it onto ``final`` when the block succeeds."""
    # the name keeps final's suffix (torch.export.save wants ".pt2"); the file is created by the
    # writer, with ordinary permissions
    tmp = final.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}"
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def _read_record(folder: Path) -> dict:
    path = folder / "arch.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: expected an export folder with arch.json "
                                "and model.safetensors (write one with `nasdistill export`)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not an export folder (expected "
                                "arch.json + model.safetensors, as `nasdistill export` writes)")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-export the model") from None
    try:
        return normalize_record(record)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_weights(model: nn.Module, path: PathLike, device="cpu") -> None:
    """Load ``path`` (safetensors) into ``model`` strictly; a clear error when missing or unfit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the export in {path.parent} is incomplete; "
                                "re-export the model")
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-export the model") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the network described by {path.parent / 'arch.json'}: "
                         f"{str(err).splitlines()[0]} {_key_diff(model, weights)}") from None


def _key_diff(model: nn.Module, weights: Mapping) -> str:
    expected, got = set(model.state_dict()), set(weights)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    return "(" + "; ".join(parts) + ")" if parts else "(shape mismatch)"


# ---------------------------------------------------------------------------- loading
def load(folder: PathLike, device="cpu") -> nn.Module:
    """The network of an export folder (or search run directory), weights loaded, in eval mode.

    Rebuilt from ``arch.json`` with ``space.build(arch)`` or the model zoo, then
    ``model.safetensors`` is loaded strictly. Raises ``FileNotFoundError`` / ``ValueError`` saying
    which file is missing or corrupt.
    """
    folder = Path(folder)
    record = _read_record(folder)
    model = build_from_export_record(record)
    load_weights(model, folder / FILES["safetensors"], device)
    return model.to(device).eval()


def load_pt2(folder: PathLike) -> nn.Module:
    """The ``torch.export`` program of an export folder, as a callable module."""
    path = Path(folder) / FILES["pt2"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: export the model with `nasdistill export` "
                                "(the pt2 export may have failed: see export.json)")
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # torch raises a variety of errors on a damaged archive
        raise ValueError(f"{path} is not a readable torch.export archive ({type(err).__name__}: "
                         f"{err}); re-export the model") from None
    return program.module()


def supernet_modules(model: nn.Module) -> list[str]:
    """Names of submodules whose class comes from ``nasdistill.supernet`` (none in an export)."""
    return [name or "<root>" for name, m in model.named_modules()
            if type(m).__module__.startswith("nasdistill.supernet")]
