from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from _curate_fixtures import frame, good

from qmd_finetune.curate import split
from qmd_finetune.io import read_records


def rows(n: int, category: str, groups: list[str] | None = None) -> pl.DataFrame:
    data = frame([good(f"{category} query {i}", category) for i in range(n)])
    if groups is not None:
        data = data.with_columns(pl.Series("dup_group", groups, dtype=pl.Utf8))
    return data


def test_split_is_seeded_and_close_to_the_fractions() -> None:
    data = rows(1000, "technology")
    first = split.run(data, seed=3)
    assert first.rejected.height == 0 and first.kept.height == 1000
    counts = first.counts
    assert counts["train"] == pytest.approx(800, abs=2)
    assert counts["val"] == pytest.approx(100, abs=2)
    assert (
        first.kept.get_column("split").to_list() == split.run(data, seed=3).kept.get_column("split").to_list()
    )
    assert (
        first.kept.get_column("split").to_list() != split.run(data, seed=4).kept.get_column("split").to_list()
    )


def test_split_is_stratified_by_category() -> None:
    data = pl.concat([rows(500, "technology"), rows(100, "history")])
    result = split.run(data, fractions="0.6,0.2,0.2", seed=0)
    by_category = result.report["by_category"]
    assert by_category["technology"] == {"train": 300, "val": 100, "test": 100}
    assert by_category["history"] == {"train": 60, "val": 20, "test": 20}


def test_duplicate_groups_never_straddle_splits() -> None:
    groups = [f"g{i // 4}" for i in range(400)]  # clusters of 4 near-duplicates
    data = rows(400, "technology", groups)
    result = split.run(data, seed=0)
    assert result.report["groups_straddling"] == 0
    per_group = result.kept.group_by("dup_group").agg(pl.col("split").n_unique().alias("n"))
    assert per_group.get_column("n").max() == 1
    assert result.report["groups"] == 100


def test_rows_without_group_are_their_own_group() -> None:
    data = rows(10, "technology", [None] * 10)
    assert split.run(data).report["groups"] == 10


def test_fraction_spellings() -> None:
    assert split.parse_fractions("80/10/10") == pytest.approx((0.8, 0.1, 0.1))
    assert split.parse_fractions([8, 1, 1]) == pytest.approx((0.8, 0.1, 0.1))
    assert split.parse_fractions({"train": 0.9, "test": 0.1}) == pytest.approx((0.9, 0.0, 0.1))
    with pytest.raises(ValueError):
        split.parse_fractions("0.8,0.2")


def test_split_writes_one_file_per_split(tmp_path: Path) -> None:
    result = split.run(rows(50, "technology"), output_dir=tmp_path / "splits")
    total = 0
    for name in split.SPLITS:
        read = read_records([tmp_path / "splits" / f"{name}.jsonl"])
        assert read.rejects.height == 0
        total += read.frame.height
    assert total == 50
    assert set(result.report["files"]) == set(split.SPLITS)
