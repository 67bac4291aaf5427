"""Whole-step CUDA graphs: one training step (forward, backward, optimizer) replayed as one graph.

At the batch sizes of the field's recipes (64) a ResNet step on a modern GPU is bound by kernel
launches, not arithmetic; replaying the captured step removes the per-kernel CPU cost. The
engine uses it when ``train.cuda_graphs`` allows (``auto``: on CUDA, for tasks that declare
``graph_safe``, with SGD, one process). How (following PyTorch's whole-network capture recipe):

1. the first ``warmup`` steps of the run run eagerly on a side stream (lazy initialisations:
   optimizer state, cuDNN/cuBLAS workspaces);
2. the next full batch is copied into static input buffers and the step is captured with
   ``set_to_none`` gradients (backward then allocates them from the graph's pool) and autocast's
   weight cache off; the capture itself computes nothing, so the graph is replayed at once;
3. every later full batch is copied into the static buffers and the graph replayed.

Python numbers read by the step (the learning rate, DKD's warm-up factor) are frozen into the
graph when it is captured, so the engine captures again at the start of every epoch
(:meth:`GraphedStep.invalidate`), when the schedule changes them. A batch of another shape (the
last, partial batch of an epoch) runs eagerly. If capture fails, the step falls back to eager
execution for the rest of the run and says why.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch


class GraphedStep:
    """Run ``step_fn(batch)`` through a captured CUDA graph (see the module docstring).

    ``simulate=True`` keeps the static-buffer bookkeeping but calls ``step_fn`` instead of
    capturing and replaying (used to test the plumbing on machines without CUDA).
    """

    def __init__(self, step_fn: Callable[[Sequence[torch.Tensor]], None], warmup: int = 3,
                 simulate: bool = False, on_fallback: Optional[Callable[[str], None]] = None):
        self.step_fn = step_fn
        self.warmup = int(warmup)
        self.simulate = simulate
        self.on_fallback = on_fallback
        self.graph = None
        self.static: Optional[tuple] = None
        self.warmed = 0
        self.disabled = False
        self.captures = 0
        self.replays = 0

    def invalidate(self) -> None:
        """Forget the graph: the next full batch is captured again (new epoch, new lr)."""
        self.graph = None

    def __call__(self, batch: Sequence[torch.Tensor]) -> None:
        if self.disabled:
            self.step_fn(batch)
            return
        if self.static is not None and any(a.shape != b.shape or a.dtype != b.dtype
                                           for a, b in zip(batch, self.static)):
            self.step_fn(batch)  # another shape (a partial last batch): eager
            return
        if self.warmed < self.warmup:
            self._warm(batch)
            return
        if self.graph is None:
            try:
                self._capture(batch)
            except Exception as err:  # a host sync or an unsupported op inside the step
                self.disabled, self.graph = True, None
                if self.on_fallback is not None:
                    self.on_fallback(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                self.step_fn(batch)
                return
        else:
            for dst, src in zip(self.static, batch):
                dst.copy_(src)
        self._replay()

    def _warm(self, batch) -> None:
        if self.simulate or not batch[0].is_cuda:
            self.step_fn(batch)
        else:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step_fn(batch)
            torch.cuda.current_stream().wait_stream(side)
        self.warmed += 1
        if self.static is None:
            self.static = tuple(t.clone() for t in batch)  # fixes the shape that is captured

    def _capture(self, batch) -> None:
        if self.static is None:
            self.static = tuple(t.clone() for t in batch)
        for dst, src in zip(self.static, batch):
            dst.copy_(src)
        if self.simulate:
            self.graph = "simulated"
        else:
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            self.graph = None  # the previous epoch's graph and its memory go first
            with torch.cuda.graph(graph):
                self.step_fn(self.static)
            self.graph = graph
        self.captures += 1

    def _replay(self) -> None:
        if self.simulate:
            self.step_fn(self.static)
        else:
            self.graph.replay()
        self.replays += 1


def graphed_step_for(cfg, task, device, world, optimizers, step_fn, say) -> Optional[GraphedStep]:
    """A :class:`GraphedStep` running ``step_fn`` when ``cfg.cuda_graphs`` allows it here, else None
    (with ``cuda_graphs=true``, ``say`` tells why not)."""
    setting = cfg.cuda_graphs
    if setting is False:
        return None
    why = None
    if device.type != "cuda":
        why = f"the device is {device} (CUDA graphs need a GPU)"
    elif not task.graph_safe:
        why = f"{type(task).__name__} is not a fixed-shape, sync-free step"
    elif world.distributed:
        why = "training runs on several processes"
    elif cfg.optimizer != "sgd" or list(optimizers) != ["main"]:
        why = "only a single SGD optimizer is captured"
    elif cfg.compile:
        why = "train.compile is on"
    if why is not None:
        if setting is True:
            say(f"train.cuda_graphs=true ignored: {why}; running the step eagerly")
        return None
    return GraphedStep(step_fn, on_fallback=lambda reason: say(
        f"CUDA graph capture failed ({reason}); running the step eagerly"))


def is_capturing() -> bool:
    """True while a CUDA graph is being captured on the current stream."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


__all__ = ["GraphedStep", "graphed_step_for", "is_capturing"]
