"""The GEPA metric, judge and rule-based proposer score with the run's rubric (default v2).

The reply is rubric v2 spec example 2 for "Bob asked about deploy": 89.2 under v1, 39.2
under v2 (v2 takes `bob` at position 0 as an entity; no line keeps it: -30 - 20).
"""

from __future__ import annotations

import json

import dspy
import pytest
from typer.testing import CliRunner

from qmd_finetune.gepa.cli import app
from qmd_finetune.gepa.metric import feedback_text, gepa_metric, judge, metric_for
from qmd_finetune.gepa.rubric import RubricProposer

BOB = "Bob asked about deploy"
REPLY = "lex: deploy question\nlex: deployment process steps\nvec: someone asking how the deployment works"


@pytest.mark.parametrize(("rubric", "percentage"), [("v1", 89.2), ("v2", 39.2)])
def test_metric_for_scores_with_its_rubric(rubric: str, percentage: float) -> None:
    gold = dspy.Example(query=BOB).with_inputs("query")
    out = metric_for(rubric)(gold, dspy.Prediction(expansion=REPLY))
    assert out.score == pytest.approx(percentage / 100, abs=1e-12)
    assert judge(BOB, REPLY, rubric).score.rubric == rubric


def test_default_metric_is_v2_and_its_feedback_names_the_v2_entity() -> None:
    gold = dspy.Example(query=BOB).with_inputs("query")
    assert gepa_metric(gold, dspy.Prediction(expansion=REPLY)).score == pytest.approx(0.392, abs=1e-12)
    text = feedback_text(judge(BOB, REPLY))
    assert "entities dropped: bob" in text and "lacks the query's names (bob)" in text
    assert "bob" not in feedback_text(judge(BOB, REPLY, "v1")).lower().replace(BOB.lower(), "")


def test_unknown_metric_rubric_is_an_error() -> None:
    with pytest.raises(ValueError, match="valid rubrics are v1, v2"):
        metric_for("v3")


def test_rule_based_proposer_judges_with_its_rubric(tmp_path) -> None:
    record = {"Inputs": {"query": BOB}, "Generated Outputs": {"expansion": REPLY}, "Feedback": "..."}
    for rubric, score in (("v1", 89.2), ("v2", 39.2)):
        log = tmp_path / f"{rubric}.jsonl"
        RubricProposer(log_path=log, rubric=rubric)(
            candidate={"expand": "Expand {query}"},
            reflective_dataset={"expand": [record]},
            components_to_update=["expand"],
        )
        assert json.loads(log.read_text())["minibatch"] == [{"query": BOB, "score": score}]


def test_gepa_optimize_rejects_an_unknown_rubric_before_any_model_call(tmp_path) -> None:
    train = tmp_path / "train.txt"
    train.write_text(f"{BOB}\n")
    args = [
        "optimize", "--model", "openai/none", "--reflection-model", "rubric", "--train", str(train),
        "--save-prompt", str(tmp_path / "p.txt"), "--auto", "light", "--rubric", "v3",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "unknown rubric 'v3': valid rubrics are v1, v2" in result.output
    assert not (tmp_path / "p.txt").exists()
