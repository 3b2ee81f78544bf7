from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from _curate_fixtures import echo, frame, good, write_jsonl
from rich.console import Console

from qmd_finetune.curate.analyze import compute_stats, print_stats
from qmd_finetune.curate.pipeline import PipelineConfig, StageSpec, run_pipeline
from qmd_finetune.curate.report import analyze_files, render_html

RECORDS = [
    good("docker compose networking", "technology"),
    good("Docker  compose networking", "technology"),
    good("sourdough bread", "food_cooking"),
    echo("auth config", "technology"),
    {"query": "tide tables /only:lex", "output": [["lex", "tide tables times"], ["lex", "high tide chart"]]},
]


def test_stats_count_categories_kinds_lengths_and_scores() -> None:
    stats = compute_stats(frame(RECORDS), targets={"categories": {"technology": 2, "history": 1}})
    assert stats["rows"] == 5
    assert stats["unique_queries"] == 4 and stats["duplicate_rows"] == 1
    assert stats["categories"] == {"technology": 3, "food_cooking": 1, "uncategorized": 1}
    assert stats["category_targets"]["history"] == {"count": 0, "target": 1, "deficit": 1}
    assert stats["only_mode"] == {"none": 4, "lex": 1}
    assert stats["items"]["hyde"]["items"] == 3 and stats["items"]["hyde"]["per_row"]["0"] == 2
    assert stats["items"]["lex"]["chars"]["count"] == 9
    score = stats["score"]
    assert sum(c for _, _, c in score["histogram"]) == 5
    assert sum(score["ratings"].values()) == 5
    assert any(kind == "lex echoes query" for kind, _ in score["top_deductions"])
    assert stats["duplicates"]["clusters"] == 1 and stats["duplicates"]["largest"][0]["size"] == 2
    assert set(stats["examples"]) == {"technology", "food_cooking", "uncategorized"}


def test_stats_use_curation_columns_when_present() -> None:
    data = frame(RECORDS[:3], dup_group=["a", "a", "b"], split=["train", "train", "test"])
    data = data.with_columns(
        pl.Series("facets", [["short_query"], [], ["short_query", "temporal"]], dtype=pl.List(pl.Utf8)),
        pl.Series("flags", [["boilerplate:hyde"], [], []], dtype=pl.List(pl.Utf8)),
    )
    stats = compute_stats(data)
    assert stats["facets"]["short_query"] == {"count": 2, "share": round(2 / 3, 4)}
    assert stats["flags"] == {"boilerplate:hyde": 1} and stats["flagged_rows"] == 1
    assert stats["splits"] == {"train": 2, "test": 1}
    assert stats["duplicates"]["method"] == "dup_group" and stats["duplicates"]["clusters"] == 1


def test_terminal_report_prints_every_section() -> None:
    console = Console(record=True, width=150)
    print_stats(console, compute_stats(frame(RECORDS), targets={"categories": {"technology": 2}}))
    text = console.export_text()
    for heading in (
        "overview",
        "categories vs target",
        "items per kind",
        "score histogram",
        "top deductions",
        "duplicate clusters",
        "examples per category",
    ):
        assert heading in text


def test_html_report_is_self_contained_with_charts(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    stats = analyze_files([source], html=tmp_path / "r.html", json_path=tmp_path / "s.json")
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") >= 6
    assert not re.search(r"<script[^>]*\bsrc=", html)  # the row browser's script is inline
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert "docker compose networking" in html
    assert stats["rows"] == 5 and (tmp_path / "s.json").read_text().startswith("{")


def test_run_report_shows_stages_and_before_after(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*RECORDS, '{"query": broken'])
    report = tmp_path / "run.html"
    config = PipelineConfig(
        [source],
        tmp_path / "o.jsonl",
        [StageSpec("normalize"), StageSpec("score", {"min_score": 60})],
        report=report,
    )
    run_pipeline(config)
    html = report.read_text()
    assert "Pipeline run" in html and "Before and after" in html
    assert "rows in 6 = kept" in html and "score below 60" in html


def test_empty_stats_render() -> None:
    html = render_html(compute_stats(frame([])), "empty")
    assert "No rows." in html


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    analyze_files([source], html=tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,1600",
            (tmp_path / "r.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 20_000  # a blank page is a few KB


def test_run_report_compares_categories_with_the_targets_balance_used(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    report = tmp_path / "run.html"
    stages = [StageSpec("score"), StageSpec("balance", {"categories": {"technology": 2, "history": 4}})]
    run_pipeline(PipelineConfig([source], tmp_path / "o.jsonl", stages, report=report))
    html = report.read_text()
    assert "rows per category vs target" in html and "history" in html
    assert "generation plan" in html
