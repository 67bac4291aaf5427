"""What an epoch measures, kept on the device so a step never waits for the host.

:class:`EpochMeter` sums the loss, correct predictions and every logged number of the steps in
device tensors (``add`` is a few in-place kernels: it may be captured in a CUDA graph), then
:meth:`EpochMeter.reduce` sums them over ranks once and returns the epoch's averages.

:class:`NonFiniteGuard` replaces a per-step ``loss.item()``: each step ORs ``~isfinite(loss)`` into
an on-device flag and records, on the device, the step and the loss and logs of the first
non-finite one; the trainer reads the flag every ``train.check_every`` steps and at the end of the
epoch and stops the run with the exact step in its message. Nothing is checkpointed in between, so
the last good checkpoint stays the resume point, as with a per-step check.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import distributed


def step_values(out, device) -> tuple[torch.Tensor, dict]:
    """The loss (float64) and logs of the step output ``out``, converted once per step for both the
    meter and the guard: a tensor log becomes a 0-d float64 tensor on ``device``, a number log a
    Python float (taken by the in-place ops as a scalar: no host-to-device copy)."""
    logs = {k: (v.detach().to(device=device, dtype=torch.float64).reshape(()) if torch.is_tensor(v)
                else float(v)) for k, v in out.logs.items()}
    return out.loss.detach().double(), logs


class EpochMeter:
    """Sums of one epoch's steps; see the module docstring."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.float64, device=self.device)
        self.logs: dict[str, torch.Tensor] = {}
        #: samples of the steps that logged each key (on the device, in place: a captured step
        #: counts on replay); a term logged on some steps only is averaged over those steps
        self.log_counts: dict[str, torch.Tensor] = {}
        self.seen = 0        # samples of the main steps (host counters: known without the device)
        self.counted = 0     # samples whose logits were scored

    def reset(self) -> None:
        """Zero the sums in place (the tensors keep their addresses: a captured step stays valid)."""
        self.loss.zero_()
        self.correct.zero_()
        for v in self.logs.values():
            v.zero_()
        for v in self.log_counts.values():
            v.zero_()
        self.seen = self.counted = 0

    def add_step(self, out, y: torch.Tensor, loss: torch.Tensor, logs: dict) -> None:
        """Device part of a main step: loss, correct predictions and logs, weighted by the batch
        (``loss`` and ``logs``: :func:`step_values` of ``out``)."""
        n = y.shape[0]
        self.loss.add_(loss * n)
        if out.logits is not None:
            self.correct.add_((out.logits.detach().argmax(1) == y).sum().double())
        self.add_logs(logs, n)

    def count(self, n: int, scored: bool) -> None:
        """Host part of a main step."""
        self.seen += n
        self.counted += n if scored else 0

    def add_logs(self, logs: dict, n: int) -> None:
        """Add ``logs`` (converted by :func:`step_values`) weighted by ``n``, and ``n`` to the
        sample count of each key."""
        for k, v in logs.items():
            if k not in self.logs:
                self.logs[k] = torch.zeros((), dtype=torch.float64, device=self.device)
                self.log_counts[k] = torch.zeros((), dtype=torch.float64, device=self.device)
            self.logs[k].add_(v * n)  # a float stays a scalar operand
            self.log_counts[k].add_(n)

    def reduce(self) -> dict:
        """The epoch's ``train_loss``, ``train_acc`` and ``train_<log>`` averaged over all ranks:
        each ``train_<log>`` is the sample-weighted mean over the steps that logged it (a term a
        method logs on its weight steps only is not diluted by its other steps)."""
        keys = sorted(self.logs)
        sums = torch.stack([self.loss, self.correct] + [self.logs[k] for k in keys]
                           + [self.log_counts[k] for k in keys]).tolist()
        totals = distributed.all_reduce_sum(sums + [float(self.seen), float(self.counted)], self.device)
        seen, counted = totals[-2], totals[-1]
        n = len(keys)
        row = {"train_loss": totals[0] / max(seen, 1),
               "train_acc": 100.0 * totals[1] / counted if counted else None}
        row.update({f"train_{k}": totals[2 + j] / totals[2 + n + j] if totals[2 + n + j] else None
                    for j, k in enumerate(keys)})
        return row

    def running_loss(self) -> float:
        """Mean loss of the epoch so far on this rank (synchronizes: call it rarely)."""
        return float(self.loss) / max(self.seen, 1)


class NonFiniteGuard:
    """On-device record of the first non-finite loss; see the module docstring."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.step = torch.zeros((), dtype=torch.long, device=self.device)
        self.first = torch.full((), -1, dtype=torch.long, device=self.device)
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.logs: dict[str, torch.Tensor] = {}

    def reset(self, step: int) -> None:
        """Start counting at global step ``step`` with no record."""
        self.step.fill_(step)
        self.first.fill_(-1)

    def observe(self, loss: torch.Tensor, logs: dict) -> None:
        """Record a step's ``loss`` and ``logs`` (:func:`step_values` of its output) if the loss is
        the first non-finite one (no host sync)."""
        new = ~torch.isfinite(loss) & (self.first < 0)
        self.first.copy_(torch.where(new, self.step, self.first))
        self.loss.copy_(torch.where(new, loss, self.loss))
        for k, v in logs.items():
            if k not in self.logs:
                self.logs[k] = torch.zeros((), dtype=torch.float64, device=self.device)
            if torch.is_tensor(v):
                self.logs[k].copy_(torch.where(new, v, self.logs[k]))
            else:  # a scalar fill: no host-to-device copy (masked_fill_ with a tensor value syncs)
                self.logs[k].masked_fill_(new, v)

    def tick(self) -> None:
        """The next batch (global step) begins."""
        self.step.add_(1)

    def first_bad(self) -> Optional[dict]:
        """None while every loss was finite, else ``{"step", "loss", "logs"}`` of the first bad one
        (synchronizes with the device)."""
        step = int(self.first)
        if step < 0:
            return None
        return {"step": step, "loss": float(self.loss),
                "logs": {k: float(v) for k, v in self.logs.items()}}


__all__ = ["EpochMeter", "NonFiniteGuard", "step_values"]
