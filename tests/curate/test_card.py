from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml
from _curate_fixtures import echo, good, write_jsonl

from qmd_finetune.curate.card import build_card, size_category, write_card
from qmd_finetune.curate.pipeline import PipelineConfig, StageSpec, run_pipeline
from qmd_finetune.io import read_frame


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_has_front_matter_stats_and_sha(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "data.jsonl", [good("tide tables", "travel_geography"), echo("auth config")]
    )
    text = build_card(data, name="demo set")
    meta = front_matter(text)
    assert meta["pretty_name"] == "demo set" and meta["license"] == "unknown"
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data.jsonl"}]
    assert [(s["name"], s["num_examples"]) for s in meta["dataset_info"]["splits"]] == [("train", 2)]
    assert "| rows | 2 |" in text and "travel_geography" in text
    assert "SHA-256" in text and "No run summary" in text


def test_card_reads_the_run_summary_beside_the_output(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good("tide tables"), echo("auth config"), "not json"])
    out = tmp_path / "curated.jsonl"
    run_pipeline(PipelineConfig([source], out, [StageSpec("score", {"min_score": 60})]))
    path = write_card(out, tmp_path / "README.md")
    text = path.read_text()
    assert "| score | 2 | 1 | 1 | score below 60: 1 |" in text
    assert "Rows in 3 = kept 1 + rejected 2" in text
    assert "| in.jsonl | 3 | 2 | 1 |" in text


def test_card_lists_split_files(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"query {i}") for i in range(20)])
    out = tmp_path / "curated.jsonl"
    run_pipeline(
        PipelineConfig([source], out, [StageSpec("split", {"output_dir": str(tmp_path / "splits")})])
    )
    meta = front_matter(build_card(out, splits_dir=tmp_path / "splits"))
    files = meta["configs"][0]["data_files"]
    assert [f["split"] for f in files] == ["train", "val", "test"]
    assert sum(s["num_examples"] for s in meta["dataset_info"]["splits"]) == 20


def test_size_categories() -> None:
    assert size_category(999) == "n<1K"
    assert size_category(3407) == "1K<n<10K"
    assert size_category(2_000_000) == "1M<n<10M"


def _curated(tmp_path: Path, suffix: str) -> Path:
    """A curated file with curation columns (score, rating, deductions, facets, split ...) and
    split files, as a pipeline writes them."""
    records = [good(f"garden topic {i}", "home_garden", meta={"source": "handmade"}) for i in range(12)]
    records += [good(f"sourdough bread {i}", "food_cooking") for i in range(8)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "data" / f"curated{suffix}"
    stages = [
        StageSpec("score"),
        StageSpec("categorize"),
        StageSpec("split", {"output_dir": str(out.parent / "splits")}),
    ]
    run_pipeline(PipelineConfig([source], out, stages))
    return out


def _file_columns(path: Path) -> set[str]:
    if path.suffix == ".parquet":
        return set(pl.read_parquet(path).columns)
    return set().union(*(json.loads(line) for line in path.read_text().splitlines()))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_card_folder_loads_with_datasets_and_lists_every_column(tmp_path: Path, suffix: str) -> None:
    out = _curated(tmp_path, suffix)
    card = write_card(out, out.parent / "README.md")
    meta = front_matter(card.read_text())
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert set(names) == _file_columns(out) and {"score", "deductions", "facets", "split"} <= set(names)
    loaded = datasets.load_dataset(str(out.parent), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == 20 and set(loaded["train"].column_names) == set(names)


def test_card_folder_loads_its_split_files(tmp_path: Path) -> None:
    out = _curated(tmp_path, ".jsonl")
    card = write_card(out, out.parent / "README.md", splits_dir=out.parent / "splits")
    assert front_matter(card.read_text())["configs"][0]["data_files"][0]["path"] == "splits/train.jsonl"
    loaded = datasets.load_dataset(str(out.parent), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "val", "test"} and sum(s.num_rows for s in loaded.values()) == 20


def test_card_data_paths_are_relative_to_the_card(tmp_path: Path) -> None:
    out = _curated(tmp_path, ".jsonl")
    card = write_card(out, tmp_path / "card" / "README.md", splits_dir=out.parent / "splits")
    assert (
        front_matter(card.read_text())["configs"][0]["data_files"][0]["path"] == "../data/splits/train.jsonl"
    )


def test_card_license_comes_from_the_flag_or_the_rows_meta(tmp_path: Path) -> None:
    rows = [
        good("tide tables", meta={"license": "cc-by-4.0"}),
        good("auth config", meta={"license": "cc-by-4.0"}),
    ]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    assert front_matter(build_card(data))["license"] == "cc-by-4.0"
    assert "from the rows' meta.license" in build_card(data)
    assert front_matter(build_card(data, license_id="apache-2.0"))["license"] == "apache-2.0"


def test_card_examples_are_the_best_unflagged_rows(tmp_path: Path) -> None:
    out = _curated(tmp_path, ".jsonl")
    frame = read_frame([out]).frame
    best = frame.sort("score", descending=True).row(0, named=True)
    flagged = frame.with_columns(
        pl.when(pl.col("query") == best["query"])
        .then(pl.lit(["boilerplate"]))
        .otherwise(pl.lit([]))
        .alias("flags")
    )
    from qmd_finetune.io import write_records

    write_records(flagged, out)
    text = build_card(out)
    examples = text[text.index("## Examples") : text.index("## Statistics")]
    assert best["query"] not in examples and examples.count("```json") == 3
    assert '"category": "home_garden"' in examples and '"category": "food_cooking"' in examples


def test_card_declares_a_column_empty_in_one_split_with_its_type_elsewhere(tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    splits.mkdir()
    write_jsonl(splits / "train.jsonl", [{**good(f"topic {i}"), "leak": None} for i in range(3)])
    write_jsonl(splits / "test.jsonl", [{**good("tide tables"), "leak": "exact"}])
    data = write_jsonl(tmp_path / "curated.jsonl", [good("topic 0")])
    card = write_card(data, tmp_path / "README.md", splits_dir=splits)
    leak = next(f for f in front_matter(card.read_text())["dataset_info"]["features"] if f["name"] == "leak")
    assert leak == {"name": "leak", "dtype": "string"}
    loaded = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert loaded["test"]["leak"] == ["exact"] and loaded["train"].num_rows == 3
