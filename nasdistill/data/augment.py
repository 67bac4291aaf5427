"""Batched CIFAR-style augmentation: zero-padded random crop + random horizontal flip, and normalize.

Crop and flip are done for the whole batch at once (no per-sample Python loop). With the batch
zero-padded by ``pad`` on every side to xp (B,C,H+2p,W+2p), offsets top_b, left_b in [0, 2p] and
flip bit f_b,

    out[b, c, i, j] = xp[b, c, top_b + i, left_b + (W-1-j if f_b else j)]

which is torchvision's ``RandomCrop(size, padding=p)`` followed by ``RandomHorizontalFlip`` (crop
first, then mirror the crop). Padding is applied to the raw image (uint8 0 or float 0.0 both mean
black in [0,1] space), i.e. BEFORE normalization, as in the torchvision pipeline
``RandomCrop -> ToTensor -> Normalize``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_crop_flip(n: int, pad: int, flip: bool, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets (top, left) uniform in 0..2*pad and flip bits (p=0.5, or all False), each (n,)."""
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
    else:
        flips = torch.zeros(n, dtype=torch.bool)
    return top, left, flips


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flips: torch.Tensor,
              pad: int) -> torch.Tensor:
    """Zero-pad ``x`` (B,C,H,W) by ``pad``, crop H x W at (top_b, left_b), mirror where flips_b."""
    b, c, h, w = x.shape
    if pad < 0:
        raise ValueError(f"crop_flip: pad must be >= 0, got {pad}")
    if not (top.shape == left.shape == flips.shape == (b,)):
        raise ValueError(f"crop_flip: top/left/flips must each have shape ({b},), got "
                         f"{tuple(top.shape)}, {tuple(left.shape)}, {tuple(flips.shape)}")
    dev = x.device
    top, left, flips = top.to(dev), left.to(dev), flips.to(dev)
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    # All (2p+1)^2 crop windows as a strided view (B, C, 2p+1, 2p+1, H, W), no copy; one advanced
    # index then copies each sample's window: out[b] = windows[b, :, top_b, left_b].
    windows = xp.unfold(2, h, 1).unfold(3, w, 1)
    out = windows[torch.arange(b, device=dev), :, top, left]
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1]: uint8 is divided by 255 (as torchvision's ToTensor), floats are kept."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean_c) / std_c per channel; ``mean``/``std`` broadcast as (1,C,1,1)."""
    return (x - mean) / std
