"""Library side of `curate validate` and `curate score`: read, check, score, summarize."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from qmd_finetune.curate.normalize import modernize_only_mode
from qmd_finetune.curate.stage import set_meta
from qmd_finetune.io import (
    ReadResult,
    default_rejects_path,
    empty_rejects,
    output_group,
    read_records,
    rejects_from_frame,
    write_records,
    write_rejects,
)
from qmd_finetune.locks import hold
from qmd_finetune.reward import DEFAULT_RUBRIC, RATINGS, check_rubric, score_frame

_PAREN_TAIL = re.compile(r"\s*\([^()]*\)$")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
RATING_NAMES = [name for _, name in RATINGS] + ["Failed"]


def validate_files(paths: Sequence[Path], rejects_path: Path | None = None) -> ReadResult:
    if rejects_path is None:
        return read_records(paths, stage="validate")
    with hold(rejects_path, "the ledger"):
        result = read_records(paths, stage="validate")
        write_rejects(result.rejects, rejects_path)
    return result


def print_validation(console: Console, result: ReadResult, show: int) -> None:
    table = Table(title="validate", title_justify="left")
    for column in ("file", "rows", "valid", "invalid", "notes"):
        table.add_column(
            column, justify="right" if column in ("rows", "valid", "invalid") else "left", overflow="fold"
        )
    for f in result.files:
        notes = ", ".join(f"{k}: {v}" for k, v in f.notes.items())
        table.add_row(
            f.path, str(f.rows), str(f.valid), f"[red]{f.invalid}[/red]" if f.invalid else "0", notes
        )
    if len(result.files) > 1:
        table.add_row(
            "[bold]total[/bold]",
            str(result.rows),
            str(result.frame.height),
            str(result.rejects.height),
            "",
        )
    console.print(table)
    if result.rejects.height and show > 0:
        console.print(f"[bold]first {min(show, result.rejects.height)} invalid rows[/bold]")
        for source, line, reason, path in (
            result.rejects.head(show).select("source", "line", "reason", "path").iter_rows()
        ):
            where = f" at {path}" if path and path != "$" else ""
            console.print(f"  {source}:{line}: {reason}{where}", markup=False, highlight=False)


@dataclass
class ScoreResult:
    read: ReadResult
    scored: pl.DataFrame
    kept: pl.DataFrame
    below: pl.DataFrame
    output: Path
    rejects_path: Path
    min_score: float | None
    rubric: str = DEFAULT_RUBRIC
    modernized_only_mode: int = 0


def score_files(
    paths: Sequence[Path],
    output: Path,
    min_score: float | None = None,
    rejects_path: Path | None = None,
    workers: int | None = None,
    rubric: str = DEFAULT_RUBRIC,
    modernize_only: bool = True,
) -> ScoreResult:
    """Score files under ``rubric``; legacy ``q only: lex`` queries are modernized first
    (``modernize_only``), as the pipeline's normalize stage does, so they score as only mode."""
    rubric = check_rubric(rubric)
    with hold(output):
        return _score_files(paths, output, min_score, rejects_path, workers, rubric, modernize_only)


def _score_files(
    paths: Sequence[Path],
    output: Path,
    min_score: float | None,
    rejects_path: Path | None,
    workers: int | None,
    rubric: str,
    modernize_only: bool,
) -> ScoreResult:
    result = read_records(paths, stage="read")
    frame, modernized = modernize_only_mode(result.frame) if modernize_only else (result.frame, 0)
    scored = set_meta(score_frame(frame, workers, rubric), "score_rubric", rubric)
    if min_score is not None:
        below = scored.filter(pl.col("score") < min_score).with_columns(
            pl.format("score {} < min-score {}", pl.col("score"), pl.lit(min_score)).alias("_reason")
        )
        kept = scored.filter(pl.col("score") >= min_score)
    else:
        below, kept = scored.head(0).with_columns(pl.lit(None, pl.Utf8).alias("_reason")), scored
    rejects_path = rejects_path or default_rejects_path(output)
    ledger = pl.concat(
        [result.rejects, rejects_from_frame(below, "score") if below.height else empty_rejects()]
    )
    with output_group():
        write_records(kept, output)
        write_rejects(ledger, rejects_path)
    return ScoreResult(result, scored, kept, below, output, rejects_path, min_score, rubric, modernized)


def score_stats(scored: pl.DataFrame, top: int = 10, rubric: str = DEFAULT_RUBRIC) -> dict[str, Any]:
    """Summary numbers of a scored frame (also used by reports), naming the rubric that scored it."""
    if scored.height == 0:
        return {"rows": 0, "rubric": rubric}
    scores = scored.get_column("score")
    ratings = Counter(scored.get_column("rating").to_list())
    deductions: Counter[str] = Counter()
    for items in scored.get_column("deductions").to_list():
        deductions.update(deduction_kind(d) for d in items or [])
    return {
        "rows": scored.height,
        "rubric": rubric,
        "mean": round(float(scores.mean()), 2),
        "median": round(float(scores.median()), 2),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "share_ge_70": round(float((scores >= 70).mean()), 4),
        "ratings": {name: ratings.get(name, 0) for name in RATING_NAMES},
        "top_deductions": deductions.most_common(top),
    }


def deduction_kind(deduction: str) -> str:
    """Group deductions that differ only in detail: "lex echoes query: x" -> "lex echoes query",
    "hyde too long (214)" -> "hyde too long", numbers -> "N" ("2 lex pair(s) too similar" -> "N lex pair(s) too similar")."""
    head = deduction.split(": ", 1)[0]
    head = _PAREN_TAIL.sub("", head)
    return _NUMBER.sub("N", head)


def print_score_summary(console: Console, result: ScoreResult) -> None:
    stats = score_stats(result.scored, rubric=result.rubric)
    if stats["rows"] == 0:
        console.print("[yellow]no valid rows to score[/yellow]")
    else:
        table = Table(title=f"score (rubric {result.rubric})", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_row("rubric", result.rubric)
        table.add_row("rows scored", str(stats["rows"]))
        if result.modernized_only_mode:
            table.add_row("modernized only-mode spelling", str(result.modernized_only_mode))
        for key in ("mean", "median", "min", "max"):
            table.add_row(key, f"{stats[key]:.1f}")
        table.add_row("share >= 70", f"{stats['share_ge_70'] * 100:.1f}%")
        for name, count in stats["ratings"].items():
            table.add_row(f"rating {name}", str(count))
        console.print(table)
        if len(result.read.files) > 1:
            per_file = Table(title="per file", title_justify="left")
            for column in ("file", "rows", "mean", "share >= 70"):
                per_file.add_column(column, justify="left" if column == "file" else "right", overflow="fold")
            grouped = result.scored.group_by("_source", maintain_order=True).agg(
                pl.len().alias("rows"),
                pl.col("score").mean().alias("mean"),
                (pl.col("score") >= 70).mean().alias("share"),
            )
            for source, rows, mean, share in grouped.iter_rows():
                per_file.add_row(source, str(rows), f"{mean:.1f}", f"{share * 100:.1f}%")
            console.print(per_file)
        deductions = Table(title="most common deductions", title_justify="left")
        deductions.add_column("deduction")
        deductions.add_column("rows", justify="right")
        for reason, count in stats["top_deductions"]:
            deductions.add_row(reason, str(count))
        console.print(deductions)
    rows_in = result.read.rows
    kept, rejected = result.kept.height, result.read.rejects.height + result.below.height
    console.print(
        f"rows in {rows_in} = kept {kept} + rejected {rejected} "
        f"(invalid {result.read.rejects.height}, under min-score {result.below.height})"
    )
    console.print(f"wrote {result.output}  ledger {result.rejects_path}")
    if rows_in != kept + rejected:
        raise AssertionError(f"row accounting broken: {rows_in} != {kept} + {rejected}")


# ---------------------------------------------------------------- run summaries

_ROW_REFERENCE = re.compile(r" of \S+:\d+$")
_DETAIL_TAIL = re.compile(r"\s*\([^()]*\d[^()]*\)$")


def reason_kind(reason: str) -> str:
    """Summaries group reasons that name a row: "duplicate of a.jsonl:12" -> "duplicate of <row>"."""
    return _DETAIL_TAIL.sub("", _ROW_REFERENCE.sub(" of <row>", reason))


def group_reasons(by_reason: dict[str, int]) -> dict[str, int]:
    grouped: dict[str, int] = {}
    for reason, n in by_reason.items():
        key = reason_kind(reason)
        grouped[key] = grouped.get(key, 0) + n
    return dict(sorted(grouped.items(), key=lambda item: -item[1]))


def reasons_table(run: Any) -> list[tuple[str, int, int, int, str, str]]:
    """Rows of the per-stage table: (stage, in, kept, rejected, top reasons, what else it did)."""
    rows = []
    for stage in run.stages:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in list(stage.rejected_by_reason.items())[:4])
        more = len(stage.rejected_by_reason) - 4
        if more > 0:
            reasons += f", ... ({more} more)"
        did = [(k, v) for k, v in stage.counts.items() if isinstance(v, (int, float)) and v]
        done = ", ".join(f"{k}: {v:g}" for k, v in did[:4]) + (
            f", ... ({len(did) - 4} more)" if len(did) > 4 else ""
        )
        rows.append((stage.name, stage.rows_in, stage.kept, stage.rejected, reasons, done))
    return rows


def print_run(console: Console, run: Any) -> None:
    """The per-stage table every run ends with, and the rows-in check."""
    table = Table(title=f"{run.command}: per stage", title_justify="left")
    for column in ("stage", "in", "kept", "rejected", "rejected by reason", "did"):
        table.add_column(column, justify="right" if column in ("in", "kept", "rejected") else "left")
    for name, rows_in, kept, rejected, reasons, did in reasons_table(run):
        rejected_text = f"[red]{rejected:,}[/red]" if rejected else "0"
        table.add_row(name, f"{rows_in:,}", f"{kept:,}", rejected_text, reasons, did, end_section=False)
    console.print(table)
    mark = "[green]ok[/green]" if run.balanced else "[red]MISMATCH[/red]"
    console.print(f"rows in {run.rows_in:,} = kept {run.kept:,} + rejected {run.rejected:,}  {mark}")
    for name, path in run.outputs.items():
        if path:
            console.print(f"  {name}: {path}", highlight=False)
