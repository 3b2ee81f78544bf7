from __future__ import annotations

from pathlib import Path

import yaml
from _curate_fixtures import echo, good, write_jsonl

from qmd_finetune.curate.card import build_card, size_category, write_card
from qmd_finetune.curate.pipeline import PipelineConfig, StageSpec, run_pipeline


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_has_front_matter_stats_and_sha(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "data.jsonl", [good("tide tables", "travel_geography"), echo("auth config")]
    )
    text = build_card(data, name="demo set")
    meta = front_matter(text)
    assert meta["pretty_name"] == "demo set" and meta["license"] == "mit"
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data.jsonl"}]
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": 2}]
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
