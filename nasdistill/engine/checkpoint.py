"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``, and RNG capture.

A checkpoint holds only tensors, numbers, strings, lists and dicts (no pickled objects), so
loading it never runs code. Writes go to a temporary file in the same directory, are fsync'ed and
then ``os.replace``'d over the old file: a run killed at any moment leaves either the previous or
the new checkpoint, never a torn one.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..atomic import atomic_open
from ..network.loading import state_dict_diff  # noqa: F401  (re-exported: one key-diff helper)


class UnusableCheckpoint(ValueError):
    """A checkpoint that cannot be continued from: unreadable, not a nasdistill checkpoint, or one
    of another model or method. ``--restart`` moves it aside and starts the run over."""


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Loaded on the CPU by default: ``load_state_dict`` moves tensors to the model's device, and the
    RNG states must be CPU tensors. A damaged file raises ``ValueError`` saying what to do.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unpickling refused, ...
        first = str(err).splitlines()[0].split(". ")[0] if str(err) else "damaged file"
        raise UnusableCheckpoint(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {first}): it was cut short or "
            "overwritten. Start the run over with --restart (the file is moved aside, to "
            "last.ckpt.unreadable-<time>), or delete the file to train the run again from epoch 0") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise UnusableCheckpoint(f"checkpoint {path} is not a nasdistill checkpoint (no epoch); start the "
                                 "run over with --restart (the file is moved aside)")
    return state


def capture_rng() -> dict:
    """The state of every random generator (python, numpy, torch CPU, CUDA) as plain data."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Restore generators captured by :func:`capture_rng`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
