"""The rubric of ``train eval`` reports and of the GRPO reward (config key ``rubric``), without a model.

The outputs are rubric v2 spec example 2 ("Bob asked about deploy"): 89.2 under v1, 39.2
under v2 (v2 finds the entity `bob` at position 0 and no line keeps it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.training.cli import app
from qmd_finetune.training.config import ConfigError, GRPORunConfig, build_config, load_config
from qmd_finetune.training.evaluate import EvalQuery, build_report, compare, render_html, rescore
from qmd_finetune.training.prompts import format_for

BOB = "Bob asked about deploy"
OUTPUT = "lex: deploy question\nlex: deployment process steps\nvec: someone asking how the deployment works"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def saved_report(model: str, rubric: str | None) -> dict:
    report = rescore(
        {"model": model, "results": [{"query": BOB, "category": "c", "output": OUTPUT}]}, rubric or "v1"
    )
    if rubric is None:  # written before reports named their rubric
        del report["rubric"]
    return report


@pytest.mark.parametrize(("rubric", "mean"), [("v1", 89.2), ("v2", 39.2)])
def test_build_report_scores_with_the_rubric_and_names_it(rubric: str, mean: float) -> None:
    fmt = format_for("local/smollm2")
    report = build_report("m", None, [EvalQuery(BOB, "c")], [OUTPUT], fmt, "q.txt", 1.0, "fp32", rubric)
    assert (report["rubric"], report["mean"], report["categories"]["c"]["mean"]) == (rubric, mean, mean)
    assert report["results"][0]["percentage"] == mean
    assert f"(rubric {rubric})" in render_html(report)


@pytest.mark.parametrize("other_rubric", ["v1", None])
def test_compare_rescores_a_report_made_with_another_rubric(other_rubric: str | None) -> None:
    ours = saved_report("new", "v2")
    theirs = saved_report("old", other_rubric)
    assert theirs["mean"] == 89.2  # as saved, under v1
    result = compare(ours, theirs)
    # both sides under v2: the same outputs, so no difference
    assert (result["rubric"], result["other_mean"], result["delta"]) == ("v2", 39.2, 0.0)
    assert result["other_rescored_from"] == "v1"


def test_compare_of_reports_with_one_rubric_rescores_nothing() -> None:
    result = compare(saved_report("new", "v1"), saved_report("old", "v1"))
    assert (result["other_mean"], result["other_rescored_from"]) == (89.2, None)


def test_train_eval_rejects_an_unknown_rubric_before_loading_anything(tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text(f"{BOB}\n")
    result = CliRunner().invoke(app, ["eval", "-m", "local/smollm2", "-q", str(queries), "--rubric", "v3"])
    assert result.exit_code == 2
    assert "valid rubrics are v1, v2" in result.output


def test_grpo_config_rubric_defaults_to_v2_and_is_validated() -> None:
    assert GRPORunConfig().rubric == "v2"
    assert load_config(GRPORunConfig, CONFIGS / "grpo.yaml").rubric == "v2"
    assert build_config(GRPORunConfig, {"rubric": "v1"}).rubric == "v1"
    with pytest.raises(ConfigError, match="rubric: 'v3' is not one of v1, v2"):
        build_config(GRPORunConfig, {"rubric": "v3"})
