"""Did a run train stably? Its per-epoch rows read for a blow-up or a collapse.

A run can end with finite losses and still have gone wrong on the way: a teacher whose logits
blew up in its first epochs and then collapsed to flat predictions trains on, and its accuracy
alone does not say why it is poor. :func:`instability` reads the run's metrics rows (one per epoch)
and names every epoch where one of these happened, with the figure and the threshold:

- **blow-up**: the mean cross-entropy of the model's own predictions over the epoch
  (the task's :attr:`~.task.TrainTask.ce_log`, e.g. ``train_ce``, a branch teacher's
  ``train_teacher_ce``) is above ``1.5 ln K`` (K classes): 50% worse than predicting the uniform
  distribution, which a model only reaches with large, confidently wrong logits;
- **logit collapse**: the logged spread of the logits (the task's
  :attr:`~.task.TrainTask.logit_std_metric`, e.g. a branch teacher's ``teacher_logit_std``) falls
  below half of its highest value in an earlier epoch;
- **accuracy collapse**: the training accuracy falls more than 20 points below its highest value in
  an earlier epoch.

The lifecycle records the events in ``result.json`` (``instability``); the main job's report lists
them per teacher run.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

#: A CE above this multiple of ln K is a blow-up.
BLOWUP_CE = 1.5
#: Logit spread below this fraction of its earlier maximum is a collapse.
COLLAPSE_STD = 0.5
#: Training accuracy this many points below its earlier maximum is a collapse.
COLLAPSE_ACC = 20.0


def _num(v) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def instability(rows: Sequence[dict], num_classes: Optional[int], ce_key: Optional[str] = "train_ce",
                std_key: Optional[str] = None) -> list[dict]:
    """The events of the module docstring, in epoch order: ``{"epoch", "what", "value",
    "threshold", "text"}`` (``text``: one sentence)."""
    events = []
    ln_k = math.log(num_classes) if num_classes and num_classes > 1 else None
    best_std = best_acc = None
    for r in rows:
        epoch = r.get("epoch")
        ce = _num(r.get(ce_key)) if ce_key else None
        if ce is not None and ln_k is not None and ce > BLOWUP_CE * ln_k:
            events.append({"epoch": epoch, "what": "blow-up", "value": ce, "threshold": BLOWUP_CE * ln_k,
                           "text": f"epoch {epoch}: mean training CE {ce:.2f} > {BLOWUP_CE:g} ln {num_classes} = "
                                   f"{BLOWUP_CE * ln_k:.2f} (worse than a uniform guess: the logits blew up)"})
        std = _num(r.get(std_key)) if std_key else None
        if std is not None:
            if best_std is not None and std < COLLAPSE_STD * best_std:
                events.append({"epoch": epoch, "what": "logit collapse", "value": std,
                               "threshold": COLLAPSE_STD * best_std,
                               "text": f"epoch {epoch}: logit std {std:.2f} < {COLLAPSE_STD:g} x its earlier "
                                       f"maximum {best_std:.2f} (the predictions went flat)"})
            best_std = std if best_std is None else max(best_std, std)
        acc = _num(r.get("train_acc"))
        if acc is not None:
            if best_acc is not None and acc < best_acc - COLLAPSE_ACC:
                events.append({"epoch": epoch, "what": "accuracy collapse", "value": acc,
                               "threshold": best_acc - COLLAPSE_ACC,
                               "text": f"epoch {epoch}: training accuracy {acc:.1f}% < its earlier maximum "
                                       f"{best_acc:.1f}% - {COLLAPSE_ACC:g} points"})
            best_acc = acc if best_acc is None else max(best_acc, acc)
    return events


def describe(events: Sequence[dict]) -> str:
    """One line for a list of events (empty: stable)."""
    if not events:
        return "stable"
    first = events[0]
    more = f" (and {len(events) - 1} more event{'s' if len(events) > 2 else ''})" if len(events) > 1 else ""
    return first["text"] + more


__all__ = ["BLOWUP_CE", "COLLAPSE_ACC", "COLLAPSE_STD", "describe", "instability"]
