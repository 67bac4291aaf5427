"""The containers every dataset returns (`Split`, `DatasetSplits`) and seeded stratified splitting.

Conventions
-----------
* ``Split.images`` is (N, C, H, W), un-normalized. Small sets (digits, synthetic) store float32 in
  [0, 1]; big sets (cifar, imagefolder) store uint8 in 0..255 (4x less memory, and a whole CIFAR
  train set then fits on any accelerator). `DeviceLoader` accepts both and scales uint8 by 1/255.
  Synthetic images are Gaussian samples and are NOT clipped (clipping would break the exact
  posterior), so a few values fall slightly outside [0, 1].
* ``Split.indices`` is the sample's index within its split, 0..N-1, stable for a given seed: per-sample
  state (SoTeacher's running targets) is keyed by it.
* A split is a pure function of the dataset seed, independent of any training seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Split:
    """One split: ``images`` (N,C,H,W float32 in [0,1] or uint8), ``labels`` (N int64), ``indices``
    (N int64, 0..N-1), and, for datasets with a known generative model, ``posterior`` (N,K float32,
    the exact Bayes p(y|x))."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor | None = None
    posterior: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"Split.images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        n = self.images.shape[0]
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.labels.shape != (n,):
            raise ValueError(f"Split.labels must have shape ({n},) to match images, "
                             f"got {tuple(self.labels.shape)}")
        if self.indices is None:
            self.indices = torch.arange(n, dtype=torch.int64)
        self.indices = torch.as_tensor(self.indices, dtype=torch.int64)
        if self.indices.shape != (n,):
            raise ValueError(f"Split.indices must have shape ({n},), got {tuple(self.indices.shape)}")
        if self.posterior is not None and self.posterior.shape[0] != n:
            raise ValueError(f"Split.posterior must have {n} rows, got {tuple(self.posterior.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, rows: np.ndarray | torch.Tensor) -> "Split":
        """The rows ``rows`` as a new split, re-indexed 0..len(rows)-1."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
        post = None if self.posterior is None else self.posterior[rows]
        return Split(self.images[rows], self.labels[rows], None, post)


@dataclass
class DatasetSplits:
    """A dataset ready for training: three splits plus what the model and loader need to know.

    ``augment`` is the recipe default for crop+flip (True for cifar/imagefolder, False for digits and
    synthetic). ``mean``/``std`` are per-channel and apply to images in [0, 1].
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    class_names: tuple[str, ...] | None = None
    source_model: Any = field(default=None, repr=False)

    def bayes_posterior(self, images: torch.Tensor) -> torch.Tensor:
        """Exact p(y|x) for any images (N,C,H,W), from ``source_model.posterior``; only for datasets
        with a known generative model (synthetic: a `GaussianClassModel`)."""
        if self.source_model is None:
            raise ValueError(f"dataset {self.name!r} has no known generative model, so no exact "
                             "Bayes posterior; use dataset 'synthetic' for that")
        return self.source_model.posterior(images)


def split_sizes(n: int, size: float | int, what: str) -> int:
    """Turn ``size`` (a fraction in [0, 1) or an absolute count) into a count out of ``n``."""
    if isinstance(size, bool) or size < 0:
        raise ValueError(f"{what} must be a fraction in [0, 1) or a count >= 0, got {size!r}")
    if isinstance(size, float) and size < 1:
        return int(round(size * n))
    count = int(size)
    if count != size:
        raise ValueError(f"{what}={size!r}: give a fraction below 1 or a whole number of samples")
    if count >= n:
        raise ValueError(f"{what}={count} leaves nothing out of {n} samples; use a smaller value")
    return count


def stratified_holdout(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows 0..N-1 into (kept, held_out) with ``count`` held out, stratified by label.

    Deterministic in ``seed``; both index arrays are sorted so the order of the source is preserved.
    Per class c the held-out share is round-robin proportional: largest remainders get the extras.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if count == 0:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * count / n
    take = np.floor(exact).astype(int)
    extra = count - take.sum()
    order = np.lexsort((rng.random(len(classes)), -(exact - take)))
    take[order[:extra]] += 1
    held = []
    for c, k in zip(classes, take):
        rows = np.flatnonzero(labels == c)
        held.append(rng.permutation(rows)[:k])
    held_out = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(n), held_out, assume_unique=True)
    return kept, held_out


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images in [0, 1] (uint8 is scaled by 1/255)."""
    x = images.double()
    if images.dtype == torch.uint8:
        x = x / 255.0
    x = x.transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(float(v) for v in x.mean(1)), tuple(float(v) for v in x.std(1).clamp_min(1e-6))
