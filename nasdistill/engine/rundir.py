"""The run directory: what every training command leaves on disk, and who may write it.

::

    .lock              held (fcntl.flock) by the one process writing the run; released when it dies
    run.json           the run's manifest: kind, config fingerprint, the keys it covers, amendments
    config.yaml        the configuration the run actually used
    metrics.csv        one row per epoch
    metrics.jsonl      the same rows, one JSON object a line
    last.ckpt          atomic checkpoint after every epoch (resume point)
    model.safetensors  final weights
    model.json         how to rebuild the network (nasdistill.network.ModelRecord)
    result.json        best / last / test accuracy, epochs, wall time, the weights' SHA-256 -- last
    tb/                TensorBoard scalars (when tensorboard imports)

and the files its task declares it writes (:attr:`~.task.TrainTask.artifacts`, e.g. a teacher's
branch weights), which ``run.json`` lists under ``artifacts``: this module knows no method's files.

A run is *finished* only when ``result.json`` exists, ``model.safetensors`` has the digest the
result records, ``last.ckpt`` (when present) ends at the result's epoch and every artifact
``run.json`` lists exists (:meth:`RunDirectory.finished_result`); anything less is resumed or
finished again. :meth:`RunDirectory.wipe` (``--restart``) removes the standard files and the
listed artifacts, never anything else.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Optional

from ..atomic import atomic_open, reworded, write_json
#: RUN_FILES: files whose presence means "a run is here" (one list for the trainer, the lifecycle
#: and export); the digest and the weights writer: the network-on-disk package owns them
from ..network.folder import RUN_FILES, sha256_file, write_weights  # noqa: F401  (re-exported)

#: The files every run writes, whatever its method (removed by a restart with the artifacts its
#: ``run.json`` lists); never anything else in the folder.
RUN_OUTPUTS = RUN_FILES + ("metrics.csv", "model.safetensors", "model.json", "tb", "code")
#: Files that mean a run made progress (an epoch checkpointed or logged, or a result): a folder
#: holding only ``run.json``/``config.yaml`` never started training (e.g. its model could not be
#: built) and is taken over by the next run, whatever its configuration.
PROGRESS_FILES = ("last.ckpt", "metrics.jsonl", "result.json")
LOCK = ".lock"
#: ``last.ckpt`` file version (device, inode, size, mtime) -> the epoch it ends at
_CHECKPOINT_EPOCHS: dict[tuple, int] = {}


class RunLocked(RuntimeError):
    """Another live process holds the run directory."""


def check_artifact_names(names, owner: str) -> tuple[str, ...]:
    """``names`` as a tuple when each is a plain file or folder name of the run folder that no
    standard file uses; a ValueError naming ``owner`` otherwise (a restart removes them)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    for name in names:
        if not _plain_name(name) or name in RUN_OUTPUTS:
            reason = "a standard file of every run" if name in RUN_OUTPUTS else "not a plain name in the run folder"
            raise ValueError(f"{owner} declares the artifact {name!r}, {reason}; declare the names of the files "
                             "or folders its save_artifacts writes directly in the run folder")
    return names


def _plain_name(name) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..", LOCK) and "/" not in name
            and "\\" not in name and "\0" not in name)


class RunDirectory:
    """One run directory: its lock, manifest, result and finished state."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock_fd: Optional[int] = None

    # ------------------------------------------------------------------ what is there
    def present(self) -> list[str]:
        return [n for n in RUN_FILES if (self.path / n).exists()]

    def holds_run(self) -> bool:
        """Whether a run made progress here (see ``PROGRESS_FILES``)."""
        return any((self.path / n).exists() for n in PROGRESS_FILES)

    def checkpoint_epoch(self) -> Optional[int]:
        """The epoch ``last.ckpt`` ends at (None without a readable checkpoint).

        Reading it unpickles the whole checkpoint (a GTN teacher's holds its supernet and optimizer:
        ~0.1 s), and a job asks for each teacher's before every run that distills from it, so the
        answer is kept per file version: checkpoints are written to a new file and renamed into
        place, so a new checkpoint is a new inode and is read again."""
        path = self.path / "last.ckpt"
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if version in _CHECKPOINT_EPOCHS:
            return _CHECKPOINT_EPOCHS[version]
        import torch

        try:
            epoch = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
        except Exception:  # a damaged checkpoint: resuming says what is wrong with it
            return None
        if len(_CHECKPOINT_EPOCHS) >= 4096:
            _CHECKPOINT_EPOCHS.clear()
        _CHECKPOINT_EPOCHS[version] = epoch
        return epoch

    def read_result(self) -> Optional[dict]:
        """``result.json`` (None when absent or unreadable: the run is then not finished)."""
        try:
            return _read_mapping(self.path / "result.json")
        except ValueError:
            return None

    def finished_result(self) -> Optional[dict]:
        """The result of a finished run (see the module docstring), or None."""
        result = self.read_result()
        weights = self.path / "model.safetensors"
        if result is None or not weights.is_file():
            return None
        if result.get("weights_sha256") != sha256_file(weights):
            return None
        epoch = self.checkpoint_epoch()
        if epoch is not None and epoch != result.get("epochs"):
            return None
        if any(not (self.path / n).exists() for n in self.recorded_artifacts()):
            return None
        return result

    def recorded_artifacts(self) -> tuple[str, ...]:
        """The artifacts ``run.json`` says the run writes (none when it is absent, damaged or lists
        none); a name that is not a plain name of this folder is ignored, never removed."""
        try:
            manifest = self.read_manifest() or {}
        except ValueError:
            return ()
        names = manifest.get("artifacts")
        if not isinstance(names, list):
            return ()
        return tuple(n for n in names if _plain_name(n) and n not in RUN_OUTPUTS)

    # ------------------------------------------------------------------ writing
    def write_result(self, result: dict) -> None:
        write_json(self.path / "result.json", _json_safe(result))

    def clear_result(self) -> None:
        """Remove the result and weights of an earlier finish (the run is being trained again)."""
        for name in ("result.json", "model.safetensors"):
            (self.path / name).unlink(missing_ok=True)

    def set_aside(self, name: str, tag: str = "unreadable") -> Path:
        """Rename the file ``name`` to ``<name>.<tag>-<time>`` (kept for inspection, never read
        again); return the new path."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path / f"{name}.{tag}-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.path / f"{name}.{tag}-{stamp}-{n}"
        os.replace(self.path / name, target)
        return target

    def damaged_metrics(self) -> bool:
        """Whether ``metrics.jsonl`` has a damaged line before its last (a torn last line is not
        damage: resuming drops it)."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return False
        try:
            _read_rows(path)
        except ValueError:
            return True
        return False

    def wipe(self, artifacts=()) -> None:
        """Remove everything a run wrote here (``--restart``): the standard files, the artifacts
        ``run.json`` lists and ``artifacts`` (those the run about to start declares); other files
        are left alone."""
        extra = check_artifact_names(artifacts, "the run")
        for name in dict.fromkeys(RUN_OUTPUTS + self.recorded_artifacts() + extra):
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> Optional[dict]:
        """``run.json`` (None when absent); a damaged one is a ValueError saying what to do."""
        return _read_mapping(self.path / "run.json")

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.path / "run.json", manifest)

    # ------------------------------------------------------------------ lock
    def lock(self, job=None) -> "RunDirectory":
        """Take the directory's lock for this process; :class:`RunLocked` names the holder's PID.

        A folder inside the folder of a live run or main job belongs to it: it is refused too,
        naming that folder and the PID of the process that holds it (a main job's main process),
        unless ``job`` is that folder (the job's own runs)."""
        import fcntl

        self._refuse_inside_a_live_folder(job)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            reason = ("a file stands in its path" if err.errno in (errno.ENOTDIR, errno.EEXIST) else
                      "permission denied" if isinstance(err, PermissionError) else err.strerror)
            raise reworded(err, f"cannot create or write the run folder {self.path} ({reason}); "
                                "choose another --out-dir or fix the folder's permissions", self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f"process {holder}" if holder else "another process"
                raise RunLocked(f"{self.path} is in use by {who} (another nasdistill run writing the same "
                                f"folder); wait for it to end or stop it{f' (kill {holder})' if holder else ''}, "
                                "or choose another --out-dir") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return self

    def _refuse_inside_a_live_folder(self, job=None) -> None:
        import fcntl

        mine = Path(os.path.abspath(job)) if job is not None else None
        here = Path(os.path.abspath(self.path))
        for parent in here.parents:
            lock = parent / LOCK
            if parent == mine or not lock.is_file():
                continue
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    holder = _read_pid(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise RunLocked(f"{self.path} lies inside {parent}, which {who} holds (a nasdistill run or "
                                    f"main job writing there); its folders are its own: wait for it to end or "
                                    f"stop it{f' (kill {holder})' if holder else ''}, or choose a folder outside "
                                    f"{parent}") from None
            finally:
                os.close(fd)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


def _read_mapping(path: Path) -> Optional[dict]:
    """The JSON mapping in ``path``, None when there is no file; ValueError when it is damaged."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged (not a JSON mapping); start the run over with --restart "
                         "or use another --out-dir")
    return data


def _read_pid(fd: int) -> Optional[int]:
    try:
        os.lseek(fd, 0, 0)
        text = os.read(fd, 32).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------- metrics
class MetricsLog:
    """Per-epoch rows to ``metrics.jsonl`` (appended), ``metrics.csv`` (rewritten) and TensorBoard.

    Resuming after epoch ``e`` keeps the rows of epochs ``<= e`` (later rows belong to the killed
    run) and drops a torn last line (a kill in the middle of a write).
    """

    def __init__(self, run_dir, resume_epoch: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if resume_epoch > 0 and self.jsonl.exists():
            self.rows = [r for r in _read_rows(self.jsonl) if r.get("epoch", 0) <= resume_epoch]
        with atomic_open(self.jsonl, "w") as f:
            for r in self.rows:
                f.write(json.dumps(r) + "\n")
        self._rewrite_csv()
        self.tb = self._open_tensorboard() if tensorboard else None

    def _open_tensorboard(self):
        if os.environ.get("NASDISTILL_TENSORBOARD", "1") == "0":
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def log(self, row: dict) -> None:
        """Record one epoch's ``row`` (must contain ``epoch``)."""
        row = _json_safe(row)
        self.rows.append(row)
        try:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as err:
            raise reworded(err, f"cannot append to {self.jsonl} ({err.strerror}); free space or fix "
                                "the folder's permissions, then resume with --resume", cls=OSError) from None
        self._rewrite_csv()
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()

    def _rewrite_csv(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        with atomic_open(self.csv, "w", newline="") as f:
            f.write(buf.getvalue())

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _read_rows(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``; a torn (unparseable) last line is dropped."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # cut short by a kill: the checkpoint decides what was done
            raise ValueError(f"{path}, line {i + 1}, is damaged (not JSON); the run directory was "
                             "edited: start the run over with --restart") from None
    return rows


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``metrics.jsonl`` of ``run_dir``."""
    return _read_rows(Path(run_dir) / "metrics.jsonl")


def read_result(run_dir) -> Optional[dict]:
    """``result.json`` of ``run_dir``, or None when the run has not finished."""
    return RunDirectory(run_dir).read_result()


__all__ = ["LOCK", "MetricsLog", "PROGRESS_FILES", "RUN_FILES", "RUN_OUTPUTS", "RunDirectory", "RunLocked",
           "check_artifact_names", "read_metrics", "read_result", "sha256_file", "write_weights"]
