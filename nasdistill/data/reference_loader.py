"""The conventional per-sample pipeline, kept as the reference the batched loader is checked against
and benchmarked against (`nasdistill bench loader`).

`pad_crop_flip` is the textbook single-image version (pad, slice, mirror). `AugmentedSplitDataset`
is a ``torch.utils.data.Dataset`` whose ``__getitem__`` does what torchvision's
``RandomCrop(S, padding=pad) -> RandomHorizontalFlip -> ToTensor -> Normalize`` does, one image at a
time, using torch's global RNG as torchvision does (so DataLoader workers get distinct streams).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from nasdistill.data.augment import to_unit_float
from nasdistill.data.splits import Split


def pad_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool, pad: int) -> torch.Tensor:
    """One image (C,H,W): zero-pad by ``pad``, take the H x W window at (top, left), mirror if flip."""
    c, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    out = padded[:, top:top + h, left:left + w]
    return out.flip(-1) if flip else out


class AugmentedSplitDataset(Dataset):
    """Per-sample augmentation + normalization over a `Split`; items are (x, y, idx)."""

    def __init__(self, split: Split, mean, std, augment: bool = True, pad: int = 4,
                 flip: bool = True):
        self.split = split
        c = split.images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(c, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(c, 1, 1)
        self.augment, self.pad, self.flip = augment, pad, flip

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image = self.split.images[i]
        if self.augment:
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            flip = self.flip and bool(torch.rand(()) < 0.5)
            image = pad_crop_flip(image, top, left, flip, self.pad)
        x = (to_unit_float(image) - self.mean) / self.std
        return x, self.split.labels[i], self.split.indices[i]


def reference_loader(split: Split, batch_size: int, *, mean, std, augment: bool = True,
                     pad: int = 4, flip: bool = True, shuffle: bool = True, workers: int = 0,
                     seed: int = 0) -> DataLoader:
    """A standard shuffled ``DataLoader`` over `AugmentedSplitDataset` (the usual CIFAR pipeline)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(AugmentedSplitDataset(split, mean, std, augment, pad, flip),
                      batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=gen, persistent_workers=workers > 0)
