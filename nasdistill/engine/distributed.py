"""Multi-process training under ``torchrun``.

Each rank draws its shard of every global batch (the loader's ``rank``/``world_size``). Gradients
are averaged over the ranks in one of two ways:

- **DDP** (:class:`DDPStep`) for tasks whose every trainable parameter gets a gradient at every
  step (``TrainTask.ddp_safe``: fixed teachers, distillation students): the whole training step
  runs through ``torch.nn.parallel.DistributedDataParallel``, whose bucketed all-reduce overlaps
  with backward. ``train.sync_bn=true`` converts BatchNorm to ``SyncBatchNorm`` first.
- **One flat all-reduce** (:func:`sync_gradients`) for supernet phases (search, GTN), where a
  parameter may have no gradient on a rank (a path that rank did not sample): after ``backward``
  the gradients of the optimizer being stepped are averaged in ONE flat all-reduce, a missing
  gradient counting as zeros there; a parameter with no gradient on every rank keeps ``grad=None``
  so the optimizer skips it exactly as a single process would. All ranks apply identical updates,
  with no ``find_unused_parameters``.

BatchNorm statistics are computed per shard, so a BN network trained on 2 ranks is legitimately
not equal to a 1-process run with the same global batch (the test uses a network without BN).
Only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world() -> World:
    """The current :class:`World` (single process unless a process group is initialized)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def device_problem(name: str) -> str | None:
    """Why the device ``name`` (``train.device``) cannot be used by this process, or None: CUDA
    (or MPS) not available, or a GPU index beyond the GPUs this process sees."""
    if name == "auto":
        return None
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"is {name!r}, but CUDA is not available here; use cpu (or auto: a GPU when there is one)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return (f"is {name!r}, but this process sees {count} GPU(s) (cuda:0 to cuda:{count - 1}); "
                    "use cuda (or auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return f"is {name!r}, but MPS is not available here; use cpu (or auto)"
    return None


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; a device this process
    cannot use is refused as the key ``train.device`` (:func:`device_problem`)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    problem = device_problem(name)
    if problem is not None:
        from ..config import ConfigError

        raise ConfigError.for_key("train.device", problem)
    return torch.device(name)


def init_distributed(device: str = "auto") -> tuple[World, torch.device]:
    """Join the process group described by torchrun's env vars (no-op for one process).

    Uses nccl when training on CUDA, gloo on CPU. Returns this process's world and device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return world(), dev


def shutdown_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sync_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over all ranks in one flat all-reduce.

    A missing gradient counts as zeros; a parameter without gradient on all ranks stays ``None``.
    """
    w = world()
    if not w.distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    ref = params[0]
    sizes = [p.numel() for p in params]
    flat = torch.zeros(sum(sizes) + len(params), device=ref.device, dtype=torch.float32)
    offset = 0
    for i, p in enumerate(params):
        if p.grad is not None:
            flat[offset:offset + sizes[i]] = p.grad.reshape(-1).float()
            flat[sum(sizes) + i] = 1.0  # "has a gradient" flag
        offset += sizes[i]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat[:sum(sizes)] /= w.world_size
    offset = 0
    flags = flat[sum(sizes):].tolist()
    for i, p in enumerate(params):
        if flags[i] > 0:
            g = flat[offset:offset + sizes[i]].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        offset += sizes[i]


def sync_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over all ranks.

    Each rank's BatchNorm sees only its shard, so running statistics drift apart; averaging them
    before evaluation and checkpoints gives every rank the same model (integer buffers, such as
    ``num_batches_tracked``, are equal on all ranks already).
    """
    w = world()
    if not w.distributed:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1).float() for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= w.world_size
    offset = 0
    for b in bufs:
        b.copy_(flat[offset:offset + b.numel()].view_as(b).to(b.dtype))
        offset += b.numel()


class StepModule(torch.nn.Module):
    """A task's training step as a module, so DDP sees one forward per step.

    Its only submodule is the task's ``model`` (what the main optimizer trains; a distillation
    teacher is not part of it), so DDP synchronizes exactly those parameters.
    """

    def __init__(self, task):
        super().__init__()
        self.model = task.model
        self.__dict__["task"] = task  # not a submodule

    def forward(self, batch, ctx):
        out = self.task.training_step(batch, ctx)
        return out.loss, out.logits, out.logs, out.optimizer

    def step_output(self, result):
        from .task import StepOutput

        loss, logits, logs, optimizer = result
        return StepOutput(loss, logits, logs, optimizer)


class DDPStep:
    """Calls a task's training step through DistributedDataParallel; returns a StepOutput."""

    def __init__(self, task):
        from torch.nn.parallel import DistributedDataParallel

        self.module = StepModule(task)
        device = next(task.model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        # buffers (BatchNorm statistics) stay per rank and are averaged every epoch: sync_buffers
        self.ddp = DistributedDataParallel(self.module, device_ids=ids, broadcast_buffers=False)

    def __call__(self, batch, ctx):
        return self.module.step_output(self.ddp(batch, ctx))


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum a short list of numbers over all ranks (identity for one process)."""
    if not world().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (identity for one process)."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for all ranks (no-op for one process)."""
    if world().distributed:
        dist.barrier()
