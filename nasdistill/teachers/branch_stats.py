"""What the weight steps of a branched teacher (SFTN, GTN) saw during an epoch: the supplement's
precondition, read off the training forwards themselves.

The GTN supplement (Figure 1) asks that the branches' accuracies rise with the teacher's; when the
branches (sampled supernet paths) have not learned, L_CT pulls the teacher toward uncertain
predictions and its logits go flat. :class:`BranchStepStats` accumulates, over the weight steps'
own forward passes (BatchNorm in training mode, the paths actually sampled, no extra forward):

- ``sampled_branch{i}_acc``: top-1 accuracy (%) of branch i (1-based) on those steps' batches;
- ``sampled_branch{i}_entropy``: mean entropy (nats) of softmax(z_R^i) at T = 1;
- ``teacher_logit_std``: the standard deviation of each sample's teacher logits over the classes
  (population std, ``correction=0``), averaged over the samples;
- ``teacher_entropy_t1`` / ``teacher_entropy_kd``: mean entropy (nats) of softmax(z_T / T) at
  T = 1 and at the distillation temperature (``kd_temperature``, KD's T).

The sums stay on the device (in-place adds, no host sync per step, as
:class:`~nasdistill.engine.meter.EpochMeter`); :meth:`BranchStepStats.metrics` reads them once per
epoch, summed over ranks, and starts the next epoch.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..engine import distributed


def mean_entropy_sum(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sum over the batch of the entropy (nats) of ``softmax(logits / temperature)``."""
    log_p = F.log_softmax(logits.float() / temperature, 1)
    return -(log_p.exp() * log_p).sum()


class BranchStepStats:
    """Per-epoch sums of the weight steps' branch and teacher statistics (module docstring)."""

    def __init__(self, n_branches: int, kd_temperature: float):
        self.n, self.kd_temperature = n_branches, float(kd_temperature)
        self._sums: Optional[torch.Tensor] = None
        # host counters (known without the device): samples seen per branch and by the teacher
        self._branch_n = [0] * n_branches
        self._teacher_n = 0

    # rows of self._sums: 0 teacher std, 1 teacher entropy T=1, 2 teacher entropy T=kd, then
    # per branch i: 3 + 2i correct, 4 + 2i entropy
    def _buffer(self, device) -> torch.Tensor:
        if self._sums is None or self._sums.device != torch.device(device):
            self._sums = torch.zeros(3 + 2 * self.n, dtype=torch.float64, device=device)
        return self._sums

    @torch.no_grad()
    def add(self, z_t: torch.Tensor, branch_logits: Sequence[torch.Tensor], y: torch.Tensor,
            branch_ids: Optional[Sequence[int]] = None) -> None:
        """One weight step: teacher logits, the logits of branches ``branch_ids`` (default all)."""
        sums = self._buffer(z_t.device)
        z = z_t.detach().float()
        b = y.shape[0]
        # in-place adds into views of one buffer: no host-to-device copy, no sync
        sums[0:3].add_(torch.stack([z.std(1, correction=0).sum(), mean_entropy_sum(z, 1.0),
                                    mean_entropy_sum(z, self.kd_temperature)]).double())
        ids = range(self.n) if branch_ids is None else branch_ids
        for i, zb in zip(ids, branch_logits):
            zb = zb.detach().float()
            sums[3 + 2 * i:5 + 2 * i].add_(torch.stack([(zb.argmax(1) == y).sum().double(),
                                                        mean_entropy_sum(zb, 1.0).double()]))
            self._branch_n[i] += b
        self._teacher_n += b

    def metrics(self) -> dict:
        """The epoch's entries (module docstring); resets the sums. Empty when no step was seen."""
        if self._sums is None or not self._teacher_n and not any(self._branch_n):
            return {}
        device = self._sums.device
        values = distributed.all_reduce_sum(self._sums.tolist() + [float(self._teacher_n)]
                                            + [float(n) for n in self._branch_n], device)
        sums, tn, bn = values[:3 + 2 * self.n], values[3 + 2 * self.n], values[4 + 2 * self.n:]
        out = {}
        for i in range(self.n):
            if bn[i]:
                out[f"sampled_branch{i + 1}_acc"] = 100.0 * sums[3 + 2 * i] / bn[i]
                out[f"sampled_branch{i + 1}_entropy"] = sums[4 + 2 * i] / bn[i]
        if tn:
            out.update(teacher_logit_std=sums[0] / tn, teacher_entropy_t1=sums[1] / tn,
                       teacher_entropy_kd=sums[2] / tn)
        self._sums.zero_()
        self._branch_n = [0] * self.n
        self._teacher_n = 0
        return out


__all__ = ["BranchStepStats", "mean_entropy_sum"]
