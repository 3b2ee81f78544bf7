"""Categorize speed: keywords, fast (static vectors), cascade and embedding (full model), measured in one run.

Reads the qmd reference records plus the evaluation set's queries, normalizes them and
categorizes every row with ``recategorize=True`` (so every row needs a category) with each
method; ratios are printed against keywords and against the full model of the same run.
The model and the seed embeddings are loaded before the clock starts ("after the model
loads"); the load time is printed on its own. Distinct queries are what the encoder sees
(identical queries are classified once), so both the row rate and the distinct-query rate
are printed, plus the bare encoder rate on the same distinct queries.

Timings depend on the machine's load: the 1-, 5- and 15-minute load averages are printed
with the figures, and the embedding/keyword ratio is the number to compare across runs.
The embedding run's CPU seconds (all threads) are printed too: distinct queries per
CPU-second times the core count bounds what an idle machine would reach.

First-run figures encode every query (``query_cache=False``); ``--warm`` adds cascade and
embedding re-runs that read the full model's vectors from the on-disk query cache.

Usage: ``python bench/categorize_speed.py [--data DIR] [--eval TSV] [--rows N] [--warm] [--threads N]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl
import torch

from qmd_finetune.curate import categorize, normalize
from qmd_finetune.io import read_records

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"
DEFAULT_EVAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "category_eval.tsv"


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
    parser.add_argument(
        "--eval", type=Path, default=DEFAULT_EVAL, help="labelled TSV whose queries are added to the rows"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="also time cascade and embedding with the on-disk query cache filled",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--rows", type=int, default=0, help="use only the first N rows (0: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted(args.data.glob("*.jsonl"))
    if not files:
        print(f"error: no *.jsonl files in {args.data}", file=sys.stderr)
        return 2
    frame = normalize.run(read_records(files).frame).kept
    if args.rows:
        frame = frame.head(args.rows)
    if args.eval is not None:
        from qmd_finetune.curate.category_eval import read_labelled

        labelled = pl.DataFrame({"query": [q for q, _ in read_labelled(args.eval)]})
        labelled = labelled.with_columns(pl.lit([], pl.List(pl.List(pl.Utf8))).alias("output"))
        frame = pl.concat([frame, labelled], how="diagonal_relaxed")
    base = frame["query"].str.replace(r"(?i)\s+/only:(lex|vec|hyde)\s*$", "").str.strip_chars()
    distinct = base.unique().to_list()

    from qmd_finetune.curate.static_encoder import load_static_encoder

    load_s, _ = timed(lambda: [categorize.classifier(m) for m in ("embedding", "cascade")])
    static_s, _ = timed(load_static_encoder)
    rows, unique = frame.height, len(distinct)
    print(f"rows {rows:,}, distinct queries {unique:,} ({len(files)} files)")
    print(f"model, static table and seed embeddings load: {load_s + static_s:.2f} s (once per process)")
    results = {}
    for method in ("keywords", "fast", "cascade", "embedding"):
        wall, result = timed(categorize.run, frame, recategorize=True, method=method, query_cache=False)
        results[method] = (wall, CPU_SECONDS[-1], result)
    if args.warm:
        categorize.run(frame, recategorize=True, method="embedding")  # fills the query cache (untimed)
        for method in ("cascade", "embedding"):
            wall, result = timed(categorize.run, frame, recategorize=True, method=method)
            results[f"{method}, warm query cache"] = (wall, CPU_SECONDS[-1], result)
    print(
        "| method | wall s | distinct queries/s | CPU s | distinct queries per CPU-second | full-model share |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for method, (wall, cpu, result) in results.items():
        fast = result.counts.get("by_static_vectors", 0)
        share = "-" if method == "keywords" else f"{1 - fast / rows:.2f}"
        print(f"| {method} | {wall:.2f} | {unique / wall:,.0f} | {cpu:.2f} | {unique / cpu:,.0f} | {share} |")
    for method in [m for m in results if m != "keywords"]:
        wall, cpu, _ = results[method]
        print(
            f"{method}: time x{wall / results['keywords'][0]:.1f} of keywords (CPU x{cpu / results['keywords'][1]:.1f}), "
            f"x{wall / results['embedding'][0]:.2f} of the full model (CPU x{cpu / results['embedding'][1]:.2f})"
        )
    encode_s, _ = timed(load_static_encoder().encode, distinct)
    print(
        f"static encoder alone: {unique / encode_s:,.0f} queries/s ({unique / CPU_SECONDS[-1]:,.0f} per CPU-second)"
    )
    result = results["embedding"][2]
    print(f"tie-breaks by keyword (embedding): {result.counts['keyword_tiebreaks']:,}")
    load = os.getloadavg()
    print(
        f"torch threads {torch.get_num_threads()}; load average (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    categories = result.kept.group_by("category").len().sort("len", descending=True)
    print("categories: " + ", ".join(f"{c} {n}" for c, n in categories.iter_rows()))
    return 0


if __name__ == "__main__":
    pl.Config.set_tbl_rows(50)
    raise SystemExit(main())
