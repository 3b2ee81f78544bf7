"""Split stage: assign train / val / test, seeded, stratified by category, group-aware.

Rows sharing a ``dup_group`` (a near-duplicate cluster from dedup) always land in the same
split, so a paraphrase of a test query never trains the model. Within each category the
groups are shuffled with the seed and cut by cumulative row count at the requested
fractions, which keeps every category's split shares close to the fractions. Nothing is
rejected; the stage adds a ``split`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qmd_finetune.curate.stage import StageResult, empty_rejected

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def parse_fractions(
    value: str | tuple[float, ...] | list[float] | dict[str, float] | None,
) -> tuple[float, float, float]:
    """Accept ``"0.8,0.1,0.1"``, ``"80/10/10"``, a sequence or ``{"train":..,"val":..,"test":..}``."""
    if value is None:
        return DEFAULT_FRACTIONS
    if isinstance(value, dict):
        numbers = [float(value.get(name, 0.0)) for name in SPLITS]
    elif isinstance(value, str):
        numbers = [float(part) for part in value.replace("/", ",").split(",") if part.strip()]
    else:
        numbers = [float(v) for v in value]
    if len(numbers) != 3 or any(n < 0 for n in numbers) or sum(numbers) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {value!r}")
    total = sum(numbers)
    return numbers[0] / total, numbers[1] / total, numbers[2] / total


def run(
    frame: pl.DataFrame,
    fractions: str | tuple[float, ...] | list[float] | dict[str, float] | None = None,
    seed: int = 0,
    group_column: str = "dup_group",
    stratify: str | None = "category",
    output_dir: str | Path | None = None,
) -> StageResult:
    """Add ``split``; with ``output_dir`` also write ``train``/``val``/``test`` JSONL files there."""
    train, val, _ = parse_fractions(fractions)
    work = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_split_row"))
    group = (
        pl.col(group_column).cast(pl.Utf8).fill_null(pl.format("row-{}", pl.col("_split_row")))
        if group_column in frame.columns
        else pl.format("row-{}", pl.col("_split_row"))
    )
    stratum = (
        pl.col(stratify).cast(pl.Utf8).fill_null("") if stratify and stratify in frame.columns else pl.lit("")
    )
    work = work.with_columns(group.alias("_split_group"), stratum.alias("_split_stratum"))

    # A group belongs to the stratum of its first row; groups are shuffled with the seed.
    groups = (
        work.group_by("_split_group", maintain_order=True)
        .agg(pl.col("_split_stratum").first(), pl.len().alias("_size"))
        .sort("_split_group")
    )
    rng = np.random.default_rng(seed)
    groups = groups.with_columns(pl.Series("_order", rng.permutation(groups.height), dtype=pl.Int64))
    groups = groups.sort(["_split_stratum", "_order"]).with_columns(
        (pl.col("_size").cum_sum().over("_split_stratum") - pl.col("_size")).alias("_before"),
        pl.col("_size").sum().over("_split_stratum").alias("_stratum_rows"),
    )
    # Cut at the midpoint of each group, so a big group goes where most of it falls.
    position = (pl.col("_before") + pl.col("_size") / 2) / pl.col("_stratum_rows")
    groups = groups.with_columns(
        pl.when(position < train)
        .then(pl.lit("train"))
        .when(position < train + val)
        .then(pl.lit("val"))
        .otherwise(pl.lit("test"))
        .alias("split")
    )
    assigned = (
        work.drop("split", strict=False)
        .join(groups.select("_split_group", "split"), on="_split_group", how="left")
        .sort("_split_row")
        .drop("_split_row", "_split_group", "_split_stratum")
    )
    counts = {name: int((assigned.get_column("split") == name).sum()) for name in SPLITS}
    report: dict[str, Any] = {
        "fractions": dict(zip(SPLITS, (train, val, 1 - train - val))),
        "seed": seed,
        "rows": counts,
        "groups": groups.height,
        "by_category": _by_category(assigned, stratify),
        "groups_straddling": straddling_groups(assigned, group_column),
    }
    if output_dir is not None:
        report["files"] = write_splits(assigned, output_dir)
    return StageResult(kept=assigned, rejected=empty_rejected(assigned), counts=counts, report=report)


def _by_category(frame: pl.DataFrame, stratify: str | None) -> dict[str, dict[str, int]]:
    if not stratify or stratify not in frame.columns or frame.height == 0:
        return {}
    table = frame.group_by(pl.col(stratify).fill_null(""), "split").len()
    out: dict[str, dict[str, int]] = {}
    for cat, split, n in table.iter_rows():
        out.setdefault(cat, dict.fromkeys(SPLITS, 0))[split] = n
    return dict(sorted(out.items()))


def straddling_groups(frame: pl.DataFrame, group_column: str = "dup_group") -> int:
    """How many duplicate groups have rows in more than one split (should be 0)."""
    if group_column not in frame.columns or "split" not in frame.columns or frame.height == 0:
        return 0
    per_group = (
        frame.filter(pl.col(group_column).is_not_null())
        .group_by(group_column)
        .agg(pl.col("split").n_unique())
    )
    return int((per_group.get_column("split") > 1).sum())


def write_splits(frame: pl.DataFrame, output_dir: str | Path, suffix: str = ".jsonl") -> dict[str, str]:
    from qmd_finetune.io import write_records

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in SPLITS:
        path = directory / f"{name}{suffix}"
        write_records(frame.filter(pl.col("split") == name), path)
        files[name] = str(path)
    return files
