"""Did a search converge? The architecture distribution's entropy and the stability of its choice.

For each target, after every epoch with phi steps, the search records:

- ``arch_entropy``: the entropy (nats) of its architecture distribution ``P(arch) = prod_l p_l``,
  ``H = sum_l H(p_l)`` (labels are independent; tied layers share a label and count once), and
  ``arch_entropy_frac = H / ln(N)``, with ``N = prod_l K_l`` the number of label assignments: 1 for
  the uniform distribution it starts from, 0 when one architecture has all the mass;
- ``argmax_arch_id``: the distribution's most probable architecture (each label's most probable
  choice);
- ``band_arch_id`` and ``band_prob``: the student it would export now (the most probable
  architecture within the target's cost band) and that architecture's probability.

A target's search *converged* when its most probable architecture was the same over the last
``converge_window`` of the phi epochs (at least two epochs) and ``arch_entropy_frac`` ended at
``converge_entropy`` or below. Whether that architecture lies in the target's band is reported
beside it (``mode_in_band``): a distribution that settled on networks of another cost exports the
most probable student of the band, an improbable one, and says so; :func:`convergence` returns the figures and the verdict, which the search's result and the
main job's report state for every target.
"""
from __future__ import annotations

import math
from typing import Sequence


def entropy_fraction(entropies: dict, choices: dict) -> tuple[float, float]:
    """``(H, H / ln N)`` from per-label entropies (nats) and per-label choice counts."""
    h = float(sum(entropies.values()))
    ln_n = float(sum(math.log(k) for k in choices.values() if k > 1))
    return h, (h / ln_n if ln_n > 0 else 0.0)


def stable_run(history: Sequence[str]) -> int:
    """How many of the last entries of ``history`` are equal to the last one."""
    if not history:
        return 0
    n = 0
    for item in reversed(history):
        if item != history[-1]:
            break
        n += 1
    return n


def convergence(history: Sequence[str], entropy_frac: float, prob: float, window: float,
                entropy_limit: float, mode_in_band: bool = True, mode_cost: float = float("nan")) -> dict:
    """The convergence verdict of one target from its most probable architecture after each phi
    epoch (``history``), the final entropy fraction and the exported student's probability.

    ``mode_in_band``: whether the most probable architecture lies in the target's band
    (``mode_cost`` is its cost); reported, and said in ``why``, but no part of the verdict: a
    search can converge on networks of another cost than its target."""
    epochs = len(history)
    needed = max(2, math.ceil(window * epochs))
    stable = stable_run(history)
    converged = epochs >= 2 and stable >= needed and entropy_frac <= entropy_limit
    if epochs < 2:
        why = (f"{'no epoch' if not epochs else 'a single epoch'} with phi steps: too few to tell "
               "(raise search.train.epochs above search.search.warmup_epochs + 1)")
    elif converged:
        why = (f"the most probable architecture was the same over the last {stable} of {epochs} phi epochs and "
               f"the architecture entropy fell to {entropy_frac:.2f} of ln(#architectures)")
    else:
        parts = []
        if stable < needed:
            parts.append(f"the most probable architecture changed within the last {needed} of {epochs} phi "
                         f"epochs (unchanged over the last {stable})")
        if entropy_frac > entropy_limit:
            parts.append(f"the architecture entropy is still {entropy_frac:.2f} of ln(#architectures) "
                         f"(converged: <= {entropy_limit:g})")
        why = " and ".join(parts)
    if not mode_in_band:
        why += (f"; its most probable architecture costs {mode_cost:,.0f}, outside the target's band, so the "
                f"student exported from the band has p {prob:.2g}")
    return {"converged": bool(converged), "phi_epochs": epochs, "stable_epochs": stable,
            "stable_needed": needed, "entropy_frac": float(entropy_frac), "prob": float(prob),
            "mode_in_band": bool(mode_in_band), "why": why}


__all__ = ["convergence", "entropy_fraction", "stable_run"]
