"""`DeviceLoader`: a whole split held as tensors on the training device, batched augmentation.

No worker processes and no per-sample Python: each batch is one index gather, one crop+flip gather
(`nasdistill.data.augment.crop_flip`) and one normalize, all on ``device``.

Determinism. Epoch e draws, from a CPU ``torch.Generator`` seeded by (seed, e) only, first the order
(a permutation of 0..N-1, or 0..N-1 when ``shuffle=False``), then per *position* in that order the
crop offsets and flip bit. The batches of epoch e are therefore a pure function of (seed, e): a run
resumed at epoch e (after ``set_epoch(e)``) sees bit for bit what an uninterrupted one sees. Each
iteration uses ``loader.epoch`` and then advances it by one, so forgetting ``set_epoch`` still gives
fresh epochs; calling it makes the epoch explicit.

Distributed. Global batch t is positions [t*B, (t+1)*B) of the shared order (B = ``batch_size``).
Every rank draws the same order and augmentation, and rank r takes the r-th contiguous chunk of
``torch.tensor_split(global_batch, world_size)`` (B // world_size samples for full batches), so the
ranks' batches concatenated in rank order are exactly the single-process batch. With
``drop_last=False`` the last global batch may be short; its chunks then differ by at most one
sample (a rank may even get an empty chunk if it has fewer samples than ranks: use
``drop_last=True`` for multi-process training where that matters).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from nasdistill.data.augment import crop_flip, draw_crop_flip, normalize, to_unit_float
from nasdistill.data.splits import DatasetSplits, Split


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed that is a pure function of (seed, epoch), well mixed."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF,
                                    int(epoch)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class DeviceLoader:
    """Iterate ``(x, y, idx)`` batches of a `Split`: x normalized float32 (B,C,H,W), y int64 labels,
    idx int64 `Split.indices` of the samples, all on ``device``.

    ``augment``: zero-pad ``pad`` + random crop, and random horizontal flip if ``flip``.
    ``mean``/``std``: per-channel normalization of images in [0, 1] (required, as one forgotten
    normalization silently costs accuracy). ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True,
                 augment: bool = False, pad: int = 4, flip: bool = True,
                 mean: tuple[float, ...], std: tuple[float, ...], device: str | torch.device = "cpu",
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if not isinstance(split, Split):
            raise TypeError(f"DeviceLoader needs a nasdistill.data.Split, got {type(split).__name__}")
        channels = split.images.shape[1]
        if int(batch_size) < 1:
            raise ValueError(f"DeviceLoader: batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"DeviceLoader: need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(f"DeviceLoader: the global batch_size {batch_size} must be divisible by "
                             f"world_size {world_size} so every rank gets the same share")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"DeviceLoader: mean/std need one value per channel ({channels}), got "
                             f"mean={tuple(mean)}, std={tuple(std)}")
        if min(std) <= 0:
            raise ValueError(f"DeviceLoader: std must be positive, got {tuple(std)}")
        if pad < 0:
            raise ValueError(f"DeviceLoader: pad must be >= 0, got {pad}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.indices = split.indices.to(self.device)
        self.batch_size, self.shuffle, self.augment = int(batch_size), bool(shuffle), bool(augment)
        self.pad, self.flip, self.seed, self.drop_last = int(pad), bool(flip), int(seed), bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        shape = (1, channels, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(shape)
        self.epoch = 0

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n = len(self) * self.batch_size if self.drop_last else self.images.shape[0]
        full, last = divmod(n, self.batch_size)
        per_full = full * (self.batch_size // self.world_size)
        return per_full + (len(torch.arange(last).tensor_split(self.world_size)[self.rank]) if last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (order and augmentation depend on (seed, epoch))."""
        self.epoch = int(epoch)

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(order (N,), (top, left, flips) per position or None) for ``epoch``, on CPU."""
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = self.images.shape[0]
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        aug = draw_crop_flip(n, self.pad, self.flip, gen) if self.augment else None
        return order, aug

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order, aug = self.epoch_plan(epoch)
        order = order.to(self.device)
        if aug is not None:
            aug = tuple(t.to(self.device) for t in aug)
        for t in range(len(self)):
            positions = torch.arange(t * self.batch_size,
                                     min((t + 1) * self.batch_size, order.numel()), device=self.device)
            if self.world_size > 1:
                positions = positions.tensor_split(self.world_size)[self.rank]
            rows = order[positions]
            x = self.images[rows]
            if aug is not None:
                top, left, flips = (a[positions] for a in aug)
                x = crop_flip(x, top, left, flips, self.pad)
            x = normalize(to_unit_float(x), self.mean, self.std)
            yield x, self.labels[rows], self.indices[rows]


def loaders_for(splits: DatasetSplits, batch_size: int, device: str | torch.device = "cpu",
                seed: int = 0, augment: bool | None = None, rank: int = 0, world_size: int = 1,
                eval_batch_size: int | None = None
                ) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
    """(train, val, test) loaders with the dataset's mean/std.

    Train: shuffled, augmented if ``augment`` (None: the dataset's recipe default
    ``splits.augment``), sharded over ``world_size``. Val/test: in order, no augmentation, not
    sharded (every rank evaluates everything), batch ``eval_batch_size`` (default ``batch_size``).
    """
    aug = splits.augment if augment is None else bool(augment)
    norm = dict(mean=splits.mean, std=splits.std, device=device)
    train = DeviceLoader(splits.train, batch_size, shuffle=True, augment=aug, seed=seed,
                         rank=rank, world_size=world_size, **norm)
    eb = eval_batch_size or batch_size
    val = DeviceLoader(splits.val, eb, shuffle=False, augment=False, seed=seed, **norm)
    test = DeviceLoader(splits.test, eb, shuffle=False, augment=False, seed=seed, **norm)
    return train, val, test
