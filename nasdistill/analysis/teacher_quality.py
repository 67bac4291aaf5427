"""How good a teacher's soft labels are: distance to the true posterior, and calibration.

All functions take probabilities (rows summing to 1) or logits as (N, K) tensors and compute in
float64. On the ``synthetic`` dataset every split carries the exact Bayes posterior p(y|x), so
:func:`evaluate_teacher_quality` can say how far a teacher's softmax is from it (the quantity the
MSE-teacher and SoTeacher papers argue a student benefits from).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def _as_probs(t: torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(t).detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{what} must be (N, K), got shape {tuple(t.shape)}")
    return t


def posterior_mse(probs: torch.Tensor, posterior: torch.Tensor) -> float:
    """``mean_n sum_k (probs_nk - posterior_nk)^2``: squared Euclidean distance, batch mean.

    (Summed over classes, as the MSE-teacher paper's E||f(x) - p(.|x)||^2; divide by K for the
    per-element mean.)
    """
    p, q = _as_probs(probs, "probs"), _as_probs(posterior, "posterior")
    if p.shape != q.shape:
        raise ValueError(f"posterior_mse: shapes differ, {tuple(p.shape)} vs {tuple(q.shape)}")
    return float((p - q).square().sum(dim=1).mean())


def posterior_kl(posterior: torch.Tensor, probs: torch.Tensor, eps: float = 1e-12) -> float:
    """``KL(posterior || probs)`` = mean_n sum_k p_nk (log p_nk - log q_nk), with 0 log 0 = 0.

    ``probs`` is clamped at ``eps`` so a teacher that puts (numerically) zero mass on a class the
    posterior allows gives a large but finite value.
    """
    p, q = _as_probs(posterior, "posterior"), _as_probs(probs, "probs")
    if p.shape != q.shape:
        raise ValueError(f"posterior_kl: shapes differ, {tuple(p.shape)} vs {tuple(q.shape)}")
    terms = torch.where(p > 0, p * (p.clamp_min(eps).log() - q.clamp_min(eps).log()), torch.zeros_like(p))
    return float(terms.sum(dim=1).mean())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017), as a fraction in [0, 1].

    Confidence = max_k probs; ``n_bins`` equal-width bins (lo, hi] over [0, 1] (confidence 0 goes to
    the first bin); ECE = sum_b (|B_b| / N) * |accuracy(B_b) - mean confidence(B_b)|.
    """
    p = _as_probs(probs, "probs")
    y = torch.as_tensor(labels).detach().to("cpu", torch.int64)
    if y.shape != (p.shape[0],):
        raise ValueError(f"expected_calibration_error: labels must be ({p.shape[0]},), got {tuple(y.shape)}")
    if n_bins < 1:
        raise ValueError(f"expected_calibration_error: n_bins must be >= 1, got {n_bins}")
    if p.shape[0] == 0:
        raise ValueError("expected_calibration_error: no samples")
    conf, pred = p.max(dim=1)
    correct = (pred == y).double()
    # bin b holds conf in (b/n, (b+1)/n]; ceil(conf * n) - 1, with 0 put in bin 0
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    n = p.shape[0]
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    return float((conf_sum - acc_sum).abs().sum() / n)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising the mean negative
    log-likelihood of ``softmax(logits / T)`` on held-out ``(logits, labels)``.

    ``NLL(b) = mean_n [logsumexp_k(b z_nk) - b z_ny]`` is convex in ``b = 1 / T``; it is minimised
    over ``log b`` in ``[-7, 7]`` (T from about 0.001 to 1100) by bounded Brent, to a relative
    precision of about 1e-6. ``T > 1`` softens an overconfident model, ``T < 1`` sharpens an
    underconfident (flat) one; the argmax, hence the accuracy, is unchanged.
    """
    from scipy.optimize import minimize_scalar

    z = _as_probs(logits, "logits")
    y = torch.as_tensor(labels).detach().to("cpu", torch.int64)
    if y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError(f"fit_temperature: need (N, K) logits and (N,) labels, N > 0; got "
                         f"{tuple(z.shape)} and {tuple(y.shape)}")
    picked = z.gather(1, y.view(-1, 1)).squeeze(1)

    def nll(log_b: float) -> float:
        b = math.exp(log_b)
        return float((torch.logsumexp(b * z, dim=1) - b * picked).mean())

    best = minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(-best.x))


def predict(model: nn.Module, split, device="cpu", *, mean, std, batch_size: int = 512,
            features: bool = False) -> dict:
    """Run ``model`` (eval mode) over ``split`` (a `Split`, images normalized with ``mean``/``std``).

    Returns ``logits`` (N, K float32, CPU) and ``labels``; with ``features=True`` also the pooled
    ``embedding`` (N, D) from ``model.forward_features`` (for CKA).
    """
    from ..data.device_loader import DeviceLoader
    from ..engine.evaluation import eval_batches

    device = torch.device(device)
    loader = DeviceLoader(split, batch_size, shuffle=False, augment=False, mean=mean, std=std,
                          device=device)
    logits, labels, embeds = [], [], []

    def collect(out, batch):
        if features:
            logits.append(out.logits.float().cpu())
            embeds.append(out.embedding.float().flatten(1).cpu())
        else:
            logits.append(out.float().cpu())
        labels.append(batch[1].cpu())

    eval_batches(model, loader, collect, model.forward_features if features else None, device=device)
    out = {"logits": torch.cat(logits), "labels": torch.cat(labels)}
    if features:
        out["embedding"] = torch.cat(embeds)
    return out


def evaluate_teacher_quality(model: nn.Module, split, device="cpu", *, mean=None, std=None,
                             batch_size: int = 512, n_bins: int = 15) -> dict:
    """Accuracy, ECE and (when ``split.posterior`` exists) MSE / KL to the true posterior.

    ``split`` is a `Split` (then ``mean``/``std``, the dataset's normalization, are required) or a
    `DatasetSplits` (its test split and normalization are used). Returns ``accuracy`` (percent, as
    the trainer's ``test_acc``), ``ece`` (fraction), ``n``, and with a posterior also
    ``posterior_mse``, ``posterior_kl`` (KL(true || teacher)) and ``bayes_accuracy`` (percent
    accuracy of the posterior's argmax on the same samples, the ceiling for any teacher).
    """
    from ..data.splits import DatasetSplits

    if isinstance(split, DatasetSplits):
        mean = split.mean if mean is None else mean
        std = split.std if std is None else std
        split = split.test
    if mean is None or std is None:
        raise ValueError("evaluate_teacher_quality: pass mean= and std= (the dataset's normalization, "
                         "e.g. splits.mean / splits.std) with a Split, or pass the DatasetSplits")
    out = predict(model, split, device, mean=mean, std=std, batch_size=batch_size)
    probs = torch.softmax(out["logits"].double(), dim=1)
    labels = out["labels"]
    result = {"n": int(labels.shape[0]),
              "accuracy": 100.0 * float((probs.argmax(1) == labels).double().mean()),
              "ece": expected_calibration_error(probs, labels, n_bins)}
    posterior: Optional[torch.Tensor] = getattr(split, "posterior", None)
    if posterior is not None:
        result.update(posterior_mse=posterior_mse(probs, posterior),
                      posterior_kl=posterior_kl(posterior, probs),
                      bayes_accuracy=100.0 * float((posterior.argmax(1) == labels).double().mean()))
    return result
