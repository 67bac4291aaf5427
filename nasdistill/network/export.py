"""Standalone exports of a network: ``model.json`` + safetensors, ``torch.export`` (.pt2), ONNX.

An export folder::

    model.json         how to rebuild the network, as data (a :class:`~nasdistill.network.ModelRecord`:
                       a zoo model, or a search-space architecture with the space described)
    code/              only for spaces with custom ops: their source, imported only on request
    model.safetensors  the weights (strict state dict of the rebuilt network)
    model.py           the network as plain PyTorch source (needs torch and safetensors only):
                       ``load()`` returns it with the weights of the folder (:mod:`nasdistill.network.model_source`)
    model.pt2          torch.export program of the network in eval mode (dynamic batch size)
    model.onnx         the same graph as ONNX (only with the ``onnx`` extra installed)
    export.json        per format: file, size, SHA-256 and the max |difference| to the original on
                       a batch (written last; :func:`nasdistill.load` checks the files against it)

Every artifact is reloaded and run against the original network before :func:`export_model`
returns (a difference that is not finite is an error: damaged weights never pass as an export),
and each file is written to a temporary name and renamed, so a failed export leaves no
half-written file. :func:`load` rebuilds the network from ``model.json`` + ``model.safetensors``
with ``space.build(arch)`` (or the model zoo): no supernet class and no user code is involved.
Every run directory (search, teacher, distill) holds the same two files, so :func:`load` reads
them too.
"""
from __future__ import annotations

import logging
import math
import runpy
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import nn

from ..atomic import atomic_path, is_disk_full, write_json
from .folder import FILES, RUN_FILES, PathLike, sha256_file, write_weights
from .loading import load, state_dict_diff, supernet_modules
from .model_source import UnsupportedSource, model_source
from .record import ModelRecord
from .source import SourceNames, record_from_source

ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
ONNX_HINT = "pip install 'nasdistill[onnx]'  (onnx, onnxscript, onnxruntime)"


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


def resolve_record(model: nn.Module, space=None, arch: Optional[Mapping] = None,
                   record=None, example_input: Optional[torch.Tensor] = None) -> ModelRecord:
    """The :class:`ModelRecord` of ``model`` from the arguments of :func:`export_model`."""
    if record is not None:
        if space is not None or arch is not None:
            raise ValueError("export_model: give either record= or space= (+ arch=), not both")
        if isinstance(record, ModelRecord):
            return record
        if isinstance(record, Mapping) and record.get("kind") is None and "model" in record:
            record = dict(record, kind="zoo")
        return ModelRecord.from_json(record, "export_model(record=...)")
    from ..space import SearchSpace

    arch = arch if arch is not None else getattr(model, "arch", None)
    space = space if space is not None else getattr(model, "space_name", None)
    if space is None or arch is None:
        raise ValueError(f"export_model: cannot tell how to rebuild a {type(model).__name__}: pass "
                         "space= and arch= for a search-space network, or record=ModelRecord.zoo(NAME, "
                         "num_classes, input_size) for a zoo model")
    if not isinstance(space, (str, SearchSpace)):
        raise ValueError(f"export_model: space= is a SearchSpace or a space spec, got {type(space).__name__}")
    classes = getattr(getattr(model, "classifier", None), "out_features", None)
    size = tuple(example_input.shape[1:]) if example_input is not None else None
    return record_from_source(arch, space, classes, size, SourceNames("export_model: arch", "space"))


def export_model(model: nn.Module, out_dir: PathLike, *, space=None, arch: Optional[Mapping] = None,
                 record=None, example_input: Optional[torch.Tensor] = None,
                 onnx: Union[str, bool] = "auto", seed: int = 0, verbose: bool = True,
                 source: Optional[Mapping] = None) -> dict:
    """Write ``model`` to ``out_dir`` in every format, reload each and compare with ``model``.

    Args:
        model: a standalone network (e.g. ``space.build(arch)``, ``Supernet.extract(arch)`` or a
            zoo model); exported in eval mode (its mode is restored afterwards).
        space, arch: the :class:`~nasdistill.space.SearchSpace` (or spec: module name or ``.py``
            path) and architecture the model was built from. For a ``SpaceNet`` both default to
            what the model records (the space by name, adapted to ``example_input``).
        record: instead of ``space``/``arch``: a :class:`~nasdistill.network.ModelRecord` (e.g.
            ``ModelRecord.zoo("resnet8", 10, (1, 8, 8))`` or the record of a run directory) or its
            JSON mapping.
        example_input: the batch ``torch.export`` traces (default: 2 random inputs of the
            recorded input size); outputs are compared on it and on a second random batch.
        onnx: ``"auto"`` (write ``model.onnx`` when the ``onnx`` extra imports, else say why
            not), ``True`` (require it: ``ImportError`` when missing) or ``False``.
        source: provenance added to ``export.json`` (e.g. the run the weights come from).

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
    if out.is_dir() and any((out / m).exists() for m in RUN_FILES):
        found = ", ".join(m for m in RUN_FILES if (out / m).exists())
        raise FileExistsError(f"{out} holds a training run ({found}); export into another folder "
                              "(e.g. --out RUN/export)")
    onnx_missing = onnx_available() if onnx is not False else None
    if onnx is True and onnx_missing:
        raise ImportError(f"ONNX export requested but {onnx_missing}")
    rec = resolve_record(model, space, arch, record, example_input)
    input_size = tuple(rec.input_size)
    if example_input is not None and tuple(example_input.shape[1:]) != input_size:
        raise ValueError(f"example_input has shape {tuple(example_input.shape)}, the model record says "
                         f"inputs are {input_size}")
    probe = rec.build(for_weights=True)  # fail before writing anything when they disagree
    try:
        probe.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as err:
        raise ValueError(f"export_model: the model does not match its record ({rec.describe()}): "
                         f"{str(err).splitlines()[0]} {state_dict_diff(probe, model.state_dict())}") from None
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
        if not (torch.isfinite(ref_x).all() and torch.isfinite(ref_check).all()):
            raise ValueError(f"export_model: the {rec.describe()} to export outputs NaN or inf on a random "
                             "batch, so its weights are damaged or diverged; export the weights of a finished "
                             "run whose files match their digests")

        def compare(run, dynamic: bool = True, name: str = "") -> float:
            with torch.no_grad():
                diff = _max_diff(run(x), ref_x)
                diff = max(diff, _max_diff(run(check), ref_check)) if dynamic else diff
            if not math.isfinite(diff):  # NaN compares as "no difference" everywhere else
                raise ValueError(f"{out / name} reloaded gives outputs that differ from the original's by "
                                 f"{diff} (not finite), so it does not reproduce the network; export the "
                                 "model again")
            return diff

        # model.json + weights are the export itself: any failure here raises
        diffs["safetensors"] = _write_weights(model, rec, out, compare, x.device)
        try:
            diffs["python"] = _write_model_py(rec, out, compare, x.device)
        except UnsupportedSource as err:  # e.g. a torchvision network: recorded, not a failure
            diffs["python"], skipped["python"] = None, str(err)
        except Exception as err:
            if is_disk_full(err):  # a full disk is the user's to fix, not a failed format
                raise
            diffs["python"], errors["python"] = None, _brief(err)
        try:
            diffs["pt2"], extra["pt2_dynamic_batch"] = _write_pt2(model, x, out, compare)
        except Exception as err:  # whatever torch.export raises: report it, keep the other formats
            if is_disk_full(err):  # a full disk is the user's to fix, not a failed format
                raise
            diffs["pt2"], errors["pt2"] = None, _brief(err)
        if onnx is False or onnx_missing:
            diffs["onnx"], skipped["onnx"] = None, onnx_missing or "disabled (--no-onnx)"
        else:
            try:
                diffs["onnx"], extra["onnx_exporter"] = _write_onnx(model, x, out, compare)
            except Exception as err:
                if is_disk_full(err):  # a full disk is the user's to fix, not a failed format
                    raise
                diffs["onnx"], errors["onnx"] = None, _brief(err)
    finally:
        model.train(was_training)

    for fmt, name in FILES.items():  # a file left by an earlier export would not match this model
        if diffs[fmt] is None and (out / name).exists():
            (out / name).unlink()
    cost = _cost(rec, model)
    result = {"kind": rec.kind, "model": rec.arch_id or rec.name,
              "macs": cost["macs"], "params": cost["params"], "input_size": list(input_size),
              "batches": [int(x.shape[0]), int(check.shape[0])], "max_abs_diff": diffs,
              "files": {fmt: {"file": name, "bytes": (out / name).stat().st_size,
                              "sha256": sha256_file(out / name)}
                        for fmt, name in FILES.items() if diffs[fmt] is not None},
              "skipped": skipped, "errors": errors, **extra, **dict(source or {})}
    write_json(out / "export.json", result)
    if verbose:
        print(format_result(result, out))
    return result


def finished_export(out_dir: PathLike) -> Optional[dict]:
    """The ``export.json`` of a complete export in ``out_dir``, or None.

    Complete means: ``export.json`` (written last) reads, ``model.json`` is there, every file it
    lists exists with the SHA-256 it records, and it accounts for every format (written, skipped
    or failed), so an export killed midway, a file deleted or damaged since, or an export made
    before a format existed is exported again rather than reused.
    """
    import json

    out = Path(out_dir)
    try:
        info = json.loads((out / "export.json").read_text())
    except (OSError, ValueError):
        return None
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(files, dict) or "safetensors" not in files or not (out / "model.json").is_file():
        return None
    accounted = set(files) | set(info.get("skipped") or {}) | set(info.get("errors") or {})
    if not set(FILES) <= accounted:
        return None
    for entry in files.values():
        path = out / str(entry.get("file", ""))
        if not path.is_file() or entry.get("sha256") is None or sha256_file(path) != entry["sha256"]:
            return None
    return info


def _cost(rec: ModelRecord, model: nn.Module) -> dict:
    """MACs and parameters: from the space's cost model, or measured on the network (zoo)."""
    if rec.kind == "space":
        return {k: int(v) for k, v in rec.space_object().cost(rec.arch).items()}
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    x = torch.zeros(1, *rec.input_size, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()  # a training-mode forward would update BatchNorm statistics
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return {"macs": int(counter.get_total_flops() // 2),
            "params": int(sum(t.numel() for t in model.parameters()))}


def _brief(err: Exception, limit: int = 400) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {first}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _write_weights(model, rec, out: Path, compare, device) -> float:
    """model.safetensors + model.json, checked by rebuilding through :func:`load`."""
    # clone: safetensors refuses tensors that share storage
    write_weights(out / FILES["safetensors"],
                  {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
                  metadata={"format": "nasdistill"})
    rec.write(out)
    reloaded = load(out, device=device)
    if supernet_modules(reloaded):
        raise RuntimeError(f"reloaded model contains supernet modules {supernet_modules(reloaded)}")
    return compare(reloaded, name=FILES["safetensors"])


def _write_model_py(rec, out: Path, compare, device) -> float:
    """model.py (plain PyTorch source), checked by running its ``load()`` on the folder's weights."""
    text = model_source(rec, sha256_file(out / FILES["safetensors"]))
    with atomic_path(out / FILES["python"]) as tmp:
        tmp.write_text(text, encoding="utf-8")
        # the temporary file lies in the folder, so its load() reads this folder's weights
        namespace = runpy.run_path(str(tmp), run_name="nasdistill_export_check")
        diff = compare(namespace["load"](device), name=FILES["python"])
    return diff


def _write_pt2(model, x, out: Path, compare) -> tuple[float, bool]:
    program, dynamic = _export_program(model, x)
    with atomic_path(out / FILES["pt2"]) as tmp:
        torch.export.save(program, str(tmp))
        diff = compare(torch.export.load(str(tmp)).module(), dynamic, FILES["pt2"])
    return diff, dynamic


def _write_onnx(model, x, out: Path, compare) -> tuple[float, str]:
    with atomic_path(out / FILES["onnx"]) as tmp:
        exporter = _export_onnx(model, x, tmp)
        diff = compare(lambda t: _run_onnx(tmp, t), name=FILES["onnx"])
    return diff, exporter


def format_result(result: Mapping, folder) -> str:
    """A short table: one line per format with its max |difference| or why it is missing."""
    lines = [f"exported {result['kind']} model {result['model']} to {folder} "
             f"(MACs {result['macs']:,}, params {result['params']:,})"
             if result.get("macs") is not None else
             f"exported {result['kind']} model {result['model']} to {folder}"]
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
