from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _curate_fixtures import REFERENCE, frame, good

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
    assert plan["categories"] == {"history": 3, "science": 3} and plan["total_needed"] == 6
    assert plan["targets"]["categories"] == {"technology": 5, "history": 5, "science": 3}


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


def mixed(seed: int = 3) -> pl.DataFrame:
    """Four categories of uneven size with scattered scores and facets."""
    rng = np.random.default_rng(seed)
    sizes = {"technology": 40, "history": 9, "science": 17, "general": 6}
    rows = [(f"{cat} {i}", cat, float(rng.integers(40, 100))) for cat, n in sizes.items() for i in range(n)]
    facets = [["temporal"] if rng.random() < 0.4 else [] for _ in rows]
    return scored(rows, facets)


SHARES = {
    "categories": {"technology": 0.4, "history": 0.2, "science": 0.3},
    "facets": {"temporal": 0.2},
}


def test_balancing_a_balanced_output_with_its_resolved_targets_changes_nothing(tmp_path: Path) -> None:
    first = balance.run(mixed(), targets=SHARES, plan=tmp_path / "plan.json")
    assert first.rejected.height > 0  # technology (and the temporal facet) were over target
    assert first.report["targets"]["total"] == 72
    for targets in (first.report["targets"], tmp_path / "plan.json"):
        again = balance.run(first.kept, targets=targets, seed=7)
        assert again.rejected.height == 0
        assert again.kept.equals(first.kept)
        assert again.report["plan"] == first.report["plan"]


def test_re_resolving_shares_against_the_output_would_shrink_it() -> None:
    """Why the plan stores counts: shares of the smaller output cut it again."""
    first = balance.run(mixed(), targets=SHARES)
    assert balance.run(first.kept, targets=SHARES).kept.height < first.kept.height


def test_analyze_and_balance_report_the_same_deficits(tmp_path: Path) -> None:
    from qmd_finetune.curate.analyze import compute_stats

    data = mixed()
    result = balance.run(data, targets=SHARES, plan=tmp_path / "plan.json")
    deficits = {c: r["deficit"] for c, r in result.report["categories"].items()}
    # the output against the plan's counts
    after = compute_stats(result.kept, targets=tmp_path / "plan.json", score=False)
    assert {c: r["deficit"] for c, r in after["category_targets"].items()} == deficits
    assert {c: r["count"] for c, r in after["category_targets"].items()} == {
        c: r["kept"] for c, r in result.report["categories"].items()
    }
    # the input against the same shares: the same targets, so the same deficits
    before = compute_stats(data, targets=SHARES, score=False)
    assert {c: r["target"] for c, r in before["category_targets"].items()} == {
        c: r["target"] for c, r in result.report["categories"].items()
    }
    assert {c: r["deficit"] for c, r in before["category_targets"].items()} == deficits


def test_target_gaps_counts_targets_defaults_and_deficits() -> None:
    gaps = balance.target_gaps({"a": 5, "b": 1, "c": 2}, {"a": 3, "b": 4, "d": 2}, default=None)
    assert gaps == {
        "a": {"count": 5, "target": 3, "deficit": 0},
        "b": {"count": 1, "target": 4, "deficit": 3},
        "c": {"count": 2, "target": None, "deficit": 0},
        "d": {"count": 0, "target": 2, "deficit": 2},
    }
    assert balance.target_gaps({"c": 2}, {}, default=5)["c"]["deficit"] == 3


def test_a_plan_without_resolved_targets_is_a_clear_error(tmp_path: Path) -> None:
    old = tmp_path / "old.plan.json"
    old.write_text(json.dumps({"categories": {"history": 3}, "facets": {}, "total_needed": 3}))
    with pytest.raises(balance.TargetsError, match="old.plan.json: this plan holds no resolved targets"):
        balance.load_targets(old)


def test_cli_balance_of_its_own_output_with_the_plan_is_unchanged(tmp_path: Path) -> None:
    from _curate_fixtures import write_jsonl
    from typer.testing import CliRunner

    from qmd_finetune.curate.cli import app

    records = [good(f"kubernetes topic {i}", "technology") for i in range(12)]
    records += [good(f"roman history topic {i}", "history") for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    runner = CliRunner()
    outputs = []
    previous, targets = source, ["--target", "technology=0.5", "--target", "history=0.5"]
    for step in (1, 2, 3):
        out = tmp_path / f"b{step}.jsonl"
        result = runner.invoke(
            app,
            ["balance", "-i", str(previous), "-o", str(out), "--stage-only", *targets],
            env={"COLUMNS": "200"},
        )
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text().splitlines())
        previous, targets = out, ["--targets", str(tmp_path / f"b{step}.plan.json")]
    assert len(outputs[0]) == 11  # technology cut to half of the 15 rows in (round(7.5) = 8), history 3
    assert outputs[0] == outputs[1] == outputs[2]
    assert json.loads((tmp_path / "b3.plan.json").read_text())["categories"] == {"history": 5}


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_balance_pipeline_is_a_fixed_point_on_the_reference_data(tmp_path: Path) -> None:
    """Whatever categorize and clean decide, a second balance with the plan's targets keeps every row."""
    from qmd_finetune.curate.pipeline import balance_config, read_frame, run_pipeline

    taxonomy = {"balance": {"targets": balance.taxonomy_targets()}}  # what `curate balance` uses
    first = run_pipeline(
        balance_config(sorted(REFERENCE.glob("*.jsonl")), tmp_path / "b1.jsonl", stage_options=taxonomy)
    )
    assert first.stage("balance").rejected > 0
    second = run_pipeline(
        balance_config([tmp_path / "b1.jsonl"], tmp_path / "b2.jsonl", targets=tmp_path / "b1.plan.json")
    )
    assert second.rejected == 0 and second.kept == first.kept
    columns = ["query", "output", "category"]
    assert (
        read_frame([tmp_path / "b2.jsonl"])
        .frame.select(columns)
        .equals(read_frame([tmp_path / "b1.jsonl"]).frame.select(columns))
    )
    plans = [json.loads((tmp_path / f"b{i}.plan.json").read_text()) for i in (1, 2)]
    assert plans[0] == plans[1]
