"""Atomic file writes: the one way every file of a run, a report or an export is written.

A file is written to a temporary name in its own folder, flushed and fsync'ed, given the permissions
an ordinary ``open()`` would give it (``0666`` minus the umask; ``tempfile.mkstemp`` alone would
leave ``0600`` and hide results from collaborators), then renamed over the target with
``os.replace``. A process killed at any moment leaves the old file or the new one, never a torn
one; a failed write (full or read-only disk) removes its temporary file and raises an ``OSError``
whose message names the file::

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
from typing import Any, Iterator, Union

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


def _explain(err: OSError, path: Path) -> OSError:
    """The same error class, with a message that names the file and what to do."""
    if isinstance(err, PermissionError):
        what = "permission denied: the folder is read-only or belongs to someone else"
    elif getattr(err, "errno", None) == errno.ENOSPC:
        what = "no space left on the device: free some space"
    else:
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
        yield tmp
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


__all__ = ["atomic_open", "atomic_path", "reworded", "write_json", "write_text"]
