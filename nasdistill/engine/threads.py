"""CPU threads of a run: the one place ``torch.set_num_threads`` is called (``train.threads``)."""
from __future__ import annotations

from typing import Optional

import torch


def use_threads(threads: Optional[int]) -> None:
    """Use ``threads`` intra-op CPU threads for this process (``None``: leave torch's default).

    Tiny models train fastest on one thread; on a busy 2-core machine two threads can stall.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"train.threads must be >= 1 or null, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


__all__ = ["use_threads"]
