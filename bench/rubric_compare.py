"""Rubric v1 against v2 on the qmd reference data: per file, how many rows change score and
rating, the mean under each rubric, and the share scoring >= 70 (the usual keep threshold).

Rows are read as ``curate score`` reads them: legacy ``q only: lex`` queries are modernized
first. Prints a Markdown table (the one in docs/reward.md).

Usage: ``python bench/rubric_compare.py [--data DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from qmd_finetune.curate.normalize import modernize_only_mode
from qmd_finetune.io import read_records
from qmd_finetune.reward import score_frame

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"


def compare(frame: pl.DataFrame) -> pl.DataFrame:
    """Per source file and in total: rows, changed score/rating, means and share >= 70 under both rubrics."""
    frame, _ = modernize_only_mode(frame)
    v1 = score_frame(frame, workers=1, rubric="v1").select("_source", "score", "rating")
    v2 = score_frame(frame, workers=1, rubric="v2").select("score", "rating")
    both = pl.concat(
        [v1.rename({"score": "v1", "rating": "r1"}), v2.rename({"score": "v2", "rating": "r2"})],
        how="horizontal",
    ).with_columns(pl.col("_source").str.split("/").list.last().alias("file"))
    aggregates = [
        pl.len().alias("rows"),
        (pl.col("v1") != pl.col("v2")).sum().alias("score changed"),
        (pl.col("r1") != pl.col("r2")).sum().alias("rating changed"),
        pl.col("v1").mean().round(1).alias("mean v1"),
        pl.col("v2").mean().round(1).alias("mean v2"),
        ((pl.col("v1") >= 70).mean() * 100).round(1).alias(">= 70 v1 (%)"),
        ((pl.col("v2") >= 70).mean() * 100).round(1).alias(">= 70 v2 (%)"),
    ]
    per_file = both.group_by("file").agg(aggregates).sort("file")
    total = both.select(pl.lit("all files").alias("file"), *aggregates)
    return pl.concat([per_file, total], how="vertical_relaxed")


def markdown(table: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|---" + "|---:" * (table.width - 1) + "|"]
    for row in table.iter_rows():
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    files = sorted(args.data.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no .jsonl files in {args.data}")
    print(markdown(compare(read_records(files).frame)))


if __name__ == "__main__":
    main()
