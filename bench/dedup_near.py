"""Dedup stage time: the ordered near rule against the jaccard rule, in one process.

The input is ``bench/curate_pipeline.py``'s perturbed reference data (case/spacing copies,
near-duplicate edits, new distinct queries, conflicting outputs, bad lines), validated and
normalized once; then ``dedup.run`` (items + exact + near) runs ``--repeat`` times per
method, alternating, and the best time of each is printed with the ratio ordered/jaccard.
The machine may be shared: the load average before and after is printed; compare the
ratio, not the seconds.

    python bench/dedup_near.py [--rows 100000] [--repeat 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402
from curate_pipeline import make_dataset  # noqa: E402

from qmd_finetune.curate import dedup, normalize  # noqa: E402
from qmd_finetune.io import read_frame  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dedup-near-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / f"bench_{args.rows}.jsonl"
    if not source.exists():
        make_dataset(source, args.rows)
    # a constant score column: conflicts are settled without the reward, as after the score stage
    frame = normalize.run(read_frame([source]).frame).kept.with_columns(pl.lit(50.0).alias("score"))
    print(f"rows {frame.height:,}; load average before {os.getloadavg()}")
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for method in ("jaccard", "ordered"):
            started = time.perf_counter()
            result = dedup.run(frame, near_method=method, workers=1)
            seconds = time.perf_counter() - started
            best[method] = min(seconds, best.get(method, seconds))
            print(
                f"{method:8} {seconds:6.2f} s  kept {result.kept.height:,}  "
                f"near rejected {result.counts['rejected_near']:,}",
                flush=True,
            )
    print(
        f"best: jaccard {best['jaccard']:.2f} s, ordered {best['ordered']:.2f} s, ratio {best['ordered'] / best['jaccard']:.2f}"
    )
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
