"""The files of a network folder (an export folder or a run directory) and their digests.

Both kinds of folder hold ``model.json`` (the :class:`~nasdistill.network.record.ModelRecord`) and
``model.safetensors``. Every weights file is checked against the SHA-256 its folder records before
it is used (:func:`verify_file`): an export folder records one per file in ``export.json``
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

from ..atomic import atomic_open

PathLike = Union[str, os.PathLike]

#: The files of an export folder, by format (``model.json`` is :data:`~.record.FILENAME`).
FILES = {"safetensors": "model.safetensors", "python": "model.py", "pt2": "model.pt2",
         "onnx": "model.onnx"}
EXPORT_INFO = "export.json"   # an export folder's digests: files.<format>.sha256
RUN_RESULT = "result.json"    # a run directory's digest of model.safetensors: weights_sha256
#: Files whose presence means "a training run is here": an export never writes into such a folder.
RUN_FILES = ("run.json", "config.yaml", "last.ckpt", "metrics.jsonl", RUN_RESULT)


class DigestMismatch(ValueError):
    """A file differs from the SHA-256 its folder records (damaged or changed since written)."""


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_weights(path: PathLike, weights: dict, metadata: Optional[dict] = None) -> str:
    """Write ``weights`` (CPU tensors) to ``path`` as safetensors atomically; return its SHA-256."""
    from safetensors.torch import save

    data = save(weights, metadata=metadata)
    with atomic_open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


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


__all__ = ["DigestMismatch", "EXPORT_INFO", "FILES", "RUN_FILES", "RUN_RESULT", "recorded_digests",
           "sha256_file", "verify_file", "write_weights"]
