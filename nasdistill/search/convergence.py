"""Did a search converge? The architecture distribution's entropy and the stability of its choice.

For each target, after every epoch with phi steps, the search records:

- ``arch_entropy``: the entropy (nats) of its architecture distribution ``P(arch) = prod_l p_l``,
  ``H = sum_l H(p_l)`` (labels are independent; tied layers share a label and count once), and
  ``arch_entropy_frac = H / ln(N)``, with ``N = prod_l K_l`` the number of label assignments: 1 for
  the uniform distribution it starts from, 0 when one architecture has all the mass;
- ``band_arch_id`` and ``band_prob``: the student it would export now (the most probable
  architecture within the target's cost band) and that architecture's probability.

A target's search *converged* when that student was the same over the last ``converge_window``
of the phi epochs (at least two epochs), ``arch_entropy_frac`` ended at ``converge_entropy`` or
below, and the distribution's most probable architecture lies in the band (a distribution that
concentrated on networks of another cost has not converged on the target); :func:`convergence` returns the figures and the verdict, which the search's result and the
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
    """The convergence verdict of one target from the exported student of each phi epoch
    (``history``), the final entropy fraction and the chosen student's probability.

    ``mode_in_band``: whether the distribution's most probable architecture lies in the target's
    band (``mode_cost`` is its cost). A distribution that concentrated *outside* the band has not
    converged on the target: the student exported from the band is then an improbable one."""
    epochs = len(history)
    needed = max(2, math.ceil(window * epochs))
    stable = stable_run(history)
    converged = epochs >= 2 and stable >= needed and entropy_frac <= entropy_limit and mode_in_band
    if epochs < 2:
        why = (f"{'no epoch' if not epochs else 'a single epoch'} with phi steps: too few to tell "
               "(raise search.train.epochs above search.search.warmup_epochs + 1)")
    elif converged:
        why = (f"the exported student was the same over the last {stable} of {epochs} phi epochs and the "
               f"architecture entropy fell to {entropy_frac:.2f} of ln(#architectures)")
    else:
        parts = []
        if stable < needed:
            parts.append(f"the exported student changed within the last {needed} of {epochs} phi epochs "
                         f"(unchanged over the last {stable})")
        if entropy_frac > entropy_limit:
            parts.append(f"the architecture entropy is still {entropy_frac:.2f} of ln(#architectures) "
                         f"(converged: <= {entropy_limit:g})")
        if not mode_in_band:
            parts.append(f"the distribution's most probable architecture costs {mode_cost:,.0f}, outside the "
                         f"target's band (the student exported from the band has p {prob:.2g})")
        why = " and ".join(parts)
    return {"converged": bool(converged), "phi_epochs": epochs, "stable_epochs": stable,
            "stable_needed": needed, "entropy_frac": float(entropy_frac), "prob": float(prob),
            "mode_in_band": bool(mode_in_band), "why": why}


__all__ = ["convergence", "entropy_fraction", "stable_run"]
