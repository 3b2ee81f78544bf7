"""The HTML report: one self-contained offline file (inline CSS, SVG charts and a row browser).

:func:`render_html` takes the stats of :mod:`analyze` (and optionally a pipeline run with
the stats of its input) and lays out the sections of :mod:`report_sections` (charts drawn by
matplotlib in :mod:`report_charts`) and the row browser of :mod:`report_browser`: funnel,
survival per input file, example rejects per reason, before/after, categories vs target,
facets, lengths, scores (per category too), worst-scored rows, clean flags and flagged rows
kept, duplicate clusters with members, examples per category, and every row.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from qmd_finetune.curate import report_browser
from qmd_finetune.curate.analyze import compute_stats, distribution
from qmd_finetune.curate.report_sections import card, dataset_sections, esc, run_section
from qmd_finetune.curate.summary import reason_kind
from qmd_finetune.io import atomic_write, output_group, read_frame, write_rejects
from qmd_finetune.reward import DEFAULT_RUBRIC

REJECT_EXAMPLES = 3
"""Example rows shown per reject reason."""

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#24292f;margin:0;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px;color:#57606a}
nav{margin:0 0 14px;font-size:13px}nav a{margin-right:12px;color:#3b6fb6}
.sub{color:#57606a;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:#57606a;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:14px}
.panel{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px;min-width:0}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
pre{background:#f6f8fa;border:1px solid #eaeef2;border-radius:4px;padding:6px 8px;white-space:pre-wrap;margin:4px 0 10px;font-size:12px}
.example{margin:0 0 8px}.ded{font-size:12px;color:#8a4b00}
.tag{font-size:11px;border-radius:3px;padding:0 5px;background:#eaeef2}.tag.flag{background:#fff1c2}
.muted{color:#57606a}
.wide{grid-column:1/-1}
"""


class RunLike(Protocol):
    """What the report reads of a pipeline run (``pipeline.PipelineRun``); the report does
    not import the pipeline, which imports it."""

    after: pl.DataFrame
    ledger: pl.DataFrame
    inputs: list[dict[str, Any]]
    command: str
    outputs: dict[str, str | None]
    before_stats: dict[str, Any] | None

    def stage(self, name: str) -> Any: ...

    def summary(self) -> dict[str, Any]: ...


def render_html(
    stats: dict[str, Any],
    title: str = "Dataset report",
    subtitle: str = "",
    run_summary: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    run_views: dict[str, Any] | None = None,
    rows: str | None = None,
) -> str:
    """A complete HTML document for ``stats`` (and a pipeline run, when given); ``rows`` is
    the row browser's payload (:func:`report_browser.payload`)."""
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = [card(stats.get("rows", 0), "rows")]
    if run_summary is not None:
        cards = [
            card(run_summary["rows_in"], "rows in"),
            card(run_summary["kept"], "kept"),
            card(run_summary["rejected"], "rejected"),
        ]
    if stats.get("rows"):
        cards.append(card(stats["unique_queries"], "unique queries"))
        cards.append(card(len(stats.get("categories", {})), "categories"))
        if "score" in stats:
            cards.append(card(stats["score"]["mean"], "mean score"))
            cards.append(card(f"{stats['score']['share_ge_70']:.1%}", "score ≥ 70"))
    links = [("run", "run")] if run_summary is not None else []
    if stats.get("rows"):
        links += [("categories", "categories"), ("lengths", "lengths"), ("scores", "scores")]
        links += [("flags", "flags")] if stats.get("flags") else []
        links += [("duplicates", "duplicates"), ("examples", "examples")]
    links += [("rows", "rows")] if rows is not None else []
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='sub'>{esc(subtitle)} · generated {generated} by qmd-finetune</p>",
        "<nav>" + "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t in links) + "</nav>",
        f"<div class='cards'>{''.join(cards)}</div>",
    ]
    if run_summary is not None:
        body.append(run_section(run_summary, before, stats, run_views))
    body.append(dataset_sections(stats) if stats.get("rows") else "<p>No rows.</p>")
    style = CSS
    if rows is not None:
        body.append(report_browser.section(rows))
        style += report_browser.CSS
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def write_html(text: str, path: str | Path) -> Path:
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def input_stats(frame: pl.DataFrame, stages: list[Any], rubric: str = DEFAULT_RUBRIC) -> dict[str, Any]:
    """Stats of a run's input for the before/after view. When the run categorizes, the input
    is categorized the same way first, so both sides use the run's categories (not whatever
    labels the input carried, such as "uncategorized")."""
    spec = next((s for s in stages if s.name == "categorize"), None)
    if spec is not None and frame.height:
        from qmd_finetune.curate import categorize

        frame = categorize.run(frame, **spec.options).kept
    return compute_stats(frame, examples=0, clusters=0, rubric=rubric)


def run_views(run: RunLike) -> dict[str, Any]:
    """Per-input-file survival and example rejects per reason, from the output and the ledger."""
    kept = _by_source(run.after, "_source")
    rejected = _by_source(run.ledger, "source")
    survival = [
        (Path(f["path"]).name, f["rows"], kept.get(f["path"], 0), rejected.get(f["path"], 0))
        for f in run.inputs
    ]
    examples: dict[str, dict[str, Any]] = {}
    if run.ledger.height:
        ledger = run.ledger.with_columns(
            (pl.col("stage") + ": " + pl.col("reason").map_elements(reason_kind, return_dtype=pl.Utf8)).alias(
                "_kind"
            )
        )
        counts = ledger.group_by("_kind").len().sort(["len", "_kind"], descending=[True, False])
        for kind, n in counts.iter_rows():
            rows = ledger.filter(pl.col("_kind") == kind).head(REJECT_EXAMPLES)
            examples[kind] = {
                "count": n,
                "examples": [_reject_example(r) for r in rows.iter_rows(named=True)],
            }
    return {"survival": survival, "reject_examples": examples}


def _by_source(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if frame.height == 0 or column not in frame.columns:
        return {}
    return dict(frame.group_by(column).len().iter_rows())


def _reject_example(row: dict[str, Any]) -> dict[str, Any]:
    query, detail = "", ""
    try:
        record = json.loads(row["raw"]) if row.get("raw") else {}
        query = str(record.get("query") or "") if isinstance(record, dict) else ""
    except (ValueError, RecursionError):  # a ledger row's raw text is any line
        detail = (row.get("raw") or "")[:160]
    if row["reason"] != reason_kind(row["reason"]):
        detail = row["reason"] if not detail else f"{row['reason']}: {detail}"
    where = f"{row['source']}:{row['line']}" if row.get("line") is not None else str(row["source"])
    return {"query": query, "source": where, "detail": detail}


def write_run_report(run: RunLike, path: str | Path, targets: str | Path | None = None) -> Path:
    """The report of a pipeline run: its output's stats with before/after against its input,
    and the row browser over the output and the ledger.

    Categories are compared with the targets the balance stage resolved when it ran, else
    with ``targets`` (a YAML path)."""
    balance = run.stage("balance")
    resolved = balance.report.get("targets") if balance is not None else None
    before = run.before_stats
    after = compute_stats(run.after, targets=resolved or targets)
    views = run_views(run)
    if before and before.get("score", {}).get("histogram") and "score" in run.after.columns:
        # The before/after panel needs both on the same bins: the input's (the wider range).
        histogram = before["score"]["histogram"]
        edges = [b[0] for b in histogram] + [histogram[-1][1]]
        scores = run.after.get_column("score").drop_nulls().to_numpy()
        views["score_on_input_bins"] = distribution(scores, bins=edges)["histogram"]
    names = [Path(f["path"]).name for f in run.inputs]
    inputs = ", ".join(names) if len(names) <= 3 else f"{len(names)} files ({', '.join(names[:2])}, ...)"
    subtitle = f"{run.command}: {inputs} → {run.outputs.get('output') or '(no output)'}"
    text = render_html(
        after,
        "Curation report",
        subtitle,
        run.summary(),
        before,
        run_views=views,
        rows=report_browser.payload(run.after, run.ledger),
    )
    return write_html(text, path)


def analyze_files(
    paths: list[Path],
    targets: str | Path | None = None,
    examples: int = 3,
    html: str | Path | None = None,
    json_path: str | Path | None = None,
    rejects: str | Path | None = None,
    rubric: str = DEFAULT_RUBRIC,
) -> dict[str, Any]:
    """Read files (curation columns included), compute stats (rows without a score are
    scored with ``rubric``), write the JSON and HTML reports (and the invalid rows to ``rejects``)."""
    read = read_frame(paths)
    frame = read.frame
    if "score" not in frame.columns and frame.height:
        from qmd_finetune.curate.stage import set_meta
        from qmd_finetune.reward import score_frame

        frame = set_meta(score_frame(frame, rubric=rubric), "score_rubric", rubric)
    stats = compute_stats(frame, targets=targets, examples=examples)
    stats["inputs"] = [f.to_dict() for f in read.files]
    stats["invalid_rows"] = read.rejects.height
    with output_group():  # the ledger, JSON and HTML land together or not at all
        if rejects is not None:
            write_rejects(read.rejects, rejects)
        if json_path is not None:
            with atomic_write(json_path) as handle:
                json.dump(stats, handle, indent=2, default=str)
                handle.write("\n")
        if html is not None:
            names = ", ".join(Path(p).name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
            rows = report_browser.payload(frame, read.rejects)
            write_html(render_html(stats, "Dataset report", f"curate analyze: {names}", rows=rows), html)
    return stats
