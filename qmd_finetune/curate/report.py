"""The HTML report: one self-contained offline file (inline CSS and SVG, no scripts, no CDN).

:func:`render_html` takes the stats of :mod:`analyze` (and optionally a pipeline run with
the stats of its input) and draws: a per-stage funnel, before/after bars, categories vs
target, facet shares, length histograms per kind, the score histogram and ratings, top
deductions, clean flags, duplicate clusters and examples per category.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from qmd_finetune.curate.analyze import compute_stats
from qmd_finetune.io import atomic_write, read_frame, write_rejects

BLUE = "#3b6fb6"
GREY = "#b8c2cc"
GREEN = "#3a9a5b"
RED = "#c8553d"
AMBER = "#d9a21b"
INK = "#24292f"


class RunLike(Protocol):
    """What the report reads of a pipeline run (``pipeline.PipelineRun``); the report does
    not import the pipeline, which imports it."""

    after: Any
    inputs: list[dict[str, Any]]
    command: str
    outputs: dict[str, str | None]
    before_stats: dict[str, Any] | None

    def stage(self, name: str) -> Any: ...

    def summary(self) -> dict[str, Any]: ...


RATING_COLORS = {"Excellent": GREEN, "Good": "#7bb661", "Acceptable": AMBER, "Poor": "#e07b39", "Failed": RED}

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#24292f;margin:0;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px;color:#57606a}
.sub{color:#57606a;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:#57606a;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:14px}
.panel{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
pre{background:#f6f8fa;border:1px solid #eaeef2;border-radius:4px;padding:6px 8px;white-space:pre-wrap;margin:4px 0 10px;font-size:12px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
svg text{font:11px -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;fill:#24292f}
.muted{color:#57606a}
.wide{grid-column:1/-1}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


# ---------------------------------------------------------------- SVG charts


def _svg_open(width: float, height: float) -> str:
    """An SVG that scales down to its panel (viewBox) but never grows past its drawn size."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'style="width:100%;max-width:{width}px;height:auto" role="img">'
    )


def hbar_chart(
    rows: list[tuple[str, float]],
    series: list[tuple[str, str]] | None = None,
    values2: list[float] | None = None,
    markers: list[float | None] | None = None,
    width: int = 420,
    label_width: int = 140,
    value_suffix: str = "",
    colors: list[str] | None = None,
) -> str:
    """Horizontal bars (``colors``: one per row); ``values2`` draws a second, thinner bar per row (before/after);
    ``markers`` draws a target tick per row."""
    if not rows:
        return '<p class="muted">nothing to show</p>'
    bar_h, gap = (16, 8) if values2 is None else (11, 10)
    row_h = bar_h * (2 if values2 is not None else 1) + gap
    top = max([v for _, v in rows] + (values2 or []) + [m for m in markers or [] if m is not None] + [1])
    plot = width - label_width - 60
    height = row_h * len(rows) + 6
    parts = [_svg_open(width, height)]
    palette = [c for _, c in series] if series else [BLUE, GREY]
    for i, (label, value) in enumerate(rows):
        y = i * row_h + 3
        fits = max(8, int(label_width / 6.2))
        short = label if len(label) <= fits else label[: fits - 1] + "…"
        parts.append(
            f'<text x="{label_width - 6}" y="{y + bar_h - 3}" text-anchor="end">{esc(short)}<title>{esc(label)}</title></text>'
        )
        first = colors[i] if colors else palette[0]
        bars = [(value, first)] if values2 is None else [(values2[i], palette[1]), (value, first)]
        for j, (v, color) in enumerate(bars):
            w = 0 if top == 0 else v / top * plot
            by = y + j * bar_h
            parts.append(
                f'<rect x="{label_width}" y="{by}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}" rx="2"/>'
            )
            parts.append(
                f'<text x="{label_width + w + 4:.1f}" y="{by + bar_h - 4}">{_fmt(v)}{value_suffix}</text>'
            )
        if markers and markers[i] is not None:
            mx = label_width + markers[i] / top * plot
            parts.append(
                f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{y - 2}" y2="{y + row_h - gap + 2}" stroke="{INK}" stroke-width="2"/>'
            )
    parts.append("</svg>")
    legend = ""
    if series:
        legend = '<div class="legend">' + "".join(
            f'<span><i style="background:{c}"></i>{esc(n)}</span>' for n, c in series
        )
        if markers:
            legend += f'<span><i style="background:{INK};width:3px"></i>target</span>'
        legend += "</div>"
    return legend + "".join(parts)


def histogram_chart(
    histogram: list[list[float]],
    histogram2: list[list[float]] | None = None,
    series: list[tuple[str, str]] | None = None,
    width: int = 420,
    height: int = 170,
    band: tuple[float, float] | None = None,
    integer: bool = True,
) -> str:
    """Vertical bars for ``[[lo, hi, count], ...]``; a second histogram with the same bins is
    drawn side by side (before/after); ``band`` shades a recommended range (e.g. 50-200)."""
    if not histogram:
        return '<p class="muted">nothing to show</p>'
    counts2 = [c for _, _, c in histogram2] if histogram2 else None
    top = max([c for _, _, c in histogram] + (counts2 or []) + [1])
    left, bottom, plot_h = 40, 34, height - 44
    plot_w = width - left - 10
    slot = plot_w / len(histogram)
    colors = [c for _, c in series] if series else [BLUE, GREY]
    parts = [_svg_open(width, height)]
    if band is not None:
        for i, (lo, hi, _) in enumerate(histogram):
            if lo >= band[0] and hi <= band[1]:
                parts.append(
                    f'<rect x="{left + i * slot:.1f}" y="6" width="{slot:.1f}" height="{plot_h}" fill="#e6f4ea"/>'
                )
    for frac in (0.5, 1.0):
        y = 6 + plot_h - frac * plot_h
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(round(top * frac))}</text>'
        )
    for i, (lo, hi, count) in enumerate(histogram):
        bars = [(count, colors[0])] if counts2 is None else [(counts2[i], colors[1]), (count, colors[0])]
        bw = (slot - 4) / len(bars)
        for j, (c, color) in enumerate(bars):
            h = c / top * plot_h
            x = left + i * slot + 2 + j * bw
            parts.append(
                f'<rect x="{x:.1f}" y="{6 + plot_h - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{_fmt(lo)}-{_fmt(hi)}: {c}</title></rect>"
            )
        label = f"{int(lo)}" if integer else f"{lo:g}"
        parts.append(
            f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">{label}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{6 + plot_h}" y2="{6 + plot_h}" stroke="#8c959f"/>'
    )
    parts.append("</svg>")
    legend = ""
    if series:
        legend = (
            '<div class="legend">'
            + "".join(f'<span><i style="background:{c}"></i>{esc(n)}</span>' for n, c in series)
            + "</div>"
        )
    return legend + "".join(parts)


def funnel_chart(stages: list[dict[str, Any]], width: int = 1000) -> str:
    """Per-stage stacked bars: rows kept (green) and rejected (red) of the rows in."""
    if not stages:
        return ""
    top = max(s["in"] for s in stages) or 1
    label_w, row_h = 110, 26
    plot = width - label_w - 200
    parts = [_svg_open(width, row_h * len(stages) + 8)]
    for i, s in enumerate(stages):
        y = i * row_h + 4
        kept_w = s["kept"] / top * plot
        rej_w = s["rejected"] / top * plot
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{esc(s["name"])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{kept_w:.1f}" height="18" fill="{GREEN}" rx="2"/>')
        parts.append(
            f'<rect x="{label_w + kept_w:.1f}" y="{y}" width="{rej_w:.1f}" height="18" fill="{RED}" rx="2"/>'
        )
        parts.append(
            f'<text x="{label_w + kept_w + rej_w + 6:.1f}" y="{y + 14}">{s["kept"]:,} kept, {s["rejected"]:,} rejected</text>'
        )
    parts.append("</svg>")
    return (
        f'<div class="legend"><span><i style="background:{GREEN}"></i>kept</span>'
        f'<span><i style="background:{RED}"></i>rejected</span></div>' + "".join(parts)
    )


# ---------------------------------------------------------------- sections


def _card(value: Any, label: str) -> str:
    text = _fmt(value) if isinstance(value, (int, float)) else esc(value)
    return f'<div class="card"><b>{text}</b><span>{esc(label)}</span></div>'


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if i in numeric else ""}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_section(summary: dict[str, Any], before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    ok = summary["rows_in"] == summary["kept"] + summary["rejected"]
    check = (
        f'<p class="{"ok" if ok else "bad"}">rows in {summary["rows_in"]:,} = kept {summary["kept"]:,} + rejected '
        f"{summary['rejected']:,} {'✓' if ok else '✗ MISMATCH'}</p>"
    )
    rows = []
    for s in summary["stages"]:
        reasons = "<br>".join(
            f"{esc(r)}: {n:,}" for r, n in list(s.get("rejected_by_reason", {}).items())[:6]
        )
        more = len(s.get("rejected_by_reason", {})) - 6
        if more > 0:
            reasons += f"<br><span class='muted'>… {more} more reasons</span>"
        counts = ", ".join(f"{esc(k)}: {_fmt(v)}" for k, v in (s.get("counts") or {}).items() if v)
        rows.append(
            [
                esc(s["name"]),
                f"{s['in']:,}",
                f"{s['kept']:,}",
                f"{s['rejected']:,}",
                reasons,
                counts,
                f"{s.get('seconds', 0):.2f}",
            ]
        )
    out = ["<h2>Pipeline run</h2>", check, funnel_chart(summary["stages"])]
    if summary.get("inputs"):
        files = [
            [
                esc(f["path"]),
                f"{f['rows']:,}",
                f"{f['valid']:,}",
                f"{f['invalid']:,}",
                esc(", ".join(f"{k}: {v}" for k, v in (f.get("notes") or {}).items())),
            ]
            for f in summary["inputs"]
        ]
        out.append(
            "<h3>inputs</h3>" + _table(["file", "rows", "valid", "invalid", "notes"], files, {1, 2, 3})
        )
    out.append("<h3>stages</h3>")
    out.append(
        _table(
            ["stage", "in", "kept", "rejected", "rejected by reason", "did", "seconds"], rows, {1, 2, 3, 6}
        )
    )
    if before is not None and before.get("rows"):
        out.append("<h2>Before and after</h2><div class='grid'>")
        series = [("after", BLUE), ("before", GREY)]
        cats_before, cats_after = before.get("categories", {}), after.get("categories", {})
        names = sorted(set(cats_before) | set(cats_after), key=lambda c: -cats_before.get(c, 0))[:30]
        out.append(
            "<div class='panel wide'><h3>rows per category</h3>"
            + hbar_chart(
                [(n, cats_after.get(n, 0)) for n in names],
                series,
                [cats_before.get(n, 0) for n in names],
                width=900,
                label_width=200,
            )
            + "</div>"
        )
        if "score" in before and "score" in after:
            out.append(
                "<div class='panel'><h3>score histogram</h3>"
                + histogram_chart(after["score"]["histogram"], before["score"]["histogram"], series)
                + "</div>"
            )
        key_rows = [
            ("rows", after.get("rows", 0), before.get("rows", 0)),
            ("unique queries", after.get("unique_queries", 0), before.get("unique_queries", 0)),
            ("duplicate rows", after.get("duplicate_rows", 0), before.get("duplicate_rows", 0)),
        ]
        if "score" in before and "score" in after:
            key_rows.append(("mean score", after["score"]["mean"], before["score"]["mean"]))
            key_rows.append(
                ("share >= 70 (%)", after["score"]["share_ge_70"] * 100, before["score"]["share_ge_70"] * 100)
            )
        for kind in ("hyde", "lex", "vec"):
            key_rows.append((f"{kind} items", after["items"][kind]["items"], before["items"][kind]["items"]))
        out.append(
            "<div class='panel'><h3>key numbers</h3>"
            + _table(["", "before", "after"], [[esc(k), _fmt(b), _fmt(a)] for k, a, b in key_rows], {1, 2})
            + "</div>"
        )
        if before.get("only_mode") or after.get("only_mode"):
            modes = sorted(set(before.get("only_mode", {})) | set(after.get("only_mode", {})))
            out.append(
                "<div class='panel'><h3>only-mode rows</h3>"
                + hbar_chart(
                    [(m, after.get("only_mode", {}).get(m, 0)) for m in modes],
                    series,
                    [before.get("only_mode", {}).get(m, 0) for m in modes],
                )
                + "</div>"
            )
        out.append("</div>")
    reports = summary.get("reports") or {}
    signatures = (reports.get("clean") or {}).get("boilerplate_signatures") or []
    if signatures:
        out.append("<h3>boilerplate found by clean (templates shared by many queries)</h3>")
        out.append(
            _table(
                ["kind", "queries", "example"],
                [
                    [esc(g.get("kind", "")), f"{g.get('queries', 0):,}", esc(g.get("example", ""))]
                    for g in signatures[:8]
                ],
                {1},
            )
        )
    clusters = (reports.get("dedup") or {}).get("clusters") or []
    if clusters:
        out.append("<h3>largest duplicate clusters found by dedup (best-scored row kept)</h3>")
        out.append(
            _table(
                ["kind", "size", "kept", "score", "members"],
                [
                    [
                        esc(c.get("kind", "")),
                        str(c.get("size", "")),
                        esc(c.get("kept", "")),
                        "" if c.get("kept_score") is None else f"{c['kept_score']:.1f}",
                        " | ".join(esc(m) for m in (c.get("members") or [])[:5]),
                    ]
                    for c in clusters[:10]
                ],
                {1, 3},
            )
        )
    plan = (reports.get("balance") or {}).get("plan")
    if plan and plan.get("total_needed"):
        out.append("<h3>generation plan (deficits)</h3>")
        out.append(
            _table(
                ["group", "more needed"],
                [[esc(f"category {k}"), f"{v:,}"] for k, v in plan.get("categories", {}).items()]
                + [[esc(f"facet {k}"), f"{v:,}"] for k, v in plan.get("facets", {}).items()]
                + [["<b>total</b>", f"<b>{plan['total_needed']:,}</b>"]],
                {1},
            )
        )
    return "\n".join(out)


def _dataset_sections(stats: dict[str, Any]) -> str:
    out: list[str] = []
    rows = stats["rows"]
    cats = stats.get("categories", {})
    out.append("<h2>Categories</h2><div class='grid'>")
    if stats.get("category_targets"):
        targets = stats["category_targets"]
        names = list(targets)[:30]
        out.append(
            "<div class='panel wide'><h3>rows per category vs target</h3>"
            + hbar_chart(
                [(n, targets[n]["count"]) for n in names],
                [("rows", BLUE)],
                markers=[targets[n]["target"] for n in names],
                width=900,
                label_width=200,
            )
            + "</div>"
        )
        table_rows = []
        for n in names:
            count, target = targets[n]["count"], targets[n]["target"]
            gap = (
                ""
                if target is None
                else f'<span class="{"bad" if count < target else "ok"}">{count - target:+,}</span>'
            )
            table_rows.append([esc(n), f"{count:,}", "-" if target is None else f"{target:,}", gap])
        out.append(
            "<div class='panel'>"
            + _table(["category", "rows", "target", "gap"], table_rows, {1, 2, 3})
            + "</div>"
        )
    else:
        names = list(cats)[:30]
        out.append(
            "<div class='panel wide'><h3>rows per category</h3>"
            + hbar_chart([(n, cats[n]) for n in names], width=900, label_width=200)
            + "</div>"
        )
    if stats.get("facets"):
        facets = stats["facets"]
        facet_targets = stats.get("facet_targets") or {}
        names = list(facets)
        out.append(
            "<div class='panel'><h3>facet shares (% of rows)</h3>"
            + hbar_chart(
                [(n, round(facets[n]["share"] * 100, 1)) for n in names],
                [("share", BLUE)],
                markers=[(facet_targets[n] / rows * 100) if n in facet_targets else None for n in names]
                if facet_targets
                else None,
                value_suffix="%",
            )
            + "</div>"
        )
    if stats.get("splits"):
        out.append(
            "<div class='panel'><h3>splits</h3>" + hbar_chart(list(stats["splits"].items())) + "</div>"
        )
    out.append("</div>")

    out.append("<h2>Lengths</h2><div class='grid'>")
    for kind in ("hyde", "lex", "vec"):
        data = stats["items"][kind]
        chars = data["chars"]
        note = (
            f"{data['items']:,} items in {data['rows_with']:,} rows; median {chars.get('median', 0):.0f} chars"
            if chars["count"]
            else "no items"
        )
        if kind == "hyde" and data.get("outside_50_200") is not None:
            note += f"; {data['outside_50_200']:,} outside 50-200 (green band)"
        out.append(
            f"<div class='panel'><h3>{kind} length (characters)</h3><p class='muted'>{esc(note)}</p>"
            + histogram_chart(chars.get("histogram", []), band=(50, 200) if kind == "hyde" else None)
            + "</div>"
        )
    out.append(
        "<div class='panel'><h3>query length (words)</h3>"
        + histogram_chart(stats["query_words"].get("histogram", []))
        + "</div>"
    )
    per_row_rows = []
    for kind in ("hyde", "lex", "vec"):
        per_row = stats["items"][kind]["per_row"]
        per_row_rows.append([kind, " · ".join(f"{k} items: {v:,}" for k, v in per_row.items())])
    out.append(
        "<div class='panel'><h3>items per row</h3>" + _table(["kind", "rows"], per_row_rows) + "</div>"
    )
    out.append("</div>")

    if "score" in stats:
        s = stats["score"]
        out.append("<h2>Scores (the reward)</h2><div class='grid'>")
        out.append(
            f"<div class='panel'><h3>score histogram</h3><p class='muted'>mean {s['mean']:.1f} · median "
            f"{s['median']:.1f} · share ≥ 70: {s['share_ge_70']:.1%}</p>"
            + histogram_chart(s["histogram"])
            + "</div>"
        )
        if s.get("ratings"):
            ratings = list(s["ratings"].items())
            bars = hbar_chart(ratings, colors=[RATING_COLORS.get(name, BLUE) for name, _ in ratings])
            out.append(f"<div class='panel'><h3>ratings</h3>{bars}</div>")
        if s.get("top_deductions"):
            out.append(
                "<div class='panel wide'><h3>top deductions (rows)</h3>"
                + hbar_chart(
                    [(r, n) for r, n in s["top_deductions"]], [("rows", AMBER)], label_width=250, width=600
                )
                + "</div>"
            )
        out.append("</div>")

    if stats.get("flags"):
        out.append(
            "<h2>Clean flags</h2><div class='panel'>"
            f"<p class='muted'>{stats.get('flagged_rows', 0):,} rows carry at least one flag</p>"
            + hbar_chart(list(stats["flags"].items())[:20], [("rows", RED)], label_width=260, width=700)
            + "</div>"
        )

    dups = stats.get("duplicates") or {}
    out.append(
        f"<h2>Duplicate clusters</h2><p class='muted'>by {esc(dups.get('method', ''))}: "
        f"{dups.get('clusters', 0):,} clusters holding {dups.get('rows_in_clusters', 0):,} rows</p>"
    )
    if dups.get("largest"):
        out.append(
            _table(
                ["size", "queries"],
                [[str(c["size"]), " | ".join(esc(q) for q in c["queries"])] for c in dups["largest"]],
                {0},
            )
        )

    if stats.get("examples"):
        out.append(
            "<h2>Examples per category</h2><p class='muted'>the best-scored rows of each category (rows without clean flags first)</p>"
        )
        out.append("<div class='grid'>")
        for cat, examples in stats["examples"].items():
            blocks = []
            for example in examples:
                score = f" · {example['score']:.1f}" if example.get("score") is not None else ""
                blocks.append(
                    f"<b>{esc(example['query'])}</b><span class='muted'>{score}</span><pre>{esc(example['text'])}</pre>"
                )
            out.append(f"<div class='panel'><h3>{esc(cat)}</h3>{''.join(blocks)}</div>")
        out.append("</div>")
    return "\n".join(out)


def render_html(
    stats: dict[str, Any],
    title: str = "Dataset report",
    subtitle: str = "",
    run_summary: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
) -> str:
    """A complete HTML document for ``stats`` (and a pipeline run, when given)."""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = [_card(stats.get("rows", 0), "rows")]
    if run_summary is not None:
        cards = [
            _card(run_summary["rows_in"], "rows in"),
            _card(run_summary["kept"], "kept"),
            _card(run_summary["rejected"], "rejected"),
        ]
    if stats.get("rows"):
        cards.append(_card(stats["unique_queries"], "unique queries"))
        cards.append(_card(len(stats.get("categories", {})), "categories"))
        if "score" in stats:
            cards.append(_card(stats["score"]["mean"], "mean score"))
            cards.append(_card(f"{stats['score']['share_ge_70']:.1%}", "score ≥ 70"))
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='sub'>{esc(subtitle)} · generated {generated} by qmd-finetune</p>",
        f"<div class='cards'>{''.join(cards)}</div>",
    ]
    if run_summary is not None:
        body.append(_run_section(run_summary, before, stats))
    if stats.get("rows"):
        body.append(_dataset_sections(stats))
    else:
        body.append("<p>No rows.</p>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def write_html(text: str, path: str | Path) -> Path:
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_run_report(run: RunLike, path: str | Path, targets: str | Path | None = None) -> Path:
    """The report of a pipeline run: its output's stats with before/after against its input.

    Categories are compared with the targets the balance stage resolved when it ran, else
    with ``targets`` (a YAML path)."""
    from qmd_finetune.curate.analyze import compute_stats

    balance = run.stage("balance")
    resolved = balance.report.get("targets") if balance is not None else None
    after = compute_stats(run.after, targets=resolved or targets)
    before = run.before_stats
    names = [Path(f["path"]).name for f in run.inputs]
    inputs = ", ".join(names) if len(names) <= 3 else f"{len(names)} files ({', '.join(names[:2])}, ...)"
    subtitle = f"{run.command}: {inputs} → {run.outputs.get('output') or '(no output)'}"
    return write_html(render_html(after, "Curation report", subtitle, run.summary(), before), path)


def analyze_files(
    paths: list[Path],
    targets: str | Path | None = None,
    examples: int = 3,
    html: str | Path | None = None,
    json_path: str | Path | None = None,
    rejects: str | Path | None = None,
) -> dict[str, Any]:
    """Read files (curation columns included), compute stats, write the JSON and HTML reports
    (and the invalid rows to ``rejects``)."""
    read = read_frame(paths)
    stats = compute_stats(read.frame, targets=targets, examples=examples)
    stats["inputs"] = [f.to_dict() for f in read.files]
    stats["invalid_rows"] = read.rejects.height
    if rejects is not None:
        write_rejects(read.rejects, rejects)
    if json_path is not None:
        with atomic_write(json_path) as handle:
            json.dump(stats, handle, indent=2, default=str)
            handle.write("\n")
    if html is not None:
        names = ", ".join(Path(p).name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        write_html(render_html(stats, "Dataset report", f"curate analyze: {names}"), html)
    return stats
