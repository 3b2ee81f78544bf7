from __future__ import annotations

import polars as pl
from _curate_fixtures import echo, frame, good

from qmd_finetune.curate import score
from qmd_finetune.curate.stage import REASON
from qmd_finetune.reward import score as score_one


def test_score_stage_adds_score_rating_and_deductions_from_the_reward() -> None:
    data = frame([good("sourdough starter"), echo("auth config")])
    result = score.run(data)
    assert {"score", "rating", "deductions"} <= set(result.kept.columns)
    assert result.rejected.height == 0
    expected = score_one("auth config", "lex: auth config\nvec: auth config")
    row = result.kept.filter(pl.col("query") == "auth config").row(0, named=True)
    assert row["score"] == expected.percentage
    assert row["rating"] == expected.rating
    assert row["deductions"] == expected.deductions


def test_min_score_rejects_rows_below_it_with_a_reason() -> None:
    data = frame([good("sourdough starter"), echo("auth config"), good("tide tables")])
    result = score.run(data, min_score=70)
    assert result.kept.height == 2
    assert result.rejected.get_column("query").to_list() == ["auth config"]
    assert result.rejected.get_column(REASON).to_list() == ["score below 70"]
    assert data.height == result.kept.height + result.rejected.height
    assert result.counts["rating_excellent"] == 2


def test_score_stage_replaces_stale_score_columns() -> None:
    data = frame([good("tide tables")], score=[1.0], rating=["Failed"], deductions=[["stale"]])
    result = score.run(data)
    row = result.kept.row(0, named=True)
    assert row["score"] > 1.0 and row["deductions"] != ["stale"]


def test_deduction_kinds_group_details_away() -> None:
    assert score.deduction_kind("hyde too long (214)") == "hyde too long"
    assert score.deduction_kind("lex echoes query: auth config") == "lex echoes query"
    assert score.deduction_kind("2 lex pair(s) too similar") == "N lex pair(s) too similar"
    assert score.deduction_kind("missing vec:") == "missing vec:"
