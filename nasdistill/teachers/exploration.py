"""Balanced exploration of the student pool by GTN's gates: what is measured and what keeps it.

GTN's phi step minimizes ``L_phi = CE - |alpha_phi| KL(q_R || q_T)``: it moves the gates toward the
students the teacher fits worst. Taken alone this collapses onto the layer-skipping (parameter-free)
choices, the GTN summary's failure signature. This module measures the exploration each epoch and
holds the mechanisms that keep it balanced.

Measured (per label the branches use, and their mean):

- entropy ``H(p_l)`` in nats (uniform: ``ln K_l``);
- parameter-free mass: the probability of the choices without parameters (``identity``, ``zero``,
  any registered op without parameters);
- the MACs of the students the weight steps sampled during the epoch, as quartiles, against the
  quartiles of the pool (architectures drawn uniformly): are small and large students both trained?

Mechanisms (``gtn.*`` keys; the defaults were chosen by the ablation in the README):

- ``explore_entropy_weight`` (lambda): adds ``lambda sum_l KL(p_l || u) = lambda sum_l (ln K_l - H(p_l))``
  to ``L_phi``. The minimizer of ``E_p[-badness] + lambda KL(p || u)`` is
  ``p ∝ exp(badness / lambda)``: students the teacher serves badly stay favoured, in proportion,
  and no choice's probability goes to zero.
- ``entropy_floor`` (a fraction f of ``ln K``) and ``param_free_cap`` (m): after every phi step a
  label below the floor is pulled toward uniform along ``softmax(t phi)`` (the smallest change of
  temperature that restores ``H = f ln K``), and a label whose parameter-free mass exceeds m gets
  those logits lowered by exactly what brings the mass to m. Guarantees, whatever the gradient.
- ``explore_uniform_mix`` (epsilon): weight steps sample from ``(1 - epsilon) p + epsilon u`` (more of
  the pool trained; phi itself is not constrained).
- ``logit_bound`` (b): phi clamped to ``[-b, b]`` (bounds how peaked p can get).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from ..supernet.gates import entropy_nats


def param_free_choices(space, label: str) -> list[str]:
    """The choices of ``label`` without parameters at every layer that uses the label."""
    free = None
    for i in range(len(space.layers)):
        if space.layer_label(i) != label:
            continue
        layer = space.layers[i]
        ch, hw = space.nominal_state(i)
        names = {name for name, op in space.layer_ops(i).items()
                 if op.cost(ch, layer.out_channels, layer.stride, hw)[1] == 0}
        free = names if free is None else free & names
    return [c for c in space.choices(label) if c in (free or set())]


def kl_to_uniform(gates, labels: Sequence[str]) -> torch.Tensor:
    """``sum_l (ln K_l - H(p_l))``, differentiable in phi."""
    terms = []
    for label in labels:
        p = torch.softmax(gates.logits(label).float(), 0)
        terms.append(math.log(p.numel()) - entropy_nats(p))
    return torch.stack(terms).sum()


@torch.no_grad()
def project(gates, labels: Sequence[str], floor: Optional[float], cap: Optional[float],
            param_free: dict) -> None:
    """Enforce ``H(p_l) >= floor ln K_l`` and ``P(param-free) <= cap`` on every label (in place).

    Each label's logits are projected on a host copy (a handful of scalar reads per label), and
    written back once when they changed.
    """
    for label in labels:
        param = gates.logits(label)
        logits = param.detach().to("cpu", copy=True)
        free = [gates.choices[label].index(c) for c in param_free.get(label, [])]
        modified = False
        for _ in range(8):  # alternate the two projections; each is exact, they settle at once
            changed = False
            if floor is not None and floor > 0:
                changed |= _entropy_floor(logits, floor * math.log(logits.numel()))
            if cap is not None and free and len(free) < logits.numel():
                changed |= _mass_cap(logits, free, cap)
            if not changed:
                break
            modified = True
        if modified:
            param.copy_(logits)


def _entropy_floor(logits: torch.Tensor, target: float) -> bool:
    p = torch.softmax(logits.float(), 0)
    if float(entropy_nats(p)) >= target:
        return False
    centred = logits.float() - logits.float().mean()
    lo, hi = 0.0, 1.0  # H(softmax(t * centred)) falls as t grows: find the largest t with H >= target
    for _ in range(40):
        t = 0.5 * (lo + hi)
        if float(entropy_nats(torch.softmax(t * centred, 0))) >= target:
            lo = t
        else:
            hi = t
    logits.copy_((lo * centred).to(logits.dtype))
    return True


def _mass_cap(logits: torch.Tensor, free: list[int], cap: float) -> bool:
    p = torch.softmax(logits.float(), 0)
    mass = float(p[free].sum())
    if mass <= cap:
        return False
    # lowering the free logits by d scales their mass odds by exp(-d): odds m/(1-m) -> cap/(1-cap)
    d = math.log(mass / (1.0 - mass)) - math.log(cap / (1.0 - cap)) + 1e-6
    logits[free] -= d
    return True


@torch.no_grad()
def clamp_logits(gates, labels: Sequence[str], bound: float) -> None:
    for label in labels:
        gates.logits(label).clamp_(-bound, bound)


class ExplorationMonitor:
    """Per-epoch exploration statistics of shared gates (see the module docstring)."""

    def __init__(self, space, labels: Sequence[str], pool_samples: int = 1000, seed: int = 0):
        self.space, self.labels = space, list(labels)
        self.param_free = {l: param_free_choices(space, l) for l in self.labels}
        pool = [space.cost(space.sample(seed=seed * 100_003 + i))["macs"] for i in range(pool_samples)]
        self.pool_quartiles = np.percentile(pool, [25, 50, 75]).tolist()
        self.sampled: list[int] = []
        self._cost_cache: dict = {}

    def record(self, arch: dict) -> None:
        """A weight step trained the student ``arch`` (all labels, as the gates sampled it)."""
        key = tuple(arch[l] for l in self.space.labels)
        if key not in self._cost_cache:
            self._cost_cache[key] = self.space.cost(arch)["macs"]
        self.sampled.append(self._cost_cache[key])

    def label_stats(self, gates) -> dict:
        """``{label: (entropy nats, ln K, parameter-free mass)}`` now."""
        out = {}
        for label in self.labels:
            p = torch.softmax(gates.logits(label).detach().float(), 0)
            free = [gates.choices[label].index(c) for c in self.param_free[label]]
            out[label] = (float(entropy_nats(p)), math.log(p.numel()), float(p[free].sum()) if free else 0.0)
        return out

    def epoch_metrics(self, gates, prefix: str = "") -> dict:
        """The logged row entries; resets the epoch's sampled students."""
        stats = self.label_stats(gates)
        out = {f"{prefix}phi_entropy": sum(h for h, _, _ in stats.values()) / len(stats),
               f"{prefix}param_free_mass": sum(m for _, _, m in stats.values()) / len(stats)}
        out.update({f"{prefix}phi_entropy/{l}": h for l, (h, _, _) in stats.items()})
        out.update({f"{prefix}param_free_mass/{l}": m for l, (_, _, m) in stats.items()})
        if self.sampled:
            q = np.percentile(self.sampled, [25, 50, 75]).tolist()
            out.update({f"{prefix}sampled_macs_q{k}": v for k, v in zip((25, 50, 75), q)})
        out.update({f"{prefix}pool_macs_q{k}": v for k, v in zip((25, 50, 75), self.pool_quartiles)})
        self.sampled = []
        return out

    def collapsed(self, gates, entropy_frac: float, mass_cap: float) -> list[str]:
        """Sentences naming every used label below ``entropy_frac ln K`` or above ``mass_cap``."""
        out = []
        for label, (h, lnk, m) in self.label_stats(gates).items():
            if h < entropy_frac * lnk:
                out.append(f"{label} entropy {h:.2f} nats < {entropy_frac:g} ln {round(math.exp(lnk))} = "
                           f"{entropy_frac * lnk:.2f}")
            if m > mass_cap:
                out.append(f"{label} parameter-free mass {m:.2f} > {mass_cap:g}")
        return out


__all__ = ["ExplorationMonitor", "clamp_logits", "kl_to_uniform", "param_free_choices", "project"]
