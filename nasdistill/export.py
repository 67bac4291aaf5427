"""Standalone exports of a network: ``arch.json`` + safetensors, ``torch.export`` (.pt2), ONNX.

An export folder::

    arch.json          how to rebuild the network: a search-space architecture (space spec,
                       num_classes, input_size, arch, arch_id, macs, params) or a zoo model
                       (model name, num_classes, in_channels, input_size)
    model.safetensors  the weights (strict state dict of the rebuilt network)
    model.pt2          torch.export program of the network in eval mode (dynamic batch size)
    model.onnx         the same graph as ONNX (only with the ``onnx`` extra installed)
    export.json        per format: file, size, and the max |difference| to the original on a batch

Every artifact is reloaded and run against the original network before :func:`export_model`
returns, and each file is written to a temporary name and renamed, so a failed export leaves no
half-written file. :func:`load` rebuilds the network from ``arch.json`` + ``model.safetensors``
with ``space.build(arch)`` (or the model zoo): no supernet class is involved.

The ``arch.json`` of a ``nasdistill search`` run directory has the same keys, so :func:`load` also
reads a search run directory directly.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
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


# ---------------------------------------------------------------------------- export
def onnx_available() -> Optional[str]:
    """``None`` when the ONNX exporter and runtime import, else why not."""
    import importlib

    for name in ONNX_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            return f"{name} is not installed ({err.__class__.__name__}); {ONNX_HINT}"
    return None


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"output shape {tuple(a.shape)} differs from the original's {tuple(b.shape)}")
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=1 << 16)


def _export_program(model: nn.Module, x: torch.Tensor):
    """``torch.export`` with a dynamic batch size, or a fixed one if the model does not allow it."""
    try:
        return torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim()},)), True
    except Exception:  # data-dependent shapes etc.: a fixed batch size is still a usable export
        return torch.export.export(model, (x,)), False


@contextmanager
def _quiet_onnx():
    """The dynamo ONNX exporter logs each step and warns about absent torchvision ops."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> str:
    """Write ``model`` to ``path`` as ONNX; dynamo exporter first, TorchScript exporter second."""
    errors = []
    with _quiet_onnx():
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                                        input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: _batch_dim()},))
            program.save(str(path), external_data=False)
            return "dynamo"
        except Exception as err:
            errors.append(f"dynamo exporter: {_brief(err)}")
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"},
                                                                     "logits": {0: "batch"}})
            return "torchscript"
        except Exception as err:
            errors.append(f"TorchScript exporter: {_brief(err)}")
    raise RuntimeError("; ".join(errors))


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.detach().cpu().float().numpy()})[0])


def _check_batches(model: nn.Module, input_size, example_input, seed: int):
    p = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    if example_input is None:
        example_input = torch.randn(2, *input_size, generator=gen)
    example_input = example_input.to(device=p.device, dtype=p.dtype)
    check = torch.randn(5, *example_input.shape[1:], generator=gen).to(device=p.device, dtype=p.dtype)
    return example_input, check


def export_model(model: nn.Module, out_dir: PathLike, *, space=None, arch: Optional[Mapping] = None,
                 record: Optional[Mapping] = None, example_input: Optional[torch.Tensor] = None,
                 onnx: Union[str, bool] = "auto", seed: int = 0, verbose: bool = True) -> dict:
    """Write ``model`` to ``out_dir`` in every format, reload each and compare with ``model``.

    Args:
        model: a standalone network (e.g. ``space.build(arch)``, ``Supernet.extract(arch)`` or a
            zoo model); exported in eval mode (its mode is restored afterwards).
        space, arch: the :class:`~nasdistill.space.SearchSpace` (or spec: module name or ``.py``
            path) and architecture the model was built from. For a ``SpaceNet`` both default to
            what the model records (the space by name, adapted to ``example_input``).
        record: instead of ``space``/``arch``: a zoo model ``{"model": NAME, "num_classes": N,
            "input_size": [C, H, W]}`` or a ``model.json`` record of a training run.
        example_input: the batch ``torch.export`` traces (default: 2 random inputs of the
            recorded input size); outputs are compared on it and on a second random batch.
        onnx: ``"auto"`` (write ``model.onnx`` when the ``onnx`` extra imports, else say why
            not), ``True`` (require it: ``ImportError`` when missing) or ``False``.

    Returns (and writes as ``export.json``) ``{"max_abs_diff": {format: float | None}, "files":
    {...}, "skipped": {...}, "errors": {...}, ...}``: a format that was skipped or failed has
    ``None`` and a reason, and its file is absent.
    """
    if onnx not in ("auto", True, False):
        raise ValueError(f"export_model: onnx must be 'auto', True or False, got {onnx!r}")
    if supernet_modules(model):
        raise ValueError(f"export_model: {type(model).__name__} contains supernet modules "
                         f"{supernet_modules(model)[:3]}; export supernet.extract(arch) instead")
    out = Path(out_dir)
    if out.is_dir() and any((out / m).exists() for m in RUN_MARKERS):
        found = ", ".join(m for m in RUN_MARKERS if (out / m).exists())
        raise FileExistsError(f"{out} holds a training run ({found}); export into another folder "
                              "(e.g. --out RUN/export)")
    onnx_missing = onnx_available() if onnx is not False else None
    if onnx is True and onnx_missing:
        raise ImportError(f"ONNX export requested but {onnx_missing}")
    rec = _record_for(model, space, arch, record, example_input)
    input_size = tuple(rec["input_size"])
    if example_input is not None and tuple(example_input.shape[1:]) != input_size:
        raise ValueError(f"example_input has shape {tuple(example_input.shape)}, the model record says "
                         f"inputs are {input_size}")
    probe = build_from_export_record(rec)  # fail before writing anything when they disagree
    try:
        probe.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as err:
        what = rec.get("arch") or rec.get("model")
        raise ValueError(f"export_model: the model does not match its record ({what}): "
                         f"{str(err).splitlines()[0]} {_key_diff(probe, model.state_dict())}") from None
    del probe
    out.mkdir(parents=True, exist_ok=True)

    stale = out / "export.json"  # present only once an export has been checked to the end
    if stale.exists():
        stale.unlink()

    was_training = model.training
    model.eval()
    diffs: dict = {}
    skipped: dict = {}
    errors: dict = {}
    extra: dict = {}
    try:
        x, check = _check_batches(model, input_size, example_input, seed)
        with torch.no_grad():
            ref_x, ref_check = model(x), model(check)

        def compare(run, dynamic: bool = True) -> float:
            with torch.no_grad():
                diff = _max_diff(run(x), ref_x)
                return max(diff, _max_diff(run(check), ref_check)) if dynamic else diff

        # arch.json + weights are the export itself: any failure here raises
        diffs["safetensors"] = _write_weights(model, rec, out, compare, x.device)
        try:
            diffs["pt2"], extra["pt2_dynamic_batch"] = _write_pt2(model, x, out, compare)
        except Exception as err:  # whatever torch.export raises: report it, keep the other formats
            diffs["pt2"], errors["pt2"] = None, _brief(err)
        if onnx is False or onnx_missing:
            diffs["onnx"], skipped["onnx"] = None, onnx_missing or "disabled (--no-onnx)"
        else:
            try:
                diffs["onnx"], extra["onnx_exporter"] = _write_onnx(model, x, out, compare)
            except Exception as err:
                diffs["onnx"], errors["onnx"] = None, _brief(err)
    finally:
        model.train(was_training)

    for fmt, name in FILES.items():  # a file left by an earlier export would not match this model
        if diffs[fmt] is None and (out / name).exists():
            (out / name).unlink()
    result = {"folder": str(out), "kind": rec["kind"], "model": rec.get("arch_id") or rec.get("model"),
              "macs": rec.get("macs"), "params": rec.get("params"), "input_size": list(input_size),
              "batches": [int(x.shape[0]), int(check.shape[0])], "max_abs_diff": diffs,
              "files": {fmt: {"file": name, "bytes": (out / name).stat().st_size}
                        for fmt, name in FILES.items() if diffs[fmt] is not None},
              "skipped": skipped, "errors": errors, **extra}
    _write_json(out / "export.json", result)
    if verbose:
        print(format_result(result))
    return result


def _brief(err: Exception, limit: int = 400) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {first}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _write_weights(model, rec, out: Path, compare, device) -> float:
    """model.safetensors + arch.json, checked by rebuilding through :func:`load`."""
    from safetensors.torch import save_file

    with _atomic_path(out / FILES["safetensors"]) as tmp:
        # clone: safetensors refuses tensors that share storage
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
                  str(tmp), metadata={"format": FORMAT})
    _write_json(out / "arch.json", rec)
    reloaded = load(out, device=device)
    if supernet_modules(reloaded):
        raise RuntimeError(f"reloaded model contains supernet modules {supernet_modules(reloaded)}")
    return compare(reloaded)


def _write_pt2(model, x, out: Path, compare) -> tuple[float, bool]:
    program, dynamic = _export_program(model, x)
    with _atomic_path(out / FILES["pt2"]) as tmp:
        torch.export.save(program, str(tmp))
        diff = compare(torch.export.load(str(tmp)).module(), dynamic)
    return diff, dynamic


def _write_onnx(model, x, out: Path, compare) -> tuple[float, str]:
    with _atomic_path(out / FILES["onnx"]) as tmp:
        exporter = _export_onnx(model, x, tmp)
        diff = compare(lambda t: _run_onnx(tmp, t))
    return diff, exporter


def format_result(result: Mapping) -> str:
    """A short table: one line per format with its max |difference| or why it is missing."""
    lines = [f"exported {result['kind']} model {result['model']} to {result['folder']} "
             f"(MACs {result['macs']:,}, params {result['params']:,})"
             if result.get("macs") is not None else
             f"exported {result['kind']} model {result['model']} to {result['folder']}"]
    for fmt, name in FILES.items():
        diff = result["max_abs_diff"].get(fmt)
        if diff is not None:
            size = result["files"][fmt]["bytes"]
            lines.append(f"  {name:<18} max |diff| {diff:.3e}  ({size / 1024:.1f} KiB)")
        elif fmt in result["skipped"]:
            lines.append(f"  {name:<18} skipped: {result['skipped'][fmt]}")
        else:
            lines.append(f"  {name:<18} FAILED: {result['errors'].get(fmt)}")
    return "\n".join(lines)
