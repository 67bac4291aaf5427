"""Where the local backend's worker processes run: one GPU each, several runs per GPU.

``workers=auto`` starts one worker per visible GPU times ``runs_per_gpu`` (``runs_per_gpu=4`` puts
four runs on each GPU at a time: a resnet8-size student at batch 64 uses a few percent of a
large GPU), or one per CPU core on a machine without a GPU. Worker ``k`` is pinned to GPU
``gpus[k // runs_per_gpu]`` (modulo the GPUs): its ``CUDA_VISIBLE_DEVICES`` is that GPU alone,
set before it imports torch, so its runs' ``train.device=auto`` (``cuda:LOCAL_RANK``, 0 outside
torchrun) is that GPU and every GPU of the machine is used. The GPUs are those the main process
may use: the ids (or UUIDs) of its own ``CUDA_VISIBLE_DEVICES`` when set, else every device torch
sees.
"""
from __future__ import annotations

import os
from typing import Optional, Union


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_count(workers: Union[int, str], runs_per_gpu: int, gpus: list[str],
                 cpus: Optional[int] = None) -> int:
    """The number of worker processes: ``workers``, or for ``auto`` one per GPU times
    ``runs_per_gpu``, or the CPU count without GPUs."""
    if workers != "auto":
        return int(workers)
    if gpus:
        return len(gpus) * runs_per_gpu
    return max(1, cpus if cpus is not None else (os.cpu_count() or 1))


def worker_envs(n: int, gpus: list[str], runs_per_gpu: int) -> Optional[list[dict]]:
    """Per worker, the environment it starts with (its GPU); None without GPUs (nothing to pin)."""
    if not gpus:
        return None
    return [{"CUDA_VISIBLE_DEVICES": gpus[(k // runs_per_gpu) % len(gpus)]} for k in range(n)]


def describe(n: int, gpus: list[str], runs_per_gpu: int) -> str:
    """``4 worker processes on 2 GPUs, 2 runs per GPU`` / ``2 worker processes``."""
    text = f"{n} worker process{'es' if n != 1 else ''}"
    if gpus:
        used = min(len(gpus), -(-n // runs_per_gpu))
        text += f" on {used} GPU{'s' if used != 1 else ''}, {runs_per_gpu} run{'s' if runs_per_gpu != 1 else ''} per GPU"
    return text


__all__ = ["describe", "visible_gpus", "worker_count", "worker_envs"]
