"""Where a process runs: its device and its CPU threads, set in this one place for a run, the main
job and a bare :class:`~.trainer.Trainer` (the one place ``torch.set_num_threads`` is called)."""
from __future__ import annotations

import os
import socket
from typing import Optional

import torch

from . import distributed


def use_threads(threads: Optional[int]) -> None:
    """Use ``threads`` intra-op CPU threads for this process (``None``: leave torch's default).

    Tiny models train fastest on one thread; on a busy 2-core machine two threads can stall.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"train.threads must be >= 1 or null, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def runtime(device_name, threads, world=None, device=None) -> torch.device:
    """The device of this process and its CPU threads: ``device`` when given, else
    ``device_name`` (e.g. ``train.device``) resolved for the process's local rank; ``threads`` as
    ``train.threads``."""
    world = world or distributed.world()
    device = (distributed.resolve_device(device_name, world.local_rank) if device is None
              else torch.device(device))
    use_threads(threads)
    return device


def where(device) -> dict:
    """Where this process runs a run: ``{"host", "device"}`` and, when a backend pinned the process
    to GPUs, the GPUs it sees (``cuda_visible_devices``); recorded in every run's ``result.json``."""
    out = {"host": socket.gethostname(), "device": str(device)}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        out["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return out


__all__ = ["runtime", "use_threads", "where"]
