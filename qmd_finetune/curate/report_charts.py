"""Charts for the HTML report: matplotlib figures rendered to inline SVG.

Why matplotlib: it is the long-maintained standard, draws offline with no browser or
JavaScript, and its SVG output embeds in the page as text, so the report stays one
self-contained file (no CDN, no script for the charts) that prints and scales cleanly.
Text stays text (``svg.fonttype: none``), so labels are searchable and crisp. Every chart
has axis titles; histograms take equal-width bins from :func:`analyze.distribution`.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

BLUE = "#3b6fb6"
GREY = "#b8c2cc"
GREEN = "#3a9a5b"
RED = "#c8553d"
AMBER = "#d9a21b"
INK = "#24292f"
BAND = "#e6f4ea"
RATING_COLORS = {"Excellent": GREEN, "Good": "#7bb661", "Acceptable": AMBER, "Poor": "#e07b39", "Failed": RED}

_STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#8c959f",
    "axes.titlesize": 11,
    "axes.labelcolor": INK,
    "xtick.color": "#57606a",
    "ytick.color": INK,
    "axes.grid": True,
    "grid.color": "#eaeef2",
    "axes.axisbelow": True,
}
_ids = itertools.count()
_SIZE = re.compile(r'<svg([^>]*?) width="[^"]*" height="[^"]*"')
NOTHING = '<p class="muted">nothing to show</p>'


WIDE = 11.0
"""Inches of a chart that spans the page (72 px each)."""
_THOUSANDS = FuncFormatter(lambda value, _: f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}")


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _label_chars(width: float) -> int:
    return 30 if width < 8 else 46


def to_svg(fig: Figure, title: str = "") -> str:
    """The figure as an inline ``<svg>`` that scales to its panel; ids are unique per chart."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"chart{next(_ids)}"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    width = fig.get_figwidth() * 72
    text = _SIZE.sub(
        lambda m: f'<svg{m.group(1)} style="width:100%;max-width:{width:.0f}px;height:auto" role="img"',
        text,
        count=1,
    )
    if title:
        text = text.replace(">", f"><title>{_xml(title)}</title>", 1)
    return text


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(label: str, width: int = 34) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _styled(function: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> str:
        with matplotlib.rc_context(_STYLE):
            return function(*args, **kwargs)

    wrapper.__doc__ = function.__doc__
    wrapper.__name__ = function.__name__
    return wrapper


@_styled
def hbar(
    rows: Sequence[tuple[str, float]],
    xlabel: str,
    ylabel: str = "",
    colors: Sequence[str] | None = None,
    before: Sequence[float] | None = None,
    markers: Sequence[float | None] | None = None,
    labels: tuple[str, str] = ("after", "before"),
    suffix: str = "",
    width: float = 7.0,
) -> str:
    """Horizontal bars, largest first as given; ``before`` adds a grey bar per row (before/after),
    ``markers`` a target tick per row. Values are printed at the bar ends."""
    if not rows:
        return NOTHING
    n = len(rows)
    fig = _figure(width, 0.7 + 0.28 * n * (1.6 if before is not None else 1))
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    values = [v for _, v in rows]
    height = 0.4 if before is not None else 0.7
    if before is not None:
        grey = ax.barh([y + height / 2 for y in ys], before, height=height, color=GREY, label=labels[1])
        ax.bar_label(grey, labels=[_fmt(v) for v in before], padding=3, fontsize=8, color="#57606a")
        bars = ax.barh([y - height / 2 for y in ys], values, height=height, color=BLUE, label=labels[0])
    else:
        bars = ax.barh(ys, values, height=height, color=list(colors) if colors else BLUE)
    ax.bar_label(bars, labels=[_fmt(v) + suffix for v in values], padding=3, fontsize=9)
    if markers is not None:
        points = [(m, y) for m, y in zip(markers, ys) if m is not None]
        if points:
            ax.scatter(
                [m for m, _ in points],
                [y for _, y in points],
                marker="|",
                s=260,
                color=INK,
                zorder=3,
                linewidths=2,
                label="target",
            )
    ax.set_yticks(ys, [_short(label, _label_chars(width)) for label, _ in rows])
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    top = max([*values, *(before or []), *[m for m in markers or [] if m is not None], 1])
    ax.set_xlim(0, top * 1.15)
    ax.grid(axis="y", visible=False)
    if before is not None or markers is not None:
        ax.legend(loc="lower right", frameon=False, fontsize=9)
    return to_svg(fig, xlabel)


@_styled
def stacked_hbar(
    rows: Sequence[tuple[str, float, float]],
    xlabel: str,
    ylabel: str,
    labels: tuple[str, str] = ("kept", "rejected"),
    width: float = WIDE,
) -> str:
    """One bar per row split in two parts (kept green, rejected red), with both numbers printed."""
    if not rows:
        return NOTHING
    n = len(rows)
    fig = _figure(width, 0.8 + 0.32 * n)
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    kept = [k for _, k, _ in rows]
    rejected = [r for _, _, r in rows]
    ax.barh(ys, kept, color=GREEN, label=labels[0], height=0.7)
    ax.barh(ys, rejected, left=kept, color=RED, label=labels[1], height=0.7)
    for y, k, r in zip(ys, kept, rejected):
        ax.text(k + r, y, f"  {k:,.0f} {labels[0]}, {r:,.0f} {labels[1]}", va="center", fontsize=9)
    ax.set_yticks(ys, [_short(label, _label_chars(width)) for label, _, _ in rows])
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, max([k + r for k, r in zip(kept, rejected)] + [1]) * 1.45)
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right", frameon=False, fontsize=9)
    return to_svg(fig, xlabel)


@_styled
def histogram(
    bins: Sequence[Sequence[float]],
    xlabel: str,
    ylabel: str = "rows",
    before: Sequence[Sequence[float]] | None = None,
    band: tuple[float, float] | None = None,
    labels: tuple[str, str] = ("after", "before"),
    width: float = 5.2,
) -> str:
    """Equal-width bins ``[[lo, hi, count], ...]`` as bars on a true numeric axis (each bar spans
    its bin); ``before`` (same edges) is drawn as wide grey bars behind narrower blue ones;
    ``band`` shades a recommended range."""
    if not bins:
        return NOTHING
    fig = _figure(width, 2.6)
    ax = fig.add_subplot()
    if band is not None:
        ax.axvspan(band[0], band[1], color=BAND, zorder=0, label=f"recommended {band[0]:g}-{band[1]:g}")
    if before is not None:
        _bars(ax, before, GREY, 1.0, labels[1])
    _bars(ax, bins, BLUE, 1.0 if before is None else 0.55, labels[0] if before is not None else None)
    edges = [b[0] for b in bins] + [bins[-1][1]]
    if before is not None:
        edges += [before[0][0], before[-1][1]]
    ax.set_xlim(min(edges), max(edges))
    ax.yaxis.set_major_formatter(_THOUSANDS)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if before is not None or band is not None:
        ax.legend(loc="upper left", frameon=False, fontsize=8)
    return to_svg(fig, xlabel)


def _bars(ax: Any, bins: Sequence[Sequence[float]], color: str, share: float, label: str | None) -> None:
    """One bar per bin, ``share`` of the bin wide and centred, with a thin white gap between bins."""
    widths = [(hi - lo) * share for lo, hi, _ in bins]
    centres = [(lo + hi) / 2 for lo, hi, _ in bins]
    ax.bar(
        centres,
        [c for *_, c in bins],
        width=widths,
        color=color,
        edgecolor="white",
        linewidth=0.6,
        label=label,
    )


@_styled
def boxes(
    groups: Sequence[tuple[str, dict[str, float]]], xlabel: str, ylabel: str, width: float = 7.0
) -> str:
    """Horizontal box plots from precomputed quartiles (box: 25-75%, whiskers: 10-90%, line:
    median, dot: mean), one per group, with the group's row count in its label."""
    if not groups:
        return NOTHING
    n = len(groups)
    fig = _figure(width, 0.8 + 0.3 * n)
    ax = fig.add_subplot()
    stats = [
        {
            "label": f"{_short(name, _label_chars(width))} ({s['count']:,})",
            "med": s["median"],
            "q1": s["q1"],
            "q3": s["q3"],
            "whislo": s["p10"],
            "whishi": s["p90"],
            "mean": s["mean"],
            "fliers": [],
        }
        for name, s in groups
    ][::-1]
    ax.bxp(
        stats,
        orientation="horizontal",
        showmeans=True,
        patch_artist=True,
        boxprops={"facecolor": "#dbe7f6", "edgecolor": BLUE},
        medianprops={"color": INK, "linewidth": 1.6},
        meanprops={"marker": "o", "markerfacecolor": AMBER, "markeredgecolor": AMBER, "markersize": 4},
        whiskerprops={"color": BLUE},
        capprops={"color": BLUE},
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", visible=False)
    return to_svg(fig, xlabel)
