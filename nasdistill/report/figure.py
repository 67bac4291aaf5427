"""Figure helpers shared by the report's plots: an Agg figure, atomic PNG saving, count and epoch
axes, legends kept off the data.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, imported
lazily: no pyplot, so no global backend switch and nothing left open in a user's session.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

from ..atomic import atomic_open

_UNITS = ((1e9, "G", "billions"), (1e6, "M", "millions"), (1e3, "K", "thousands"))


def new_figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path) -> Path:
    """Save ``fig`` as a PNG atomically (permissions as an ordinary ``open()``); return the path.

    The bounding box is fitted to everything drawn, so legends placed outside the axes are kept: the
    box of ``bbox_inches="tight"`` with its padding, measured with the canvas's renderer, without
    the extra pass over every artist that ``"tight"`` draws first (a third of a report's plotting
    time; the figures have no layout engine for that pass to run).
    """
    from matplotlib import rcParams

    path = Path(path)
    pad = rcParams["savefig.pad_inches"]
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(pad, pad)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches=box)
    return path


def count_unit(values: Iterable) -> tuple[float, str, str]:
    """``(scale, suffix, word)`` for counts up to ``max(values)``: ``(1e6, "M", "millions")``, ..."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    for scale, suffix, word in _UNITS:
        if top >= scale:
            return scale, suffix, word
    return 1.0, "", ""


def count_axis(ax, which: str, values: Iterable, what: str = "MACs") -> str:
    """Label axis ``which`` ("x" or "y") ``"<what> (<unit word>)"`` with ticks such as ``1.5M``.

    The unit follows the largest value; ticks are formatted by a ``FuncFormatter``, so there is no
    ``1e6`` offset. On a log axis the minor ticks at 2 and 5 times a power of ten get labels too.
    Returns the label.
    """
    from matplotlib.ticker import FuncFormatter

    scale, suffix, word = count_unit(values)

    def major(v, _pos=None):
        return f"{v / scale:.3g}{suffix}" if math.isfinite(v) else ""

    def minor(v, _pos=None):
        if v <= 0 or not math.isfinite(v):
            return ""
        lead = v / 10 ** math.floor(math.log10(v) + 1e-9)
        return major(v) if round(lead, 6) in (2.0, 5.0) else ""

    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(major))
    log = (ax.get_xscale() if which == "x" else ax.get_yscale()) == "log"
    axis.set_minor_formatter(FuncFormatter(minor if log else (lambda v, _pos=None: "")))
    label = f"{what} ({word})" if word else what
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(label)
    return label


def epoch_axis(ax, label: str = "GTN epoch") -> None:
    """Integer epoch ticks on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label)


def legend_outside(ax, handles=None, labels=None, **kwargs):
    """A legend to the right of the axes, where it cannot cover the data."""
    opts = dict(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    opts.update(kwargs)
    if handles is not None:
        return ax.legend(handles, labels if labels is not None else [h.get_label() for h in handles], **opts)
    return ax.legend(**opts)


def finite_err(half: float) -> float:
    """An error-bar length: NaN (unknown spread) is drawn as no bar."""
    return half if math.isfinite(half) else 0.0


__all__ = ["count_axis", "count_unit", "epoch_axis", "finite_err", "legend_outside", "new_figure", "save_png"]
