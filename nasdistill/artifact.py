"""Loading a network back from a folder nasdistill wrote: an export folder or any run directory.

Both hold ``model.json`` (a :class:`~nasdistill.record.ModelRecord`: the network as data) and
``model.safetensors``; :func:`load` rebuilds the network from the record with no supernet class and
no import of user code (custom ops need ``trust_code``, see :mod:`nasdistill.record`), then loads
the weights strictly. Writing exports lives in :mod:`nasdistill.export`.

**Digests.** Every weights file is checked against the SHA-256 its folder records before it is
used (:func:`verify_file`): an export folder records one per file in ``export.json``
(``files.<format>.sha256``), a run directory the digest of ``model.safetensors`` in
``result.json`` (``weights_sha256``). A file that differs is refused with one sentence naming it
and what to do. A folder that records no digest -- a run interrupted before its result, a folder
written by hand or by an earlier version -- is loaded as it is: there is nothing to compare with,
and refusing would make an interrupted run's weights unreadable; its safetensors header is still
checked, and an export of it still refuses outputs that are not finite.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .engine.checkpoint import state_dict_diff as key_diff
from .record import FILENAME, ModelRecord

FILES = {"safetensors": "model.safetensors", "python": "model.py", "pt2": "model.pt2",
         "onnx": "model.onnx"}
EXPORT_INFO = "export.json"   # an export folder's digests: files.<format>.sha256
RUN_RESULT = "result.json"    # a run directory's digest of model.safetensors: weights_sha256
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
ONNX_HINT = "pip install 'nasdistill[onnx]'  (onnx, onnxscript, onnxruntime)"

PathLike = Union[str, os.PathLike]


class DigestMismatch(ValueError):
    """A file differs from the SHA-256 its folder records (damaged or changed since written)."""


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recorded_digests(folder: PathLike) -> tuple[dict, Optional[Path]]:
    """``({file name: SHA-256}, file that records them)`` of an export folder or run directory.

    ``({}, None)`` when the folder records no digest (see the module docstring). A record that
    exists but cannot be read is an error: the folder claims digests it cannot show.
    """
    folder = Path(folder)
    for name, what in ((EXPORT_INFO, "export the model again with `nasdistill export`"),
                       (RUN_RESULT, "rerun the run (--restart)")):
        path = folder / name
        if not path.is_file():
            continue
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is not readable JSON ({type(err).__name__}), so the files of "
                             f"{folder} cannot be checked against it; {what}") from None
        if not isinstance(info, dict):
            raise ValueError(f"{path} is not a JSON mapping, so the files of {folder} cannot be checked "
                             f"against it; {what}")
        if name == EXPORT_INFO:
            files = info.get("files") if isinstance(info.get("files"), dict) else {}
            digests = {str(e["file"]): str(e["sha256"]) for e in files.values()
                       if isinstance(e, dict) and e.get("file") and e.get("sha256")}
        else:
            digests = ({FILES["safetensors"]: str(info["weights_sha256"])}
                       if info.get("weights_sha256") else {})
        return digests, path
    return {}, None


def verify_file(path: PathLike) -> None:
    """Refuse ``path`` when it differs from the SHA-256 its folder records for it.

    Raises :class:`DigestMismatch` (a ``ValueError``) with one sentence naming the file and what to
    do; returns quietly when the folder records no digest for it (see the module docstring).
    """
    path = Path(path)
    digests, source = recorded_digests(path.parent)
    expected = digests.get(path.name)
    if expected is None or not path.is_file() or sha256_file(path) == expected:
        return
    if source.name == EXPORT_INFO:
        raise DigestMismatch(f"{path} does not match the SHA-256 that {source} records for it (damaged or "
                             f"changed since the export); export the model again with `nasdistill export "
                             f"SOURCE --out {path.parent}`")
    raise DigestMismatch(f"{path} does not match the SHA-256 that {source} records for it (damaged or "
                         f"changed since the run finished); rerun the run with --restart (or restore the "
                         "file from a copy)")


def read_record(folder: PathLike) -> ModelRecord:
    """The :class:`ModelRecord` of ``folder`` with errors that say what the folder should hold."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: expected an export folder or run directory "
                                f"with {FILENAME} and model.safetensors (write one with `nasdistill export`)")
    return ModelRecord.read(folder)


def load_weights(model: nn.Module, path: PathLike, device="cpu") -> None:
    """Load ``path`` (safetensors) into ``model`` strictly, after :func:`verify_file`; a clear
    error when missing, damaged or unfit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the folder {path.parent} is incomplete (an "
                                "unfinished run, or a partial copy); finish the run or re-export the model")
    verify_file(path)
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-export the model") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the network described by {path.parent / FILENAME}: "
                         f"{str(err).splitlines()[0]} {key_diff(model, weights)}") from None


def load(folder: PathLike, device="cpu", trust_code: Union[bool, str] = False) -> nn.Module:
    """The network of an export folder or run directory, weights loaded, in eval mode.

    Rebuilt from ``model.json`` (no user code is imported unless ``trust_code``: ``True`` imports
    the custom-op code saved in the folder, a path imports that file), then ``model.safetensors``
    is checked against the digest the folder records and loaded strictly. Raises
    ``FileNotFoundError`` / ``ValueError`` saying which file is missing, damaged or corrupt.
    """
    return load_with_record(folder, device, trust_code)[0]


def load_with_record(folder: PathLike, device="cpu",
                     trust_code: Union[bool, str] = False) -> tuple[nn.Module, ModelRecord]:
    """``(network, record)`` of an export folder or run directory: :func:`load` and the
    :class:`ModelRecord` it was rebuilt from (``model.json`` is read once)."""
    folder = Path(folder)
    record = read_record(folder)
    model = record.build(trust_code=trust_code, base_dir=folder, for_weights=True)
    load_weights(model, folder / FILES["safetensors"], device)
    return model.to(device).eval(), record


def load_pt2(folder: PathLike) -> nn.Module:
    """The ``torch.export`` program of an export folder, as a callable module."""
    path = Path(folder) / FILES["pt2"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: export the model with `nasdistill export` "
                                "(the pt2 export may have failed: see export.json)")
    verify_file(path)
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
