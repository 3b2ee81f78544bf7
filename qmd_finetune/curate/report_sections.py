"""The HTML report's sections: each takes stats (from :mod:`analyze`) or a run summary and
returns HTML with charts from :mod:`report_charts`."""

from __future__ import annotations

import html
from typing import Any

from qmd_finetune.curate import report_charts as charts

PANEL_EXAMPLES = 3


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def card(value: Any, label: str) -> str:
    text = fmt(value) if isinstance(value, (int, float)) else esc(value)
    return f'<div class="card"><b>{text}</b><span>{esc(label)}</span></div>'


def table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    """An HTML table; cells are inserted as given (escape them first)."""
    numeric = numeric or set()
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if i in numeric else ""}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def panel(title: str, body: str, wide: bool = False, note: str = "") -> str:
    note_html = f"<p class='muted'>{esc(note)}</p>" if note else ""
    return f"<div class='panel{' wide' if wide else ''}'><h3>{esc(title)}</h3>{note_html}{body}</div>"


def row_block(row: dict[str, Any]) -> str:
    """One row as the report shows it: query, score, flags, file:line, output lines, deductions."""
    meta = []
    if row.get("score") is not None:
        meta.append(f"score {row['score']:.1f}")
    if row.get("category"):
        meta.append(esc(row["category"]))
    if row.get("source"):
        meta.append(esc(row["source"]))
    flags = "".join(f"<span class='tag flag'>{esc(f)}</span>" for f in row.get("flags") or [])
    deductions = (
        f"<div class='ded'>deductions: {esc('; '.join(row['deductions']))}</div>"
        if row.get("deductions")
        else ""
    )
    return (
        f"<div class='example'><b>{esc(row['query'])}</b> <span class='muted'>{' · '.join(meta)}</span> {flags}"
        f"<pre>{esc(row['text'])}</pre>{deductions}</div>"
    )


# ---------------------------------------------------------------- a pipeline run


def run_section(
    summary: dict[str, Any],
    before: dict[str, Any] | None,
    after: dict[str, Any],
    views: dict[str, Any] | None = None,
) -> str:
    """Funnel, per-file survival, the stage table, example rejects per reason, before/after."""
    views = views or {}
    ok = summary["rows_in"] == summary["kept"] + summary["rejected"]
    out = [
        "<h2 id='run'>Pipeline run</h2>",
        f'<p class="{"ok" if ok else "bad"}">rows in {summary["rows_in"]:,} = kept {summary["kept"]:,} + '
        f"rejected {summary['rejected']:,} {'✓' if ok else '✗ MISMATCH'}</p>",
        "<div class='grid'>",
        panel(
            "funnel: rows kept and rejected at each stage",
            charts.stacked_hbar(
                [(s["name"], s["kept"], s["rejected"]) for s in summary["stages"]], "rows", "stage"
            ),
            wide=True,
        ),
    ]
    survival = views.get("survival") or []
    if survival:
        out.append(
            panel(
                "survival per input file",
                charts.stacked_hbar(
                    [(name, kept, rejected) for name, _, kept, rejected in survival], "rows", "input file"
                )
                + table(
                    ["file", "rows", "kept", "rejected", "kept %"],
                    [
                        [
                            esc(name),
                            f"{rows:,}",
                            f"{kept:,}",
                            f"{rejected:,}",
                            f"{kept / rows:.0%}" if rows else "-",
                        ]
                        for name, rows, kept, rejected in survival
                    ],
                    {1, 2, 3, 4},
                ),
                wide=True,
            )
        )
    out.append("</div>")
    out.append("<h3>stages</h3>" + _stage_table(summary["stages"]))
    examples = views.get("reject_examples") or {}
    if examples:
        out.append(
            "<h3 id='rejects'>example rejects per reason</h3>"
            + table(
                ["stage: reason", "rows", "examples (file:line)"],
                [
                    [
                        esc(reason),
                        f"{data['count']:,}",
                        "".join(
                            f"<div><b>{esc(e['query'] or '(unreadable line)')}</b> "
                            f"<span class='muted'>{esc(e['source'])}</span>"
                            + (
                                f"<br><span class='muted'>{esc(e['detail'])}</span>"
                                if e.get("detail")
                                else ""
                            )
                            + "</div>"
                            for e in data["examples"]
                        ),
                    ]
                    for reason, data in examples.items()
                ],
                {1},
            )
        )
    if before is not None and before.get("rows") and after.get("rows"):
        out.append(_before_after(before, after, views.get("score_on_input_bins")))
    out.append(_stage_reports(summary.get("reports") or {}))
    return "\n".join(out)


def _stage_table(stages: list[dict[str, Any]]) -> str:
    rows = []
    for s in stages:
        by_reason = s.get("rejected_by_reason", {})
        reasons = "<br>".join(f"{esc(r)}: {n:,}" for r, n in list(by_reason.items())[:6])
        if len(by_reason) > 6:
            reasons += f"<br><span class='muted'>… {len(by_reason) - 6} more reasons</span>"
        counts = ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in (s.get("counts") or {}).items() if v)
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
    return table(
        ["stage", "in", "kept", "rejected", "rejected by reason", "did", "seconds"], rows, {1, 2, 3, 6}
    )


def _before_after(
    before: dict[str, Any], after: dict[str, Any], after_scores: list[list[float]] | None = None
) -> str:
    """Categories, scores (``after_scores``: the output's histogram on the input's bins), key
    numbers and only-mode rows, before and after."""
    out = [
        "<h2 id='before-after'>Before and after</h2>",
        "<p class='muted'>before = every valid input row, categorized as the pipeline categorizes;"
        " after = the output.</p><div class='grid'>",
    ]
    cats_before, cats_after = before.get("categories", {}), after.get("categories", {})
    names = sorted(set(cats_before) | set(cats_after), key=lambda c: -cats_before.get(c, 0))[:30]
    out.append(
        panel(
            "rows per category",
            charts.hbar(
                [(n, cats_after.get(n, 0)) for n in names],
                "rows",
                "category",
                before=[cats_before.get(n, 0) for n in names],
                width=charts.WIDE,
            ),
            wide=True,
        )
    )
    if "score" in before and after_scores:
        out.append(
            panel("score", charts.histogram(after_scores, "score (%)", before=before["score"]["histogram"]))
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
        panel(
            "key numbers",
            table(["", "before", "after"], [[esc(k), fmt(b), fmt(a)] for k, a, b in key_rows], {1, 2}),
        )
    )
    modes = sorted(set(before.get("only_mode", {})) | set(after.get("only_mode", {})))
    if modes:
        out.append(
            panel(
                "only-mode rows",
                charts.hbar(
                    [(m, after.get("only_mode", {}).get(m, 0)) for m in modes],
                    "rows",
                    "only mode",
                    before=[before.get("only_mode", {}).get(m, 0) for m in modes],
                    width=5.2,
                ),
            )
        )
    out.append("</div>")
    return "\n".join(out)


def _stage_reports(reports: dict[str, Any]) -> str:
    out = []
    signatures = (reports.get("clean") or {}).get("boilerplate_signatures") or []
    if signatures:
        out.append("<h3>boilerplate found by clean (templates shared by many queries)</h3>")
        out.append(
            table(
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
        out.append(
            "<h3 id='dedup-clusters'>largest duplicate clusters found by dedup (the kept row and the members)</h3>"
        )
        out.append(
            table(
                ["kind", "size", "kept", "score", "members"],
                [
                    [
                        esc(c.get("kind", "")),
                        str(c.get("size", "")),
                        esc(c.get("kept", "")),
                        "" if c.get("kept_score") is None else f"{c['kept_score']:.1f}",
                        "<br>".join(esc(m) for m in (c.get("members") or [])[:8]),
                    ]
                    for c in clusters[:12]
                ],
                {1, 3},
            )
        )
    plan = (reports.get("balance") or {}).get("plan")
    if plan and plan.get("total_needed"):
        out.append("<h3>generation plan (deficits)</h3>")
        out.append(
            table(
                ["group", "more needed"],
                [[esc(f"category {k}"), f"{v:,}"] for k, v in plan.get("categories", {}).items()]
                + [[esc(f"facet {k}"), f"{v:,}"] for k, v in plan.get("facets", {}).items()]
                + [["<b>total</b>", f"<b>{plan['total_needed']:,}</b>"]],
                {1},
            )
        )
    return "\n".join(out)


# ---------------------------------------------------------------- a dataset


def dataset_sections(stats: dict[str, Any]) -> str:
    return "\n".join(
        [
            _categories(stats),
            _lengths(stats),
            _scores(stats) if "score" in stats else "",
            _flags(stats) if stats.get("flags") else "",
            _duplicates(stats.get("duplicates") or {}),
            _examples(stats.get("examples") or {}),
        ]
    )


def _categories(stats: dict[str, Any]) -> str:
    rows = stats["rows"]
    out = ["<h2 id='categories'>Categories</h2><div class='grid'>"]
    if stats.get("category_targets"):
        targets = stats["category_targets"]
        names = list(targets)[:30]
        out.append(
            panel(
                "rows per category vs target",
                charts.hbar(
                    [(n, targets[n]["count"]) for n in names],
                    "rows",
                    "category",
                    markers=[targets[n]["target"] for n in names],
                    width=charts.WIDE,
                ),
                wide=True,
            )
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
            panel("categories vs target", table(["category", "rows", "target", "gap"], table_rows, {1, 2, 3}))
        )
    else:
        cats = stats.get("categories", {})
        out.append(
            panel(
                "rows per category",
                charts.hbar([(n, cats[n]) for n in list(cats)[:30]], "rows", "category", width=charts.WIDE),
                wide=True,
            )
        )
    if stats.get("facets"):
        facets, facet_targets = stats["facets"], stats.get("facet_targets") or {}
        names = list(facets)
        markers = [(facet_targets[n] / rows * 100) if n in facet_targets else None for n in names]
        out.append(
            panel(
                "facet shares",
                charts.hbar(
                    [(n, round(facets[n]["share"] * 100, 1)) for n in names],
                    "share of rows (%)",
                    "facet",
                    markers=markers if facet_targets else None,
                    suffix="%",
                    width=5.2,
                ),
            )
        )
    if stats.get("splits"):
        out.append(panel("splits", charts.hbar(list(stats["splits"].items()), "rows", "split", width=5.2)))
    out.append("</div>")
    return "\n".join(out)


def _tail(dist: dict[str, Any], unit: str) -> str:
    """The values right of the last bin (past the 99.5th percentile), counted, not drawn."""
    if not dist.get("above"):
        return ""
    return f"; {dist['above']:,} above {dist['histogram'][-1][1]:g}{unit} not drawn"


def _lengths(stats: dict[str, Any]) -> str:
    out = ["<h2 id='lengths'>Lengths</h2><div class='grid'>"]
    for kind in ("hyde", "lex", "vec"):
        data = stats["items"][kind]
        chars = data["chars"]
        note = (
            f"{data['items']:,} items in {data['rows_with']:,} rows; median {chars.get('median', 0):.0f} chars"
            if chars["count"]
            else "no items"
        )
        if kind == "hyde" and data.get("outside_50_200") is not None:
            note += f"; {data['outside_50_200']:,} outside 50-200"
        note += _tail(chars, " chars")
        out.append(
            panel(
                f"{kind} length",
                charts.histogram(
                    chars.get("histogram", []),
                    f"{kind} length (characters)",
                    ylabel="items",
                    band=(50, 200) if kind == "hyde" else None,
                ),
                note=note,
            )
        )
    words = stats["query_words"]
    out.append(
        panel(
            "query length",
            charts.histogram(words.get("histogram", []), "query length (words)"),
            note=f"median {words.get('median', 0):.0f} words{_tail(words, ' words')}"
            if words.get("count")
            else "",
        )
    )
    per_row = [
        [kind, " · ".join(f"{k} items: {v:,}" for k, v in stats["items"][kind]["per_row"].items())]
        for kind in ("hyde", "lex", "vec")
    ]
    out.append(panel("items per row", table(["kind", "rows"], per_row)))
    out.append("</div>")
    return "\n".join(out)


def _scores(stats: dict[str, Any]) -> str:
    s = stats["score"]
    out = [
        f"<h2 id='scores'>Scores (the reward, rubric {esc(s.get('rubric', 'unknown'))})</h2><div class='grid'>"
    ]
    out.append(
        panel(
            "score distribution",
            charts.histogram(s["histogram"], "score (%)"),
            note=f"mean {s['mean']:.1f} · median {s['median']:.1f} · min {s['min']:.1f} · share ≥ 70: "
            f"{s['share_ge_70']:.1%}{_tail(s, '')}",
        )
    )
    if s.get("ratings"):
        ratings = list(s["ratings"].items())
        out.append(
            panel(
                "ratings",
                charts.hbar(
                    ratings,
                    "rows",
                    "rating",
                    colors=[charts.RATING_COLORS.get(n, charts.BLUE) for n, _ in ratings],
                    width=5.2,
                ),
            )
        )
    by_category = s.get("by_category") or {}
    if by_category:
        ordered = sorted(by_category.items(), key=lambda item: item[1]["median"])[:30]
        out.append(
            panel(
                "score per category",
                charts.boxes(ordered, "score (%)", "category (rows)", width=charts.WIDE),
                wide=True,
                note="box: middle half of the rows; whiskers: 10th to 90th percentile; line: median; dot: mean."
                " Lowest median first.",
            )
        )
    if s.get("top_deductions"):
        out.append(
            panel(
                "top deductions",
                charts.hbar(
                    [(r, n) for r, n in s["top_deductions"]],
                    "rows with the deduction",
                    "deduction",
                    colors=[charts.AMBER] * len(s["top_deductions"]),
                    width=charts.WIDE,
                ),
                wide=True,
            )
        )
    out.append("</div>")
    if s.get("worst"):
        out.append(
            "<h3 id='worst'>worst-scored rows</h3><div class='panel'>"
            + "".join(row_block(r) for r in s["worst"])
            + "</div>"
        )
    return "\n".join(out)


def _flags(stats: dict[str, Any]) -> str:
    flags = list(stats["flags"].items())[:20]
    out = [
        "<h2 id='flags'>Clean flags</h2><div class='grid'>",
        panel(
            "rows per flag",
            charts.hbar(flags, "rows", "flag", colors=[charts.RED] * len(flags), width=charts.WIDE),
            wide=True,
            note=f"{stats.get('flagged_rows', 0):,} rows carry at least one flag and are still in the data",
        ),
        "</div>",
    ]
    examples = stats.get("flagged_examples") or {}
    if examples:
        out.append("<h3>flagged rows that were kept (lowest score first)</h3><div class='grid'>")
        for flag, rows in examples.items():
            out.append(panel(flag, "".join(row_block(r) for r in rows[:PANEL_EXAMPLES])))
        out.append("</div>")
    return "\n".join(out)


def _duplicates(dups: dict[str, Any]) -> str:
    out = [
        f"<h2 id='duplicates'>Duplicate clusters</h2><p class='muted'>by {esc(dups.get('method', ''))}: "
        f"{dups.get('clusters', 0):,} clusters holding {dups.get('rows_in_clusters', 0):,} rows</p>"
    ]
    if dups.get("largest"):
        out.append(
            table(
                ["rows", "distinct queries", "members"],
                [
                    [
                        str(c["size"]),
                        str(c.get("distinct", len(c["queries"]))),
                        "<br>".join(esc(q) for q in c["queries"]),
                    ]
                    for c in dups["largest"]
                ],
                {0, 1},
            )
        )
    return "\n".join(out)


def _examples(examples: dict[str, list[dict[str, Any]]]) -> str:
    if not examples:
        return ""
    out = [
        "<h2 id='examples'>Examples per category</h2><p class='muted'>the best-scored rows of each category"
        " (rows without clean flags first)</p><div class='grid'>"
    ]
    for cat, rows in examples.items():
        blocks = []
        for example in rows:
            score = f" · {example['score']:.1f}" if example.get("score") is not None else ""
            blocks.append(
                f"<b>{esc(example['query'])}</b><span class='muted'>{score}</span><pre>{esc(example['text'])}</pre>"
            )
        out.append(panel(cat, "".join(blocks)))
    out.append("</div>")
    return "\n".join(out)
