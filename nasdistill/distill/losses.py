"""Distillation losses as plain functions of tensors.

Numerics follow the reference implementations every KD table uses: RepDistiller
(``distiller_zoo``) for KD, FitNets, AT, SP, RKD, PKT and mdistiller for DKD. Each function returns
an unweighted scalar tensor; the distillers apply the method weights. CRD needs state (embedding
heads and a memory bank) and lives in :mod:`nasdistill.distill.crd`.

Notation: ``B`` batch size, ``T`` temperature, ``softmax`` over classes (dim 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "at_loss", "attention_map", "dkd_loss", "fitnet_loss", "kd_loss", "pairwise_distances",
    "pkt_loss", "pool_to_smaller", "rkd_loss", "sp_loss", "standardize_logits",
]


def _check_same_shape(name: str, a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: student {what} has shape {tuple(a.shape)} but teacher {what} has "
                         f"{tuple(b.shape)}; they must match (use a regressor or pool first)")


def _check_batch(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name}: student batch {a.shape[0]} != teacher batch {b.shape[0]}; "
                         "feed both networks the same inputs")


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization (Sun et al., CVPR 2024): each row z-scored over the classes,

    ``z = (l - mean_c(l)) / (std_c(l) + eps)``

    with the unbiased standard deviation (``torch.std``'s default, as in the authors' code). A flat
    teacher (small logit spread) and a sharp one then hand the student targets of the same
    sharpness at a given temperature: only the ranking of the classes and their relative gaps
    remain. Applied to the student's logits too, the student is not asked to match the teacher's
    scale either.
    """
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + eps)


def kd_loss(logits_s: torch.Tensor, logits_t: torch.Tensor, temperature: float,
            standardize: bool = False) -> torch.Tensor:
    """Hinton KD.

    ``L = T^2 / B * sum_b sum_c p_t[b,c] * (log p_t[b,c] - log p_s[b,c])``
    with ``p = softmax(z / T)``, i.e. KL(p_t || p_s) * T^2 summed over classes, averaged over the batch.
    ``standardize``: both logits go through :func:`standardize_logits` first.
    """
    _check_same_shape("kd_loss", logits_s, logits_t, "logits")
    if standardize:
        logits_s, logits_t = standardize_logits(logits_s), standardize_logits(logits_t)
    log_p_s = F.log_softmax(logits_s / temperature, dim=1)
    p_t = F.softmax(logits_t / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="sum") * temperature ** 2 / logits_s.shape[0]


def dkd_loss(logits_s: torch.Tensor, logits_t: torch.Tensor, target: torch.Tensor,
             alpha: float, beta: float, temperature: float, standardize: bool = False) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022), mdistiller numerics, without CE and without warm-up.

    ``p = softmax(z / T)``; binary ``b = [p_gt, 1 - p_gt]`` (sum of the non-target probabilities);
    ``TCKD = T^2 / B * sum_b KL(b_t || b_s)``;
    ``NCKD = T^2 / B * sum_b KL(softmax(z_t/T - 1000*gt) || softmax(z_s/T - 1000*gt))``
    where ``gt`` is the one-hot target mask (the target class is pushed out of the softmax).
    Returns ``alpha * TCKD + beta * NCKD``. ``standardize``: both logits go through
    :func:`standardize_logits` first (as the logit-standardization authors plug it into DKD).
    """
    _check_same_shape("dkd_loss", logits_s, logits_t, "logits")
    if standardize:
        logits_s, logits_t = standardize_logits(logits_s), standardize_logits(logits_t)
    target = target.reshape(-1)
    if target.shape[0] != logits_s.shape[0]:
        raise ValueError(f"dkd_loss: {target.shape[0]} targets for a batch of {logits_s.shape[0]} logits")
    gt = torch.zeros_like(logits_s).scatter_(1, target.unsqueeze(1), 1.0)
    other = 1.0 - gt
    p_s = F.softmax(logits_s / temperature, dim=1)
    p_t = F.softmax(logits_t / temperature, dim=1)
    b_s = torch.cat([(p_s * gt).sum(1, keepdim=True), (p_s * other).sum(1, keepdim=True)], dim=1)
    b_t = torch.cat([(p_t * gt).sum(1, keepdim=True), (p_t * other).sum(1, keepdim=True)], dim=1)
    batch = target.shape[0]
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * temperature ** 2 / batch
    log_q_s = F.log_softmax(logits_s / temperature - 1000.0 * gt, dim=1)
    q_t = F.softmax(logits_t / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="sum") * temperature ** 2 / batch
    return alpha * tckd + beta * nckd


def fitnet_loss(f_s_regressed: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss: ``mean((r(f_s) - f_t)^2)`` over every element (``nn.MSELoss``)."""
    _check_same_shape("fitnet_loss", f_s_regressed, f_t, "hint feature")
    return F.mse_loss(f_s_regressed, f_t)


def pool_to_smaller(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of two ``(B, C, H, W)`` maps to the other's ``(H, W)``.

    RepDistiller's AT compares heights only and pools to a square; for the square maps of every
    CIFAR network that is the same as pooling to ``(min H, min W)``, which is what we do.
    """
    (hs, ws), (ht, wt) = f_s.shape[2:], f_t.shape[2:]
    size = (min(hs, ht), min(ws, wt))
    if (hs, ws) != size:
        f_s = F.adaptive_avg_pool2d(f_s, size)
    if (ht, wt) != size:
        f_t = F.adaptive_avg_pool2d(f_t, size)
    return f_s, f_t


def attention_map(f: torch.Tensor, p: float = 2) -> torch.Tensor:
    """AT map of a ``(B, C, H, W)`` feature: ``a = normalize_L2(mean_c f^p)`` flattened to ``(B, H*W)``."""
    return F.normalize(f.pow(p).mean(1).reshape(f.shape[0], -1))


def at_loss(f_s: torch.Tensor, f_t: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Attention transfer for one stage pair: ``mean((a(f_s) - a(f_t))^2)`` over batch and positions.

    The larger spatial map is first adaptive-average-pooled to the smaller (see :func:`pool_to_smaller`);
    channel counts may differ (the map averages over channels).
    """
    if f_s.dim() != 4 or f_t.dim() != 4:
        raise ValueError(f"at_loss expects (B, C, H, W) maps, got student {tuple(f_s.shape)} "
                         f"and teacher {tuple(f_t.shape)}")
    _check_batch("at_loss", f_s, f_t)
    f_s, f_t = pool_to_smaller(f_s, f_t)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori 2019).

    ``G = normalize_rows(F F^T)`` with ``F`` the batch flattened to ``(B, -1)``;
    ``L = ||G_t - G_s||_F^2 / B^2``. Shapes other than the batch may differ.
    """
    _check_batch("sp_loss", f_s, f_t)
    batch = f_s.shape[0]
    a = f_s.reshape(batch, -1)
    b = f_t.reshape(batch, -1)
    g_s = F.normalize(a @ a.t())
    g_t = F.normalize(b @ b.t())
    return (g_t - g_s).pow(2).sum() / (batch * batch)


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances ``d_ij = sqrt(max(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, eps))``, zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(emb_s: torch.Tensor, emb_t: torch.Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> torch.Tensor:
    """Relational KD (Park et al. 2019).

    Distance term: ``d = pdist(e) / mean(d_ij > 0)``; ``L_d = huber(d_s, d_t)`` (smooth L1, beta 1,
    mean over all B^2 entries). Angle term: ``u_ij = normalize(e_j - e_i)``, ``psi_ijk = <u_ij, u_ik>``;
    ``L_a = huber(psi_s, psi_t)`` (mean over B^3). ``L = distance_weight*L_d + angle_weight*L_a``.
    The teacher side is computed without gradient.
    """
    _check_batch("rkd_loss", emb_s, emb_t)
    s = emb_s.reshape(emb_s.shape[0], -1)
    t = emb_t.reshape(emb_t.shape[0], -1)
    with torch.no_grad():
        d_t = pairwise_distances(t)
        d_t = d_t / d_t[d_t > 0].mean()
        a_t = _angles(t)
    d_s = pairwise_distances(s)
    d_s = d_s / d_s[d_s > 0].mean()
    loss_d = F.smooth_l1_loss(d_s, d_t)
    loss_a = F.smooth_l1_loss(_angles(s), a_t)
    return distance_weight * loss_d + angle_weight * loss_a


def _cosine_kernel(e: torch.Tensor, eps: float) -> torch.Tensor:
    e = e / (e.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    e = torch.nan_to_num(e, nan=0.0)
    k = (e @ e.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(emb_s: torch.Tensor, emb_t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018), RepDistiller numerics.

    ``k_ij = (cos(e_i, e_j) + 1) / 2`` (vectors divided by ``norm + eps``), rows turned into
    conditional distributions ``P_ij = k_ij / sum_j k_ij``;
    ``L = mean_ij P_t,ij * log((P_t,ij + eps) / (P_s,ij + eps))`` (mean over all B^2 entries).
    """
    _check_batch("pkt_loss", emb_s, emb_t)
    p_s = _cosine_kernel(emb_s.reshape(emb_s.shape[0], -1), eps)
    p_t = _cosine_kernel(emb_t.reshape(emb_t.shape[0], -1), eps)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))
