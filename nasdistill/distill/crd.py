"""Contrastive Representation Distillation (Tian et al. 2020), RepDistiller's NCE form.

Pieces:

- :class:`EmbedHead`: ``v = normalize_L2(W e + b)``, one for the student, one for the teacher
  (dim 128).
- :class:`ContrastMemory`: two memory banks of ``num_data`` unit vectors, one per side, indexed by
  dataset index. Scores of sample ``i`` against bank rows ``j`` (row 0 = the positive ``idx[i]``, rows
  1..K negatives): ``s_ij = exp(<m_j, v_i> / tau) / Z`` where the student embedding is scored
  against the *teacher* bank and vice versa; ``Z = N * mean(exp(<m, v>/tau))`` is fixed on the first
  batch (RepDistiller's normalization constant). After scoring, the positive rows are updated with
  momentum and re-normalized: ``m_idx <- normalize(mu * m_idx + (1 - mu) * v)``.
- :func:`nce_contrast_loss`: with noise ``Pn = 1/N`` and ``m = K``,
  ``L = -1/B * sum_i [log(s_i0 / (s_i0 + m Pn + eps)) + sum_{j>=1} log(m Pn / (s_ij + m Pn + eps))]``.
- :class:`CRDLoss` = heads + memory + the NCE loss on both sides (student-anchored + teacher-anchored).

Differences from RepDistiller, all deliberate:

- Negatives: K indices drawn uniformly from the *other* dataset indices (the positive is never a
  negative); RepDistiller's default data loader draws them from other classes ("exact" mode), which
  needs labels of the whole set. Pass ``contrast_idx`` to :meth:`CRDLoss.forward` to use any
  sampler (its column 0 must be the positive).
- ``K = min(num_negatives, num_data - 1)``: tiny datasets (tests, digits) cannot supply 16384
  distinct negatives; ``CRDLoss.num_negatives`` reports the value used.
- Bank rows are initialized uniformly in ``[-stdv, stdv]``, ``stdv = 1/sqrt(dim/3)`` as in
  RepDistiller, then normalized to unit length (RepDistiller's rows have unit norm only in
  expectation), so the banks hold unit vectors at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .base import FeatureDistiller, FeatureKDConfig
from ..registry import register

__all__ = ["CRDConfig", "CRDDistiller", "CRDLoss", "ContrastMemory", "EmbedHead", "nce_contrast_loss"]


def nce_contrast_loss(scores: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE loss of ``(B, K+1)`` scores (column 0 positive), noise ``Pn = 1/num_data`` (see module doc)."""
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"nce_contrast_loss expects (batch, 1 + negatives) scores, got {tuple(scores.shape)}")
    m = scores.shape[1] - 1
    m_pn = m / float(num_data)
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_d1 = torch.log(pos / (pos + m_pn + eps))
    log_d0 = torch.log(m_pn / (neg + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class EmbedHead(nn.Module):
    """``v = (W x + b) / ||W x + b||_2`` on the flattened input."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.reshape(x.shape[0], -1))
        return z / z.pow(2).sum(1, keepdim=True).sqrt()


class ContrastMemory(nn.Module):
    """Momentum memory banks over the training set and the NCE scores (see module doc)."""

    def __init__(self, dim: int, num_data: int, num_negatives: int, temperature: float = 0.07,
                 momentum: float = 0.5):
        super().__init__()
        if num_data < 2:
            raise ValueError(f"ContrastMemory needs num_data >= 2 (a positive and a negative), got {num_data}")
        self.num_data = int(num_data)
        self.num_negatives = int(min(num_negatives, num_data - 1))
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        stdv = 1.0 / math.sqrt(dim / 3)
        for name in ("memory_s", "memory_t"):
            bank = torch.rand(num_data, dim).mul_(2 * stdv).add_(-stdv)
            self.register_buffer(name, bank / bank.norm(dim=1, keepdim=True))
        # Normalization constants Z (RepDistiller's Z_v1, Z_v2); negative = not yet set.
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def sample_contrast_idx(self, idx: torch.Tensor) -> torch.Tensor:
        """``(B, K+1)`` indices: column 0 = ``idx``, then K uniform draws among the other indices."""
        neg = torch.randint(0, self.num_data - 1, (idx.shape[0], self.num_negatives), device=idx.device)
        neg = neg + (neg >= idx.unsqueeze(1)).long()  # skip the positive
        return torch.cat([idx.unsqueeze(1), neg], dim=1)

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, idx: torch.Tensor,
                contrast_idx: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(out_s, out_t)``, each ``(B, K+1)``; then updates the banks at ``idx``."""
        if idx is None:
            raise ValueError("CRD needs the dataset indices of the batch (idx); use a data loader "
                             "that yields (x, y, idx)")
        idx = idx.reshape(-1).long()
        if idx.shape[0] != v_s.shape[0]:
            raise ValueError(f"CRD: {idx.shape[0]} indices for a batch of {v_s.shape[0]}")
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_data:
            raise ValueError(f"CRD: dataset index out of range [0, {self.num_data}); the memory bank "
                             f"is sized by num_data={self.num_data}, set it to the training set size")
        if contrast_idx is None:
            contrast_idx = self.sample_contrast_idx(idx)
        batch, k1 = contrast_idx.shape
        w_t = self.memory_t[contrast_idx.reshape(-1)].reshape(batch, k1, -1)
        w_s = self.memory_s[contrast_idx.reshape(-1)].reshape(batch, k1, -1)
        out_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / self.temperature)
        out_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / self.temperature)
        with torch.no_grad():
            if self.z_s < 0:
                self.z_s.fill_(out_s.mean().item() * self.num_data)
            if self.z_t < 0:
                self.z_t.fill_(out_t.mean().item() * self.num_data)
        out_s = out_s / self.z_s
        out_t = out_t / self.z_t
        self.update(v_s, v_t, idx)
        return out_s, out_t

    @torch.no_grad()
    def update(self, v_s: torch.Tensor, v_t: torch.Tensor, idx: torch.Tensor) -> None:
        """``m_idx <- normalize(momentum * m_idx + (1 - momentum) * v)`` for both banks."""
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            row = bank[idx] * self.momentum + v.detach() * (1 - self.momentum)
            bank.index_copy_(0, idx, row / row.norm(dim=1, keepdim=True))


class CRDLoss(nn.Module):
    """Embedding heads + memory + NCE on both sides: ``L = L_nce(out_s) + L_nce(out_t)``."""

    def __init__(self, dim_s: int, dim_t: int, num_data: int, feat_dim: int = 128,
                 num_negatives: int = 16384, temperature: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.embed_s = EmbedHead(dim_s, feat_dim)
        self.embed_t = EmbedHead(dim_t, feat_dim)
        self.memory = ContrastMemory(feat_dim, num_data, num_negatives, temperature, momentum)

    @property
    def num_negatives(self) -> int:
        return self.memory.num_negatives

    def forward(self, emb_s: torch.Tensor, emb_t: torch.Tensor, idx: torch.Tensor,
                contrast_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        out_s, out_t = self.memory(self.embed_s(emb_s), self.embed_t(emb_t), idx, contrast_idx)
        n = self.memory.num_data
        return nce_contrast_loss(out_s, n) + nce_contrast_loss(out_t, n)


@dataclass
class CRDConfig(FeatureKDConfig):
    """CRD on the pooled embeddings; RepDistiller defaults (``-b 0.8``, nce_k 16384, t 0.07, m 0.5)."""

    __bounds__ = {"feat_dim": ">= 1", "num_negatives": ">= 1", "nce_temperature": "> 0",
                  "momentum": ">= 0, <= 1"}

    feat_weight: float = 0.8
    feat_dim: int = 128
    num_negatives: int = 16384
    nce_temperature: float = 0.07
    momentum: float = 0.5


@register("distiller", "crd", config=CRDConfig, display_name="CRD")
class CRDDistiller(FeatureDistiller):
    """CE + ``feat_weight`` * CRD on embeddings; the memory bank has ``num_data`` rows (needs ``idx``)."""

    @classmethod
    def build(cls, student, teacher, cfg=None, context=None):
        return cls(student, teacher, cfg, num_data=getattr(context, "num_data", None))

    def __init__(self, student, teacher, cfg: Optional[CRDConfig] = None, num_data: Optional[int] = None):
        super().__init__(student, teacher, cfg)
        if num_data is None:
            raise ValueError("crd needs num_data (the training set size) to size its memory bank: "
                             "build_distiller('crd', ..., num_data=len(train_set))")
        c = self.cfg
        self.crd = CRDLoss(student.classifier.in_features, teacher.classifier.in_features, num_data,
                           c.feat_dim, c.num_negatives, c.nce_temperature, c.momentum)

    def extra_modules(self):
        return [self.crd]

    def feature_loss(self, feats_s, feats_t, y, idx):
        return self.crd(feats_s.embedding, feats_t.embedding, idx)
