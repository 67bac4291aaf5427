"""The cost-aware losses of the architecture step (ProxylessNAS), on the cost moments of
:meth:`nasdistill.space.cost.CostModel.moments`."""
from __future__ import annotations

import math
from typing import Optional

import torch

PENALTIES = ("mul#log", "add#linear", "add#abs", "add#rms")


def cost_penalty(ce: torch.Tensor, expected: torch.Tensor, target: float, kind: str = "mul#log",
                 alpha: float = 0.2, beta: float = 0.3, lam: float = 0.1,
                 second: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cost-aware loss of ProxylessNAS.

    - ``mul#log``:    ``CE * alpha * (log E / log target) ** beta``
    - ``add#linear``: ``CE + lam * (E - target) / target``
    - ``add#abs``:    ``CE + lam * |E - target| / target`` (nasdistill's addition: pulls the expected
      cost toward the target from both sides, so searches at different targets find different
      students; ``add#linear`` keeps pushing the cost down below the target)
    - ``add#rms``:    ``CE + lam * sqrt(E[(c - target)^2]) / target`` with
      ``E[(c - T)^2] = E[c^2] - 2 T E[c] + T^2`` (``second`` = ``E[c^2]``, :meth:`CostModel.moments`):
      the root-mean-square distance of the sampled architectures' cost from the target, so the
      distribution's *mass*, not only its mean, is pulled to the target (a mixture of cheap and
      costly networks whose mean hits the target is penalised). For a single architecture it is
      ``add#abs``.
    """
    if target <= 1 and kind == "mul#log":
        raise ValueError(f"mul#log needs a cost target > 1 (log target > 0), got {target}")
    if kind == "mul#log":
        return ce * alpha * (torch.log(expected) / math.log(target)) ** beta
    if kind == "add#linear":
        return ce + lam * (expected - target) / target
    if kind == "add#abs":
        return ce + lam * (expected - target).abs() / target
    if kind == "add#rms":
        if second is None:
            raise ValueError("add#rms needs E[cost^2] (second=, from CostModel.moments)")
        msd = (second - 2 * target * expected + target * target).clamp_min(0.0)
        return ce + lam * torch.sqrt(msd + 1e-12 * target * target) / target
    raise ValueError(f"cost penalty {kind!r} unknown; use one of {PENALTIES}")
