"""How similar a student is to its teacher: KL between their predictions and linear CKA of features.

(SFTN's Table 10 reports both on the test set after distillation.)
"""
from __future__ import annotations

import torch


def teacher_student_kl(logits_t: torch.Tensor, logits_s: torch.Tensor, temperature: float = 1.0) -> float:
    """``KL(softmax(z_t / T) || softmax(z_s / T))``, summed over classes, mean over the batch.

    Plain KL (no T^2 factor: that scales a training gradient, not a distance).
    """
    if temperature <= 0:
        raise ValueError(f"teacher_student_kl: temperature must be > 0, got {temperature}")
    zt = torch.as_tensor(logits_t).detach().to("cpu", torch.float64) / temperature
    zs = torch.as_tensor(logits_s).detach().to("cpu", torch.float64) / temperature
    if zt.shape != zs.shape or zt.dim() != 2:
        raise ValueError(f"teacher_student_kl: logits must both be (N, K), got {tuple(zt.shape)} "
                         f"and {tuple(zs.shape)}")
    log_pt, log_ps = zt.log_softmax(1), zs.log_softmax(1)
    return float((log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean())


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of features ``x`` (N, p) and ``y`` (N, q), rows = samples.

    Columns are centred, then ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. Invariant to
    orthogonal transforms and isotropic scaling of either side; CKA(X, X) = 1. Inputs with more
    than two dimensions are flattened per sample.
    """
    x = torch.as_tensor(x).detach().to("cpu", torch.float64).flatten(1)
    y = torch.as_tensor(y).detach().to("cpu", torch.float64).flatten(1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: x and y need the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denom == 0:
        raise ValueError("linear_cka: a feature matrix is constant over samples (zero after centring)")
    return float(cross / denom)


def compare_teacher_student(teacher, student, split, device="cpu", *, mean, std,
                            temperature: float = 1.0, batch_size: int = 512) -> dict:
    """Teacher-student ``kl`` (:func:`teacher_student_kl`) and ``cka`` (:func:`linear_cka` of the
    pooled embeddings, ``forward_features(x).embedding``) on ``split`` (normalized with mean/std)."""
    from .teacher_quality import predict

    t = predict(teacher, split, device, mean=mean, std=std, batch_size=batch_size, features=True)
    s = predict(student, split, device, mean=mean, std=std, batch_size=batch_size, features=True)
    return {"kl": teacher_student_kl(t["logits"], s["logits"], temperature),
            "cka": linear_cka(t["embedding"], s["embedding"])}
