"""Atomic file writes: the one way every file of a run, a report or an export is written.

A file is written to a temporary name in its own folder, flushed and fsync'ed, given the permissions
an ordinary ``open()`` would give it (``0666`` minus the umask; ``tempfile.mkstemp`` alone would
leave ``0600`` and hide results from collaborators), then renamed over the target with
``os.replace``. A process killed at any moment leaves the old file or the new one, never a torn
one; a failed write (full or read-only disk) removes its temporary file and raises an ``OSError``
whose message names the file and keeps its errno. A full disk is recognised however it surfaces:
``OSError(ENOSPC)``/``EDQUOT``, or the ``RuntimeError`` torch's zip writer raises for it
(``[enforce fail at inline_container.cc...] unexpected pos ...``), so the caller can say which
files were kept and how to continue (:func:`is_disk_full`)::

    with atomic_path("out/model.pt2") as tmp:   # writers that want a path
        torch.export.save(program, tmp)
    with atomic_open("out/result.json", "w") as f:
        json.dump(result, f)
    write_json("out/result.json", result)
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)  # make the rename itself durable
    except OSError:
        pass
    finally:
        os.close(fd)


def reworded(err: OSError, message: str, filename: PathLike | None = None, cls: type | None = None) -> OSError:
    """``err`` reworded: an error of its class (or ``cls``) with its errno and ``message``, which
    names the file and what to do; ``filename`` (optional) becomes the error's ``filename``. Raise
    it ``from None``."""
    out = (cls or type(err))(err.errno, message)
    if filename is not None:
        out.filename = str(filename)
    return out


#: errnos of a device that has no room left (a full disk, a full quota).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: What torch's C++ zip writer says when a write of ``torch.save`` / ``torch.export.save`` failed.
_TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed",
                       "unexpected pos", "iostream error")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the device has no space left (see :data:`DISK_FULL`)."""
    return isinstance(err, OSError) and err.errno in DISK_FULL


def _free_bytes(folder: Path) -> Optional[int]:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def write_failure(err: BaseException, path: Path) -> Optional[OSError]:
    """The ``OSError`` behind a failed write of ``path`` (None when ``err`` is no write failure).

    torch's writers raise ``RuntimeError``: its context holds the ``OSError`` when torch wrote to
    a Python file; when it wrote to a path, only the text says the write failed, and the space
    left on the device (measured while the partial file still takes its room) tells a full disk.
    """
    if isinstance(err, OSError):
        return err
    if not isinstance(err, RuntimeError):
        return None
    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
        cause = cause.__cause__ or cause.__context__
    text = f"{err} {err.__context__ or ''}"
    if not any(marker in text for marker in _TORCH_WRITE_FAILED):
        return None
    free = _free_bytes(path.parent)
    if free is None or free < (1 << 20):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"the write failed ({str(err).splitlines()[0][:160]})")


def _explain(err: OSError, path: Path) -> OSError:
    """The same error class, with a message that names the file and what to do."""
    if isinstance(err, PermissionError):
        what = "permission denied: the folder is read-only or belongs to someone else"
        return reworded(err, f"cannot write {path} ({what}); nothing was changed there", path)
    if is_disk_full(err):
        return reworded(err, f"no space left on the device holding {path.parent}: {path.name} could not be "
                             f"written; the {path.name} written before (if any) is kept unchanged and no "
                             "partial file is left. Free some space there, then run the same command "
                             "again", path)
    what = err.strerror or str(err)
    return reworded(err, f"cannot write {path} ({what}); nothing was changed there", path)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); on success it replaces ``path``."""
    path = Path(path)
    tmp = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}"
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _explain(err, path) from None
        try:
            yield tmp
        except (OSError, RuntimeError) as err:
            failure = write_failure(err, tmp)
            # only a failure of the device (full, read-only) is this file's: a writer's other
            # errors (a bug, a missing input file) keep their own words
            if failure is None or failure.errno not in DISK_FULL + (errno.EROFS, errno.EIO):
                raise
            raise _explain(failure, path) from None
        try:
            if tmp.exists():
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as err:
            raise _explain(err, path) from None
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs) -> Iterator[Any]:
    """``open(tmp, mode)`` for writing; the file replaces ``path`` when the block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files: mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        try:
            f = open(tmp, mode, **kwargs)
        except OSError as err:
            raise _explain(err, Path(path)) from None
        try:
            with f:
                yield f
                f.flush()
        except OSError as err:
            raise _explain(err, Path(path)) from None


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


__all__ = ["DISK_FULL", "atomic_open", "atomic_path", "is_disk_full", "reworded", "write_failure",
           "write_json", "write_text"]
