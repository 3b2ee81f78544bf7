"""The HTML report: fitted bins, the views of a run, and the row browser in a real headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
from html import escape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _chromium import Chromium
from _curate_fixtures import echo, good, write_jsonl

from qmd_finetune.curate.analyze import compute_stats, distribution
from qmd_finetune.curate.pipeline import PipelineConfig, StageSpec, run_pipeline
from qmd_finetune.curate.report import render_html, write_html
from qmd_finetune.curate.report_browser import payload
from qmd_finetune.io import records_to_frame


def _widths(histogram: list[list[float]]) -> set[float]:
    return {round(hi - lo, 6) for lo, hi, _ in histogram}


def test_histogram_bins_are_equal_width_and_fitted_to_the_data() -> None:
    scores = np.random.default_rng(0).uniform(61.3, 99.7, 500)
    hist = distribution(scores)["histogram"]
    assert len(_widths(hist)) == 1 and hist[0][0] <= 61.3 and hist[-1][1] >= 99.7
    assert hist[0][0] >= 55  # no empty 0-60 range drawn
    assert sum(c for *_, c in hist) == 500


def test_integer_histograms_put_one_width_of_values_per_bin_and_count_the_tail() -> None:
    lengths = np.concatenate([np.arange(40, 240), [5000]])  # one far outlier
    dist = distribution(lengths, bins=24, integer=True)
    assert len(_widths(dist["histogram"])) == 1
    assert dist["above"] + sum(c for *_, c in dist["histogram"]) == lengths.size
    words = distribution([1, 1, 2, 3, 3, 3], bins=20, integer=True)["histogram"]
    assert [c for *_, c in words] == [2, 1, 3]


def _run(tmp_path: Path) -> tuple[Path, dict]:
    records = [good(f"garden topic {i}", "home_garden") for i in range(6)]
    records += [good(f"sourdough starter {i}") for i in range(3)]
    records += [good("garden topic 1"), echo("auth config"), echo("jwt token refresh")]
    source = write_jsonl(tmp_path / "in.jsonl", [*records, '{"query": broken'])
    extra = write_jsonl(tmp_path / "extra.jsonl", [good("tide tables"), echo("x")])
    report = tmp_path / "run.html"
    config = PipelineConfig(
        [source, extra],
        tmp_path / "o.jsonl",
        [
            StageSpec("normalize"),
            StageSpec("clean", {"actions": {"boilerplate": "flag", "lex_filler": "flag"}}),
            StageSpec("dedup"),
            StageSpec("score", {"min_score": 60}),
            StageSpec("categorize"),
        ],
        report=report,
    )
    run = run_pipeline(config)
    return report, run.summary()


def test_run_report_shows_survival_rejects_per_reason_and_score_views(tmp_path: Path) -> None:
    report, summary = _run(tmp_path)
    html = report.read_text()
    assert "survival per input file" in html and "extra.jsonl" in html
    assert "example rejects per reason" in html
    for stage in summary["stages"]:
        for reason in stage["rejected_by_reason"]:
            assert escape(f"{stage['name']}: {reason}") in html
    assert re.search(r"in\.jsonl:\d+", html)  # rejects name their file:line
    assert "score per category" in html and "worst-scored rows" in html
    assert "largest duplicate clusters found by dedup" in html
    # Charts are inline SVG with axis titles, no external resources.
    assert html.count("<svg") >= 8 and ">rows<" in html and ">score (%)<" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert summary["rows_in"] == summary["kept"] + summary["rejected"]


def test_before_after_uses_the_runs_categories_not_raw_labels(tmp_path: Path) -> None:
    report, _ = _run(tmp_path)
    html = report.read_text()
    section = html[html.index("id='before-after'") : html.index("key numbers")]
    assert "uncategorized" not in section and "home_garden" in section


def test_flagged_rows_that_were_kept_are_listed() -> None:
    frame = records_to_frame([good("alpha topic"), good("beta topic")], source="f.jsonl").with_columns(
        pl.Series("flags", [["boilerplate"], []], dtype=pl.List(pl.Utf8))
    )
    stats = compute_stats(frame)
    assert [r["query"] for r in stats["flagged_examples"]["boilerplate"]] == ["alpha topic"]
    assert "flagged rows that were kept" in render_html(stats)


def test_browser_payload_holds_kept_and_rejected_rows_with_their_sources(tmp_path: Path) -> None:
    kept = records_to_frame([good("alpha topic")], source="a.jsonl")
    rejects = pl.DataFrame(
        {
            "source": ["b.jsonl"],
            "line": [7],
            "stage": ["dedup"],
            "reason": ["duplicate of a.jsonl:1"],
            "path": [None],
            "raw": [json.dumps(good("alpha topic"))],
        },
    )
    data = json.loads(gzip.decompress(base64.b64decode(payload(kept, rejects))))
    (first, second) = data["rows"]
    assert first[0] == "kept" and first[7] == "a.jsonl:1" and first[2][0][0] == "hyde"
    assert second[0] == "rejected" and second[7] == "b.jsonl:7" and second[8] == "dedup: duplicate of <row>"
    sampled = json.loads(gzip.decompress(base64.b64decode(payload(pl.concat([kept] * 5), rejects, limit=3))))
    assert sampled["counts"] == {"kept": 5, "kept_shown": 3, "rejected": 1, "rejected_shown": 1}


async def _browse(path: Path) -> dict:
    async with Chromium() as browser:
        page = await browser.new_page()
        await page.goto(path.resolve().as_uri())
        await page.wait_for("document.querySelector('#browser').dataset.ready === '1'")
        state = (
            "(() => { const b = document.querySelector('#browser'); return {matches: +b.dataset.matches,"
            " visible: b.querySelectorAll('.brow').length, rejected: b.querySelectorAll('.brow.rejected').length,"
            " status: b.querySelector('.status').textContent}; })()"
        )
        out = {"all": await page.evaluate(state)}
        await page.evaluate(
            "(() => { const s = document.querySelector('#browser [name=status]'); s.value = 'rejected';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        out["rejected"] = await page.evaluate(state)
        await page.evaluate(
            "(() => { const b = document.querySelector('#browser'); b.querySelector('.reset').click();"
            " const q = b.querySelector('[name=q]'); q.value = 'sourdough'; q.dispatchEvent(new Event('input')); })()"
        )
        await page.wait_for("+document.querySelector('#browser').dataset.matches < 5")
        out["search"] = await page.evaluate(state)
        await page.evaluate(
            "(() => { const b = document.querySelector('#browser'); b.querySelector('.reset').click();"
            " const m = b.querySelector('[name=min]'); m.value = '60'; m.dispatchEvent(new Event('change')); })()"
        )
        out["score"] = await page.evaluate(state)
        out["score"]["unscored"] = await page.evaluate(
            "[...document.querySelectorAll('#browser .brow .meta')].filter((e) => e.textContent === 'no score').length"
        )
        out["errors"] = page.errors
        return out


def test_row_browser_loads_without_errors_and_filters_rows_in_chromium(tmp_path: Path) -> None:
    report, summary = _run(tmp_path)
    seen = asyncio.run(_browse(report))
    assert seen["errors"] == []
    total = summary["kept"] + summary["rejected"]
    assert seen["all"]["matches"] == total and seen["all"]["visible"] == min(total, 50)
    assert seen["rejected"]["matches"] == summary["rejected"] == seen["rejected"]["rejected"]
    assert seen["rejected"]["visible"] == seen["rejected"]["rejected"] > 0
    assert 0 < seen["search"]["matches"] < total
    assert 0 < seen["score"]["matches"] < total and seen["score"]["unscored"] == 0


@pytest.mark.slow
def test_row_browser_stays_usable_at_100k_rows(tmp_path: Path) -> None:
    n = 100_000
    rng = np.random.default_rng(0)
    kept = records_to_frame([good("seed topic")], source="big.jsonl")
    kept = pl.concat([kept] * n).with_columns(
        pl.format("topic {} about {}", pl.int_range(n), pl.lit("gardens")).alias("query"),
        pl.Series("score", rng.uniform(60, 100, n).round(1)),
        pl.Series("category", rng.choice(["a", "b", "c"], n)),
        pl.int_range(1, n + 1).alias("_line"),
    )
    html = tmp_path / "big.html"
    write_html(
        render_html(compute_stats(kept.head(1000), score=False), "big", rows=payload(kept, None)), html
    )
    seen = asyncio.run(_browse_big(html))
    assert seen["errors"] == [] and seen["all"] == n and 0 < seen["category"] < n


async def _browse_big(path: Path) -> dict:
    async with Chromium() as browser:
        page = await browser.new_page()
        await page.goto(path.resolve().as_uri())
        await page.wait_for("document.querySelector('#browser').dataset.ready === '1'", timeout=120)
        everything = await page.evaluate("+document.querySelector('#browser').dataset.matches")
        await page.evaluate(
            "(() => { const s = document.querySelector('#browser [name=category]'); s.value = 'b';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        category = await page.evaluate("+document.querySelector('#browser').dataset.matches")
        return {"all": everything, "category": category, "errors": page.errors}


def test_analyze_finds_near_duplicate_clusters_as_dedup_does_with_members() -> None:
    records = [good("docker compose changelog 2025"), good("docker compose changelog 2026")]
    records += [good("tide tables"), good("tide tables /only:lex"), good("sourdough bread")]
    dups = compute_stats(records_to_frame(records, source="f.jsonl"))["duplicates"]
    assert dups["method"].startswith("near-duplicate queries") and dups["clusters"] == 1
    assert sorted(dups["largest"][0]["queries"]) == [
        "docker compose changelog 2025",
        "docker compose changelog 2026",
    ]
