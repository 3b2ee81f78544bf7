"""Categorize speed: the embedding method against the keyword method, measured in one run.

Reads the qmd reference records, normalizes them and categorizes every row with
``recategorize=True`` (so every row needs a category), first by keywords, then by meaning.
The model and the seed embeddings are loaded before the clock starts ("after the model
loads"); the load time is printed on its own. Distinct queries are what the encoder sees
(identical queries are classified once), so both the row rate and the distinct-query rate
are printed, plus the bare encoder rate on the same distinct queries.

Timings depend on the machine's load: the 1-, 5- and 15-minute load averages are printed
with the figures, and the embedding/keyword ratio is the number to compare across runs.
The embedding run's CPU seconds (all threads) are printed too: distinct queries per
CPU-second times the core count bounds what an idle machine would reach.

Usage: ``python bench/categorize_speed.py [--data DIR] [--rows N]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl

from qmd_finetune.curate import categorize, normalize
from qmd_finetune.curate.encoder import load_encoder
from qmd_finetune.io import read_records

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"


CPU_SECONDS: list[float] = []


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """Wall seconds of one call (its CPU seconds, all threads, go to ``CPU_SECONDS``)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    CPU_SECONDS.append(time.process_time() - cpu)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of *.jsonl records")
    parser.add_argument("--rows", type=int, default=0, help="use only the first N rows (0: all)")
    args = parser.parse_args(argv)
    files = sorted(args.data.glob("*.jsonl"))
    if not files:
        print(f"error: no *.jsonl files in {args.data}", file=sys.stderr)
        return 2
    frame = normalize.run(read_records(files).frame).kept
    if args.rows:
        frame = frame.head(args.rows)
    base = frame["query"].str.replace(r"(?i)\s+/only:(lex|vec|hyde)\s*$", "").str.strip_chars()
    distinct = base.unique().to_list()

    load_s, _ = timed(lambda: categorize.classifier("embedding"))
    keyword_s, _ = timed(categorize.run, frame, recategorize=True, method="keywords")
    embedding_s, result = timed(categorize.run, frame, recategorize=True, method="embedding")
    encode_s, _ = timed(load_encoder().encode, distinct)

    rows, unique = frame.height, len(distinct)
    print(f"rows {rows:,}, distinct queries {unique:,} ({len(files)} files)")
    print(f"model + seed embeddings load: {load_s:.2f} s (once per process)")
    print(
        f"keywords : {keyword_s:7.2f} s  {rows / keyword_s:10,.0f} rows/s  {unique / keyword_s:10,.0f} queries/s"
    )
    print(
        f"embedding: {embedding_s:7.2f} s  {rows / embedding_s:10,.0f} rows/s  "
        f"{unique / embedding_s:10,.0f} queries/s"
    )
    print(f"encoder only: {unique / encode_s:,.0f} queries/s")
    embedding_cpu = CPU_SECONDS[2]
    print(
        f"embedding CPU time: {embedding_cpu:.2f} s = {unique / embedding_cpu:,.0f} distinct queries per CPU-second "
        f"(what {os.cpu_count()} idle cores would give at most: {os.cpu_count() * unique / embedding_cpu:,.0f}/s)"
    )
    print(f"ratio embedding/keywords time: {embedding_s / keyword_s:.1f}x")
    print(f"tie-breaks by keyword: {result.counts['keyword_tiebreaks']:,}")
    load = os.getloadavg()
    print(f"load average (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    categories = result.kept.group_by("category").len().sort("len", descending=True)
    print("categories: " + ", ".join(f"{c} {n}" for c, n in categories.iter_rows()))
    return 0


if __name__ == "__main__":
    pl.Config.set_tbl_rows(50)
    raise SystemExit(main())
