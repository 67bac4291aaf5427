"""Exploration of the GTN gates: entropy and parameter-free mass per label, the MACs of the students
the gates sample, and the report section that warns when the gates collapsed.

``phi_history`` rows (one per GTN epoch, optionally per ``teacher_seed``)::

    {"epoch": int, "teacher_seed": int (optional),
     "phi_entropy": float, "phi_entropy/<label>": float,          # nats, labels the branches use
     "param_free_mass": float, "param_free_mass/<label>": float,  # P(parameter-free choices)
     "sampled_macs_q25"|"_q50"|"_q75": float,                     # students sampled that epoch
     "pool_macs_q25"|"_q50"|"_q75": float}                        # uniform samples of the space

Older histories with bare ``<label>: entropy`` keys are still read. ``gate_info`` (optional)::

    {"labels": [used labels], "choices": {label: K}, "param_free": {label: [choice names]},
     "entropy_floor_frac": 0.5, "mass_cap": 0.6}
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from .figure import count_axis, epoch_axis, legend_outside, new_figure, save_png
from .fmt import fmt_count, md_table
from .tables import as_float

DEFAULT_ENTROPY_FLOOR_FRAC = 0.5
DEFAULT_MASS_CAP = 0.6
QUARTILES = ("q25", "q50", "q75")
_ENTROPY_PREFIXES = ("phi_entropy/", "entropy/")
_MASS_PREFIX = "param_free_mass/"
_RESERVED = {"epoch", "step", "phi_entropy", "param_free_mass", "teacher_seed"} | \
    {f"{w}_macs_{q}" for w in ("sampled", "pool") for q in QUARTILES}
_MAX_NAMED = 8


# ------------------------------------------------------------------------------------ reading
def by_teacher_seed(phi_history: Sequence[dict]) -> dict:
    """``{teacher_seed: rows sorted by epoch}`` (rows without a numeric epoch are dropped; rows
    without ``teacher_seed`` are grouped under ``None``), seeds in increasing order, ``None`` first."""
    groups: dict = {}
    for h in phi_history or ():
        if as_float(h.get("epoch")) is not None:
            groups.setdefault(h.get("teacher_seed"), []).append(h)
    order = sorted(groups, key=lambda s: (s is not None, s if isinstance(s, (int, float)) else str(s)))
    return {s: sorted(groups[s], key=lambda h: h["epoch"]) for s in order}


def _numeric(v) -> bool:
    return not isinstance(v, bool) and as_float(v) is not None


def entropy_keys(rows: Sequence[dict], gate_info: Optional[dict] = None) -> dict:
    """``{label: key}`` of the per-label entropy series (``phi_entropy/<label>``; in older
    histories ``entropy/<label>`` or a bare ``<label>``), restricted to ``gate_info["labels"]``."""
    keys: dict = {}
    for h in rows:
        for k, v in h.items():
            if k.startswith(_ENTROPY_PREFIXES) and _numeric(v):
                keys.setdefault(k.split("/", 1)[1], k)
    if not keys:  # older histories: bare numeric keys are labels
        for h in rows:
            for k, v in h.items():
                if k not in _RESERVED and "/" not in k and _numeric(v):
                    keys.setdefault(k, k)
    return _restrict(keys, gate_info)


def mass_keys(rows: Sequence[dict], gate_info: Optional[dict] = None) -> dict:
    """``{label: key}`` of the per-label parameter-free mass series (``param_free_mass/<label>``)."""
    keys: dict = {}
    for h in rows:
        for k, v in h.items():
            if k.startswith(_MASS_PREFIX) and _numeric(v):
                keys.setdefault(k[len(_MASS_PREFIX):], k)
    return _restrict(keys, gate_info)


def _restrict(keys: dict, gate_info: Optional[dict]) -> dict:
    wanted = (gate_info or {}).get("labels")
    if not wanted:
        return keys
    return {label: keys[label] for label in wanted if label in keys}


def series(rows: Sequence[dict], key: str) -> list[float]:
    return [as_float(h.get(key)) if as_float(h.get(key)) is not None else math.nan for h in rows]


def _ln_k(gate_info: Optional[dict], label: str) -> Optional[float]:
    k = as_float(((gate_info or {}).get("choices") or {}).get(label))
    return math.log(k) if k is not None and k >= 2 else None


def _thresholds(gate_info: Optional[dict]) -> tuple[float, float]:
    info = gate_info or {}
    frac = as_float(info.get("entropy_floor_frac"))
    cap = as_float(info.get("mass_cap"))
    return (DEFAULT_ENTROPY_FLOOR_FRAC if frac is None else frac, DEFAULT_MASS_CAP if cap is None else cap)


def _seed_note(groups: dict) -> str:
    seeds = [s for s in groups if s is not None]
    if len(groups) <= 1:
        return f" (teacher seed {seeds[0]})" if seeds else ""
    return f" (teacher seed {next(iter(groups))}, the first of {len(groups)} teacher seeds)"


def _names(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:_MAX_NAMED])
    return shown + (f", ... ({len(labels)} labels)" if len(labels) > _MAX_NAMED else "")


# -------------------------------------------------------------------------------------- table
def _last(rows: Sequence[dict], key: Optional[str]) -> tuple[Optional[float], Optional[int]]:
    """The last finite value of ``key`` and its epoch."""
    for h in reversed(rows):
        if key is not None and as_float(h.get(key)) is not None:
            return as_float(h[key]), h["epoch"]
    return None, None


def gate_table(phi_history: Sequence[dict], gate_info: Optional[dict] = None) -> list[dict]:
    """The gates at the last GTN epoch: one row per (teacher seed, used label)::

        {"teacher_seed", "label", "epoch", "choices" (K or None), "entropy" (nats), "ln_k",
         "entropy_frac" (entropy / ln K), "param_free_mass", "low_entropy", "high_mass",
         "collapsed", "checked"}

    ``low_entropy``: entropy < ``entropy_floor_frac`` * ln K (needs K from ``gate_info``);
    ``high_mass``: parameter-free mass > ``mass_cap``; ``collapsed``: either; ``checked``: whether
    either test was possible (K known, or the mass logged).
    """
    frac, cap = _thresholds(gate_info)
    out = []
    for seed, rows in by_teacher_seed(phi_history).items():
        ent, mass = entropy_keys(rows, gate_info), mass_keys(rows, gate_info)
        labels = list(ent) + [label for label in mass if label not in ent]
        for label in labels:
            h, e_epoch = _last(rows, ent.get(label))
            m, m_epoch = _last(rows, mass.get(label))
            ln_k = _ln_k(gate_info, label)
            ratio = h / ln_k if h is not None and ln_k else None
            low = ratio is not None and ratio < frac
            high = m is not None and m > cap
            out.append({"teacher_seed": seed, "label": label, "epoch": e_epoch if e_epoch is not None else m_epoch,
                        "choices": ((gate_info or {}).get("choices") or {}).get(label), "entropy": h,
                        "ln_k": ln_k, "entropy_frac": ratio, "param_free_mass": m, "low_entropy": low,
                        "high_mass": high, "collapsed": low or high,
                        "checked": ratio is not None or m is not None})
    return out


# -------------------------------------------------------------------------------------- plots
def plot_phi_entropy(phi_history: Sequence[dict], path, gate_info: Optional[dict] = None,
                     who: str = "GTN") -> Optional[Path]:
    """Gate entropy (nats) over the epochs of the gate-trained teacher ``who`` (GTN): a thin line per used label, a thick mean line.

    With ``gate_info["choices"]`` a dashed line marks the uniform entropy ln K for each distinct K
    and a dotted one the collapse threshold ``entropy_floor_frac * ln K``. With several teacher
    seeds the first one is drawn (the title says which).
    """
    groups = by_teacher_seed(phi_history)
    if not groups:
        return None
    rows = next(iter(groups.values()))
    keys = entropy_keys(rows, gate_info)
    mean = [as_float(h.get("phi_entropy")) for h in rows]
    has_mean = any(m is not None for m in mean)
    if not keys and not has_mean:
        return None
    epochs = [h["epoch"] for h in rows]
    fig = new_figure(9.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for label, key in keys.items():
        ax.plot(epochs, series(rows, key), lw=0.8, alpha=0.7, label=label if len(keys) <= 12 else None)
    if has_mean:
        ax.plot(epochs, [math.nan if m is None else m for m in mean], color="black", lw=2.5,
                label="mean over labels")
    frac, _cap = _thresholds(gate_info)
    ks = sorted({int(k) for label in keys if (k := as_float(((gate_info or {}).get("choices") or {})
                                                            .get(label))) is not None and k >= 2})
    for i, k in enumerate(ks):
        colour = f"C{(len(keys) + i) % 10}" if len(ks) > 1 else "grey"
        ax.axhline(math.log(k), ls="--", lw=1, color=colour, label=f"uniform, ln {k} = {math.log(k):.2f}")
        ax.axhline(frac * math.log(k), ls=":", lw=1.2, color=colour,
                   label=f"collapse threshold, {frac:g} ln {k} = {frac * math.log(k):.2f}")
    ax.set_ylim(bottom=0)
    epoch_axis(ax, f"{who} epoch")
    ax.set_ylabel("gate entropy (nats)")
    ax.set_title(f"Gate entropy during {who} training{_seed_note(groups)}\n"
                 f"labels the branches use: {_names(list(keys)) or 'not logged'}", fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return save_png(fig, path)


def plot_gate_exploration(phi_history: Sequence[dict], path, gate_info: Optional[dict] = None,
                          who: str = "GTN") -> Optional[Path]:
    """Two panels over the epochs of the gate-trained teacher ``who`` (GTN): (a) parameter-free
    probability mass per used label (thin) and their mean (thick) against the cap; (b) quartiles of the MACs of the students sampled in each
    epoch (blue band q25-q75, median line) against the pool's (grey). ``None`` without data."""
    groups = by_teacher_seed(phi_history)
    if not groups:
        return None
    rows = next(iter(groups.values()))
    mkeys = mass_keys(rows, gate_info)
    mean = series(rows, "param_free_mass")
    has_mass = bool(mkeys) or any(math.isfinite(m) for m in mean)
    q = {(w, k): series(rows, f"{w}_macs_{k}") for w in ("sampled", "pool") for k in QUARTILES}
    has_macs = any(math.isfinite(v) for w in ("sampled", "pool") for v in q[(w, "q50")])
    if not has_mass and not has_macs:
        return None
    epochs = [h["epoch"] for h in rows]
    _frac, cap = _thresholds(gate_info)
    fig = new_figure(11.0, 4.6)
    ax_a, ax_b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    fig.subplots_adjust(wspace=0.3)
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    if has_mass:
        for label, key in mkeys.items():
            ax_a.plot(epochs, series(rows, key), lw=0.8, alpha=0.7, label=label if len(mkeys) <= 12 else None)
        if any(math.isfinite(m) for m in mean):
            ax_a.plot(epochs, mean, color="black", lw=2.5, label="mean over labels")
        ax_a.axhline(cap, ls=":", color="red", lw=1.2, label=f"cap {cap:g}")
        ax_a.set_ylim(0, 1)
        legend_outside(ax_a, **below)
    else:
        ax_a.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax_a.transAxes)
    epoch_axis(ax_a, f"{who} epoch")
    ax_a.set_ylabel("probability of parameter-free choices")
    ax_a.set_title("(a) parameter-free mass per label", fontsize=9)
    ax_a.grid(alpha=0.3)
    values = [v for vs in q.values() for v in vs if math.isfinite(v)]
    if has_macs:
        for series_of, colour, text, ls in (("pool", "grey", "pool (uniform samples)", "--"),
                                            ("sampled", "C0", "sampled students", "-")):
            lo, mid, hi = q[(series_of, "q25")], q[(series_of, "q50")], q[(series_of, "q75")]
            if any(math.isfinite(v) for v in lo + hi):
                ax_b.fill_between(epochs, lo, hi, color=colour, alpha=0.25, lw=0, label=f"{text}, q25-q75")
            ax_b.plot(epochs, mid, ls, color=colour, lw=1.8, label=f"{text}, median")
        count_axis(ax_b, "y", values)
        legend_outside(ax_b, **below)
    else:
        ax_b.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax_b.transAxes)
        ax_b.set_ylabel("MACs")
    epoch_axis(ax_b, f"{who} epoch")
    ax_b.set_title("(b) MACs of the students the gates sample", fontsize=9)
    ax_b.grid(alpha=0.3)
    fig.suptitle(f"{who} gate exploration{_seed_note(groups)}", fontsize=10)
    return save_png(fig, path)


# ------------------------------------------------------------------------------------ section
def _num(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _macs_sentence(phi_history) -> str:
    groups = by_teacher_seed(phi_history)
    rows = next(iter(groups.values()), [])
    s, _ = _last(rows, "sampled_macs_q50")
    p, _ = _last(rows, "pool_macs_q50")
    if s is None or p is None:
        return ""
    return (f" In the last epoch the sampled students had median MACs {fmt_count(s)} against "
            f"{fmt_count(p)} for students drawn uniformly from the space{_seed_note(groups)}.")


def gate_section(phi_history: Sequence[dict], gate_info: Optional[dict] = None,
                 plots: Sequence[tuple] = (), who: str = "GTN") -> tuple[str, bool]:
    """The "<who> gate exploration" section of the gate-trained teacher ``who`` (GTN); returns
    ``(markdown, collapsed)``.

    ``plots`` are ``(title, path or None)`` pairs shown under the text.
    """
    rows = gate_table(phi_history, gate_info)
    if not rows:
        return (f"No {who} gate statistics in this run (no {who} teacher was trained, or it logged none).", False)
    frac, cap = _thresholds(gate_info)
    several = len({r["teacher_seed"] for r in rows}) > 1
    header = (["Teacher seed"] if several else []) + ["Label", "Choices K", "Entropy (nats)", "Entropy / ln K",
                                                       "Parameter-free mass", "Collapsed"]
    body = [([r["teacher_seed"]] if several else []) +
            [r["label"], r["choices"] if r["choices"] is not None else "—", _num(r["entropy"], ".3f"),
             _num(r["entropy_frac"], ".2f"), _num(r["param_free_mass"], ".2f"),
             "yes" if r["collapsed"] else ("no" if r["checked"] else "not checked")]
            for r in rows]
    epoch = max((r["epoch"] for r in rows if r["epoch"] is not None), default=None)
    text = (f"The gates at the last {who} epoch{f' ({epoch})' if epoch is not None else ''}, per label the "
            f"branches use. Entropy is in nats; a uniform gate over K choices has ln K, so entropy / ln K "
            f"is 1 for a gate that still explores every choice and 0 for one that always picks the same "
            f"choice. Parameter-free mass is the probability of the choices without weights "
            f"(identity, zero).\n\n" + md_table(header, body) + "\n\n")
    bad = [r for r in rows if r["collapsed"]]
    where = (lambda r: f"{r['label']} (teacher seed {r['teacher_seed']})" if several else r["label"])
    if bad:
        parts = []
        for r in bad:
            why = []
            if r["low_entropy"]:
                why.append(f"entropy {r['entropy']:.3f} nats = {r['entropy_frac']:.2f} ln K (below "
                           f"{frac:g} ln K)")
            if r["high_mass"]:
                why.append(f"parameter-free mass {r['param_free_mass']:.2f} (above the cap {cap:g})")
            parts.append(f"{where(r)} ends with " + " and ".join(why))
        text += ("**WARNING: the gates collapsed**: " + "; ".join(parts) + f". The {who} teacher was then "
                 "conditioned on the narrow part of the student pool these gates favour instead of on the "
                 "whole pool the method assumes; check the gate settings (learning rate, exploration) before "
                 f"reading the {who} results.")
    elif not any(r["checked"] for r in rows):
        text += ("Whether the gates collapsed cannot be checked: this run recorded neither the number of "
                 "choices per label nor the parameter-free mass.")
    else:
        checks, caveats = [], []
        for key, check, missing in (("entropy_frac", f"entropy at least {frac:g} ln K", "K"),
                                    ("param_free_mass", f"parameter-free mass at most {cap:g}", "the mass")):
            have = [r for r in rows if r[key] is not None]
            if have:
                checks.append(check)
                if len(have) < len(rows):
                    caveats.append(f"{'entropy' if key == 'entropy_frac' else 'mass'} checked only where "
                                   f"{missing} is known")
        text += (f"The gates did not collapse: every {'checked' if caveats else 'used'} label ends with "
                 f"{' and '.join(checks)}"
                 + (f" ({'; '.join(caveats)})" if caveats else "") + ".")
    text += _macs_sentence(phi_history)
    shown = [f"**{title}**\n\n![{title}]({p.name})" for title, p in plots if p is not None]
    if shown:
        text += "\n\n" + "\n\n".join(shown)
    return text, bool(bad)


__all__ = ["by_teacher_seed", "gate_section", "gate_table", "plot_gate_exploration", "plot_phi_entropy"]
