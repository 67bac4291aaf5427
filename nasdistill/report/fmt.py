"""Number and Markdown formatting shared by the report's sections."""
from __future__ import annotations

import math
from typing import Sequence

from .stats import significant
from .tables import MeanCI, as_float

ALPHA = 0.05


def fmt_acc(x) -> str:
    x = as_float(x)
    return "—" if x is None else f"{x:.2f}"


def fmt_signed(x) -> str:
    x = as_float(x)
    return "—" if x is None else f"{x:+.2f}"


def fmt_mean_ci(m: MeanCI, signed: bool = False) -> str:
    """``72.31 ± 0.45``; ``72.31 ± n/a`` with a single value; ``—`` with none."""
    if not m.n or not math.isfinite(m.mean):
        return "—"
    mean = f"{m.mean:+.2f}" if signed else f"{m.mean:.2f}"
    return f"{mean} ± {m.half_width:.2f}" if math.isfinite(m.half_width) else f"{mean} ± n/a"


def fmt_range(low, high, signed: bool = True) -> str:
    """``+0.12 to +0.95``; ``n/a`` when either end is missing."""
    f = fmt_signed if signed else fmt_acc
    return "n/a" if as_float(low) is None or as_float(high) is None else f"{f(low)} to {f(high)}"


def fmt_p(p) -> str:
    p = as_float(p)
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_eq(p) -> str:
    """``p = 0.410`` / ``p < 0.001`` / ``p n/a``."""
    s = fmt_p(p)
    return "p n/a" if s == "n/a" else (f"p {s}" if s.startswith("<") else f"p = {s}")


def fmt_count(x) -> str:
    """MACs / parameter counts: ``12.35M``, ``850.2K``, ``1.20G``, ``512``."""
    x = as_float(x)
    if x is None:
        return "—"
    for scale, unit in ((1e9, "G"), (1e6, "M")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.1f}K"
    return f"{x:,.0f}"


def fmt_seconds(s) -> str:
    s = as_float(s)
    if s is None:
        return "—"
    if s < 59.95:
        return f"{s:.1f} s"
    if s < 3599.5:
        minutes, secs = divmod(int(round(s)), 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(int(round(s / 60)), 60)
    return f"{hours} h {minutes:02d} min"


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``[("train.lr", 0.1), ...]``: the pairs of :func:`nasdistill.engine.config.flatten`."""
    from ..config import flatten as flatten_mapping

    return list(flatten_mapping(d, prefix).items())


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def verdict(p, alpha: float = ALPHA) -> str:
    if as_float(p) is None:
        return "not tested"
    return f"significant at {alpha:g}" if significant(p, alpha) else f"not significant at {alpha:g}"


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""
