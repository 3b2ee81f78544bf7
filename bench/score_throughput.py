"""Score throughput: the batch path (``reward.score_frame``) against a plain per-row loop of ``score()``.

The qmd reference records are replicated to ``--rows`` rows (default 1,000,000) and scored
both ways in this process. The per-row baseline renders each record's items and calls
``score()`` one row at a time (the column conversion out of the frame is timed too, as
for the batch path); to keep the run short it is timed on the first ``--sample``
rows (default 100,000) and reported as rows/s. The batch scores of those sample rows must
equal the per-row scores (score, rating and deductions).

Two workloads are measured:

* ``replicated``: the reference rows repeated. The batch path scores each distinct
  (query, text) pair once (duplicates still pay for conversion and rendering).
* ``unique``: the same rows with a row number inserted into every query, so no two rows are
  identical and only the 2-process pool can help. The number goes before any ``/only:``
  suffix and after a lone ``;`` (a word that strips to nothing, which resets the entity
  chain), so only-mode rows stay only-mode and the number never becomes an entity. Scores can
  differ from the originals (for example an echo of the longer query is no longer an echo);
  both paths score the same rows.

Usage: ``python bench/score_throughput.py [--data DIR] [--rows N] [--sample N] [--workers W]``
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import polars as pl

from qmd_finetune.io import read_records
from qmd_finetune.records import only_mode, render, with_only
from qmd_finetune.reward import score, score_frame

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"


def replicate(frame: pl.DataFrame, rows: int) -> pl.DataFrame:
    """The frame's rows repeated in order until there are ``rows`` of them."""
    copies = -(-rows // frame.height)
    return pl.concat([frame] * copies, how="vertical").head(rows)


def make_unique(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy where every query carries its row number, so no (query, text) pair repeats."""
    queries = []
    for i, query in enumerate(frame.get_column("query").to_list()):
        base, kind = only_mode(query)
        unique = f"{base} ; {i}"
        queries.append(with_only(unique, kind) if kind else unique)
    return frame.with_columns(pl.Series("query", queries, dtype=pl.Utf8))


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the batch path's pool workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def per_row(frame: pl.DataFrame) -> tuple[list[tuple[float, str, list[str]]], float, float]:
    """The baseline: take the rows out of the frame, render and score them one at a time.

    Returns the results, the wall seconds and the CPU seconds. Like the batch path it starts
    from the frame, so both pay for converting the columns to Python objects.
    """
    cpu = cpu_seconds()
    start = time.perf_counter()
    queries = frame.get_column("query").to_list()
    outputs = frame.get_column("output").to_list()
    results = []
    for query, output in zip(queries, outputs):
        s = score(query, render(output))
        results.append((s.percentage, s.rating, s.deductions))
    return results, time.perf_counter() - start, cpu_seconds() - cpu


def batch(frame: pl.DataFrame, workers: int) -> tuple[pl.DataFrame, float, float]:
    cpu = cpu_seconds()
    start = time.perf_counter()
    scored = score_frame(frame, workers=workers)
    return scored, time.perf_counter() - start, cpu_seconds() - cpu


def measure(name: str, frame: pl.DataFrame, sample: int, workers: int) -> bool:
    """Time both paths on ``frame``, print one line, and return whether the sample scores agree."""
    scored, batch_seconds, batch_cpu = batch(frame, workers)
    head = frame.head(sample)
    expected, loop_seconds, loop_cpu = per_row(head)
    batch_rate = frame.height / batch_seconds
    loop_rate = head.height / loop_seconds
    got = scored.head(sample)
    identical = (
        got.get_column("score").to_list() == [e[0] for e in expected]
        and got.get_column("rating").to_list() == [e[1] for e in expected]
        and got.get_column("deductions").to_list() == [e[2] for e in expected]
    )
    distinct = frame.select(pl.struct("query", "output").n_unique()).item()
    print(
        f"{name:<10} rows={frame.height:>9,} distinct={distinct:>9,}  "
        f"batch {batch_rate:>10,.0f} rows/s ({batch_seconds:6.2f} s)  "
        f"per-row {loop_rate:>8,.0f} rows/s ({head.height:,} rows, {loop_seconds:5.2f} s)  "
        f"ratio {batch_rate / loop_rate:6.2f}x  "
        f"scores {'identical' if identical else 'DIFFER'} on {head.height:,} rows"
    )
    print(
        f"{'':<10} CPU time (process + pool workers): batch {frame.height / batch_cpu:>10,.0f} rows/cpu-s, "
        f"per-row {head.height / loop_cpu:>8,.0f} rows/cpu-s"
    )
    return identical


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of *.jsonl records")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to score with the batch path")
    parser.add_argument("--sample", type=int, default=100_000, help="rows timed with the per-row loop")
    parser.add_argument("--workers", type=int, default=2, help="processes for the batch path")
    args = parser.parse_args(argv)

    files = sorted(args.data.glob("*.jsonl"))
    if not files:
        print(f"no *.jsonl files in {args.data}", file=sys.stderr)
        return 2
    read = read_records(files)
    base = read.frame.select("query", "output")
    frame = replicate(base, args.rows)
    sample = min(args.sample, frame.height)
    print(
        f"score throughput: {base.height:,} reference records from {len(files)} files in {args.data}, "
        f"replicated to {frame.height:,} rows; batch = score_frame(workers={args.workers}) on all rows, "
        f"per-row = column to_list + render() + score() per row, timed on the first {sample:,} rows "
        "(rows/s); "
        f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )
    ok = measure("replicated", frame, sample, args.workers)
    ok = measure("unique", make_unique(frame), sample, args.workers) and ok
    if not ok:
        print("batch and per-row scores differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
