from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from _curate_fixtures import frame, good

from qmd_finetune.curate import balance
from qmd_finetune.curate.stage import REASON

ROOT = Path(__file__).resolve().parents[2]


def scored(rows: list[tuple[str, str, float]], facets: list[list[str]] | None = None) -> pl.DataFrame:
    data = frame([good(q, c) for q, c, _ in rows], score=[s for _, _, s in rows])
    if facets is not None:
        data = data.with_columns(pl.Series("facets", facets, dtype=pl.List(pl.Utf8)))
    return data


def test_over_target_category_keeps_its_highest_scored_rows() -> None:
    data = scored(
        [(f"tech {i}", "technology", float(i)) for i in range(10)] + [("bread", "food_cooking", 50.0)]
    )
    result = balance.run(data, categories={"technology": 3})
    kept_tech = result.kept.filter(pl.col("category") == "technology").get_column("score").to_list()
    assert sorted(kept_tech) == [7.0, 8.0, 9.0]
    assert result.rejected.height == 7
    assert set(result.rejected.get_column(REASON)) == {"category over target: technology"}
    assert result.kept.filter(pl.col("category") == "food_cooking").height == 1
    assert data.height == result.kept.height + result.rejected.height


def test_ties_are_broken_by_the_seed_reproducibly() -> None:
    data = scored([(f"q {i}", "technology", 80.0) for i in range(40)])
    first = balance.run(data, categories={"technology": 10}, seed=1).kept.get_column("query").to_list()
    again = balance.run(data, categories={"technology": 10}, seed=1).kept.get_column("query").to_list()
    other = balance.run(data, categories={"technology": 10}, seed=2).kept.get_column("query").to_list()
    assert first == again
    assert set(first) != set(other)


def test_shares_resolve_against_total_and_deficits_go_to_the_plan(tmp_path: Path) -> None:
    data = scored(
        [(f"t {i}", "technology", 90.0) for i in range(6)] + [(f"h {i}", "history", 90.0) for i in range(2)]
    )
    plan_path = tmp_path / "plan.json"
    result = balance.run(
        data, categories={"technology": 0.5, "history": 0.5, "science": 3}, total=10, plan=plan_path
    )
    report = result.report["categories"]
    assert report["technology"] == {"before": 6, "target": 5, "kept": 5, "deficit": 0}
    assert report["history"]["deficit"] == 3
    assert report["science"]["deficit"] == 3
    plan = json.loads(plan_path.read_text())
    assert plan == {"categories": {"history": 3, "science": 3}, "facets": {}, "total_needed": 6}


def test_unlisted_categories_keep_their_rows_unless_a_default_is_given() -> None:
    data = scored([(f"g {i}", "general", 50.0) for i in range(5)] + [("untagged", None, 50.0)])
    assert balance.run(data, categories={"technology": 2}).rejected.height == 0
    result = balance.run(data, categories={"technology": 2}, default=2)
    assert result.kept.filter(pl.col("category") == "general").height == 2
    assert result.kept.filter(pl.col("category").is_null()).height == 1  # "uncategorized" has 1 <= 2


def test_facet_target_downsamples_without_taking_a_category_under_its_target() -> None:
    rows = [(f"t {i}", "technology", float(90 - i)) for i in range(6)] + [
        (f"s {i}", "science", float(80 - i)) for i in range(2)
    ]
    facets = [["short_query"]] * 8
    data = scored(rows, facets)
    result = balance.run(data, categories={"technology": 4, "science": 2}, facets={"short_query": 4})
    kept = result.kept
    # technology is cut to 4 by its own target; science (at target) must not lose rows for the facet.
    assert kept.filter(pl.col("category") == "science").height == 2
    assert kept.filter(pl.col("category") == "technology").height == 4
    assert result.report["facets"]["short_query"] == {"target": 4, "kept": 6, "deficit": 0}


def test_facet_over_target_drops_lowest_scored_holders() -> None:
    rows = [(f"t {i}", "technology", float(i)) for i in range(6)]
    facets = [["temporal"], ["temporal"], ["temporal"], [], [], []]
    result = balance.run(scored(rows, facets), facets={"temporal": 1})
    assert sorted(result.rejected.get_column("score").to_list()) == [0.0, 1.0]
    assert set(result.rejected.get_column(REASON)) == {"facet over target: temporal"}


def test_facet_deficit_is_planned() -> None:
    result = balance.run(scored([("a b", "technology", 90.0)], [[]]), facets={"temporal": 5})
    assert result.report["plan"]["facets"] == {"temporal": 5}
    assert result.report["plan"]["total_needed"] == 5


def test_target_flags_and_errors() -> None:
    assert balance.parse_target_flags(["technology=300", "health=0.1"]) == {"technology": 300, "health": 0.1}
    with pytest.raises(balance.TargetsError):
        balance.parse_target_flags(["technology"])
    with pytest.raises(balance.TargetsError):
        balance.resolve_targets({"categories": {"x": -1}}, 10)
    with pytest.raises(balance.TargetsError):
        balance.resolve_targets({"catgories": {}}, 10)


def test_project_targets_file_and_taxonomy_defaults_resolve() -> None:
    spec = balance.load_targets(ROOT / "configs" / "targets.yaml")
    resolved = balance.resolve_targets(spec, 1000)
    assert resolved.categories["technology"] == 220
    assert "general" not in resolved.categories
    assert set(resolved.facets) >= {"short_query", "only_mode"}
    assert balance.taxonomy_targets()["categories"]["technology"] == pytest.approx(0.22)
