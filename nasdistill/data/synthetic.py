"""A synthetic dataset whose Bayes posterior is known exactly for every image.

Generative model (K classes, images C x S x S, d = C*S*S):

    y ~ Categorical(pi),   x | y=k ~ N(mu_k, sigma^2 I)

so by Bayes' rule, with the shared normalizer of the Gaussians cancelling,

    p(y=k | x) = softmax_k( log pi_k - ||x - mu_k||^2 / (2 sigma^2) ).

The class means mu_k are fixed random *smooth* patterns (Gaussian noise blurred by a Gaussian of
width ``smoothness`` pixels, standardized, then 0.5 + 0.15 * pattern, so they live in about
[0.05, 0.95]). Unless ``noise`` is given, sigma is calibrated by bisection so that the Bayes accuracy
(accuracy of argmax p(y|x)) on a fixed Monte Carlo sample equals ``bayes_accuracy`` (default 0.85):
classes overlap, so a calibrated teacher has something to be calibrated about. Images are NOT
clipped to [0, 1], since clipping would change the density and break the exact posterior.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nasdistill.data.splits import DatasetSplits, Split, channel_stats
from nasdistill.registry import register

_CALIBRATION_SAMPLES = 4096


@dataclass(frozen=True, repr=False)
class GaussianClassModel:
    """Class-conditional isotropic Gaussians: ``means`` (K,C,S,S) float64, ``sigma``, ``priors`` (K,)."""

    means: np.ndarray
    sigma: float
    priors: np.ndarray

    def __repr__(self) -> str:
        return (f"GaussianClassModel(classes={self.num_classes}, "
                f"shape={tuple(self.means.shape[1:])}, sigma={self.sigma:.4g})")

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    def logits(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """log pi_k - ||x - mu_k||^2 / (2 sigma^2), float64, shape (N, K)."""
        x = torch.as_tensor(images).detach().to("cpu", torch.float64)
        if x.shape[1:] != self.means.shape[1:]:
            raise ValueError(f"bayes_posterior: images must be (N, {', '.join(map(str, self.means.shape[1:]))}), "
                             f"got {tuple(x.shape)}")
        x = x.reshape(x.shape[0], -1)
        mu = torch.from_numpy(self.means.reshape(self.num_classes, -1))
        sq = torch.cdist(x, mu, compute_mode="donot_use_mm_for_euclid_dist").square() if x.shape[0] else x.new_zeros(0, self.num_classes)
        return torch.from_numpy(np.log(self.priors)) - sq / (2.0 * self.sigma ** 2)

    def posterior(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Exact p(y|x) = softmax_k(log pi_k - ||x - mu_k||^2 / (2 sigma^2)), float32 (N, K)."""
        return torch.softmax(self.logits(images), dim=1).float()

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` draws (images float32 (n,C,S,S), labels int64 (n,))."""
        labels = rng.choice(self.num_classes, size=n, p=self.priors).astype(np.int64)
        noise = rng.standard_normal((n,) + self.means.shape[1:])
        return (self.means[labels] + self.sigma * noise).astype(np.float32), labels


def smooth_means(num_classes: int, channels: int, size: int, smoothness: float,
                 rng: np.random.Generator) -> np.ndarray:
    """K random smooth patterns (K,C,S,S) in about [0.05, 0.95] (see module docstring)."""
    from scipy.ndimage import gaussian_filter

    raw = rng.standard_normal((num_classes, channels, size, size))
    if smoothness > 0:
        raw = gaussian_filter(raw, sigma=(0, 0, smoothness, smoothness), mode="wrap")
    flat = raw.reshape(num_classes, -1)
    flat = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True).clip(1e-12)
    return 0.5 + 0.15 * flat.reshape(raw.shape)


def calibrate_sigma(means: np.ndarray, priors: np.ndarray, target: float, seed: int) -> float:
    """sigma whose Bayes accuracy on a fixed Monte Carlo sample is ``target`` (bisection on log sigma).

    Accuracy falls from 1 (sigma -> 0) towards max(pi) (sigma -> inf), so ``target`` must lie strictly
    between max(pi) and 1.
    """
    if not float(priors.max()) < target < 1.0:
        raise ValueError(f"synthetic: bayes_accuracy={target} must lie strictly between the largest "
                         f"prior {priors.max():.3f} (chance) and 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA11B]))
    labels = rng.choice(len(priors), size=_CALIBRATION_SAMPLES, p=priors)
    noise = rng.standard_normal((_CALIBRATION_SAMPLES,) + means.shape[1:])
    # ||mu_y + sigma z - mu_k||^2 = D_k + 2 sigma A_k + sigma^2 ||z||^2; the last term is common to
    # all k, so each bisection step is O(N K) once D and A are known.
    mu = means.reshape(len(priors), -1)
    gram = mu @ mu.T
    sq_norm = np.diag(gram)
    dist = sq_norm[labels][:, None] + sq_norm[None, :] - 2.0 * gram[labels]   # D (N, K)
    proj = noise.reshape(len(labels), -1) @ mu.T                               # z . mu_k
    cross = proj[np.arange(len(labels)), labels][:, None] - proj               # A (N, K)
    log_prior = np.log(priors)

    def accuracy(sigma: float) -> float:
        logits = log_prior - (dist + 2.0 * sigma * cross) / (2.0 * sigma ** 2)
        return float((logits.argmax(1) == labels).mean())

    lo, hi = -12.0, 6.0  # log sigma
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if accuracy(float(np.exp(mid))) > target:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def load_synthetic_splits(seed: int = 0, val_size: int = 500, num_classes: int = 10,
                          size: int = 8, channels: int = 1, n_train: int = 2000,
                          n_val: int | None = None, n_test: int = 1000,
                          noise: float | None = None, bayes_accuracy: float = 0.85,
                          priors: tuple[float, ...] | None = None,
                          smoothness: float = 1.0) -> DatasetSplits:
    """Train/val/test drawn independently from one `GaussianClassModel` fixed by ``seed``.

    ``n_val`` (or its alias ``val_size``) is the number of validation draws; 0 makes val the test
    split. Every split carries ``posterior`` (exact p(y|x), float32 (N,K)), and the returned
    object's ``bayes_posterior(images)`` computes it for any image.
    """
    n_val = val_size if n_val is None else n_val
    for what, v in (("num_classes", num_classes), ("size", size), ("channels", channels),
                    ("n_train", n_train)):
        if int(v) < 1:
            raise ValueError(f"synthetic: {what} must be >= 1, got {v}")
    if num_classes < 2:
        raise ValueError(f"synthetic: num_classes must be >= 2, got {num_classes}")
    pri = np.full(num_classes, 1.0 / num_classes) if priors is None else np.asarray(priors, float)
    if pri.shape != (num_classes,) or (pri <= 0).any() or abs(pri.sum() - 1) > 1e-6:
        raise ValueError(f"synthetic: priors must be {num_classes} positive numbers summing to 1, "
                         f"got {priors!r}")
    means = smooth_means(num_classes, channels, size, smoothness,
                         np.random.default_rng(np.random.SeedSequence([seed, 0x3EA5])))
    if noise is None:
        sigma = calibrate_sigma(means, pri, bayes_accuracy, seed)
    elif noise <= 0:
        raise ValueError(f"synthetic: noise (sigma) must be > 0, got {noise}")
    else:
        sigma = float(noise)
    model = GaussianClassModel(means, sigma, pri)

    def draw(n: int, stream: int) -> Split:
        images, labels = model.sample(int(n), np.random.default_rng(np.random.SeedSequence([seed, stream])))
        x = torch.from_numpy(images)
        return Split(x, torch.from_numpy(labels), None, model.posterior(x))

    train, test = draw(n_train, 1), draw(n_test, 3)
    val = draw(n_val, 2) if n_val else test
    mean, std = channel_stats(train.images)
    return DatasetSplits(
        name="synthetic", train=train, val=val, test=test, num_classes=num_classes,
        input_size=(channels, size, size), mean=mean, std=std, augment=False,
        class_names=tuple(f"class{k}" for k in range(num_classes)), source_model=model,
    )


register("dataset", "synthetic", load_synthetic_splits, default_space="digits_small", order=20)
