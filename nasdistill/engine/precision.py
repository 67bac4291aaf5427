"""Numeric precision and memory layout of a training step.

``train.amp``:

- ``auto``: bf16 autocast on CUDA, fp32 elsewhere;
- ``bf16``: bf16 autocast on every device (on the CPU too: CPU autocast reproduces the dtype bugs of
  the CUDA path, so tests run the GPU code paths there);
- ``off``: fp32.

bf16 has fp32's exponent range, so no loss scaling is needed. Losses and metrics are computed in
fp32 (``logits.float()``) where it matters.
"""
from __future__ import annotations

import contextlib

import torch


def autocast_dtype(device: torch.device, amp: str):
    """``torch.bfloat16`` when ``amp`` asks for autocast on ``device``, else None."""
    device = torch.device(device)
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    if amp not in ("auto", "off", "bf16"):
        raise ValueError(f"train.amp must be auto, bf16 or off, got {amp!r}")
    return None


def autocast_for(device: torch.device, amp: str, cache_enabled: bool = True):
    """The autocast context of ``amp`` on ``device`` (a null context for fp32).

    ``cache_enabled=False`` is required while a CUDA graph is being captured.
    """
    dtype = autocast_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype, cache_enabled=cache_enabled)


def use_channels_last(setting, device: torch.device) -> bool:
    """``train.channels_last``: True, False, or ``auto`` (on CUDA only)."""
    return setting is True or (setting == "auto" and torch.device(device).type == "cuda")


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


__all__ = ["autocast_dtype", "autocast_for", "to_channels_last", "use_channels_last"]
