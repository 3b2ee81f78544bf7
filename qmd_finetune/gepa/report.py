"""The before/after report on the validation set: mean score, rating counts, per-query deltas."""

from __future__ import annotations

from collections import Counter
from typing import Any

from qmd_finetune.gepa.metric import Judgement

RATING_ORDER = ("Excellent", "Good", "Acceptable", "Poor", "Failed")


def summary(judged: list[Judgement]) -> dict[str, Any]:
    counts = Counter(j.score.rating for j in judged)
    scores = [j.percentage for j in judged]
    return {
        "mean": round(sum(scores) / len(scores), 2) if scores else 0.0,
        "ratings": {rating: counts.get(rating, 0) for rating in RATING_ORDER},
        "parsed": sum(1 for j in judged if j.items),
        "n": len(judged),
    }


def build_report(before: list[Judgement], after: list[Judgement], meta: dict[str, Any]) -> dict[str, Any]:
    per_query = [
        {
            "query": b.query,
            "before": b.percentage,
            "after": a.percentage,
            "delta": round(a.percentage - b.percentage, 1),
            "before_rating": b.score.rating,
            "after_rating": a.score.rating,
            "after_output": a.text,
        }
        for b, a in zip(before, after, strict=True)
    ]
    b, a = summary(before), summary(after)
    return {
        **meta,
        "before": b,
        "after": a,
        "delta_mean": round(a["mean"] - b["mean"], 2),
        "improved": sum(1 for row in per_query if row["delta"] > 0),
        "worsened": sum(1 for row in per_query if row["delta"] < 0),
        "per_query": per_query,
    }


def print_report(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"validation set: {report['val_queries']} queries (before = seed prompt, after = best)"
    )
    table.add_column("query", overflow="fold")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("delta", justify="right")
    for row in report["per_query"]:
        delta = row["delta"]
        style = "green" if delta > 0 else "red" if delta < 0 else ""
        table.add_row(
            row["query"],
            f"{row['before']:.1f} {row['before_rating']}",
            f"{row['after']:.1f} {row['after_rating']}",
            f"[{style}]{delta:+.1f}[/{style}]" if style else f"{delta:+.1f}",
        )
    console.print(table)
    ratings = Table(title="ratings")
    ratings.add_column("")
    for rating in RATING_ORDER:
        ratings.add_column(rating, justify="right")
    ratings.add_column("mean", justify="right")
    for label in ("before", "after"):
        part = report[label]
        ratings.add_row(label, *(str(part["ratings"][r]) for r in RATING_ORDER), f"{part['mean']:.1f}")
    console.print(ratings)
    console.print(
        f"mean {report['before']['mean']:.1f} -> {report['after']['mean']:.1f} ({report['delta_mean']:+.1f}); "
        f"{report['improved']} improved, {report['worsened']} worsened; "
        f"{report['candidates']} candidates, best #{report['best_idx']}, {report['metric_calls']} metric calls, "
        f"{report['duration_s']:.0f}s; reflection: {report['reflection']}; rubric: {report.get('rubric', 'v1')}"
    )
