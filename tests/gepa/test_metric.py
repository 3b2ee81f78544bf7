from __future__ import annotations

import inspect
import json

import dspy
import pytest

from qmd_finetune.gepa.metric import feedback_text, gepa_metric, judge
from qmd_finetune.reward import score

GOOD = (
    "hyde: TDS Motorsports is a racing team known for its work in endurance events and car tuning.\n"
    "lex: TDS motorsports history\n"
    "lex: TDS motorsports founders\n"
    "vec: information about TDS motorsports company"
)
QUERY = "who is TDS motorsports"


def test_prefixed_lines_score_like_the_reward():
    j = judge(QUERY, GOOD)
    assert j.percentage == score(QUERY, GOOD).percentage
    assert [k for k, _ in j.items] == ["hyde", "lex", "lex", "vec"]
    assert j.parse_error is None and not j.stray_lines


def test_json_list_of_pairs_is_parsed_and_rendered_canonically():
    raw = json.dumps([["lex", "TDS motorsports history"], ["vec", "who founded TDS motorsports"]])
    j = judge(QUERY, raw)
    assert j.items == [("lex", "TDS motorsports history"), ("vec", "who founded TDS motorsports")]
    assert j.percentage == score(QUERY, j.text).percentage > 0


def test_json_object_with_lists_and_code_fence_is_parsed():
    raw = (
        "```json\n"
        + json.dumps(
            {
                "hyde": "TDS is a tuning shop.",
                "lex": ["TDS motorsports shop"],
                "vec": "what is TDS motorsports",
            }
        )
        + "\n```"
    )
    j = judge(QUERY, raw)
    assert sorted(k for k, _ in j.items) == ["hyde", "lex", "vec"]
    assert j.percentage > 0


def test_mixed_case_prefixes_and_chatter_keep_items_and_report_stray_lines():
    j = judge(
        "docker compose networking",
        "Sure! Here you go:\nLex: docker compose network bridge\nVEC : how do containers talk in docker compose",
    )
    assert j.items == [
        ("lex", "docker compose network bridge"),
        ("vec", "how do containers talk in docker compose"),
    ]
    assert j.stray_lines == ["Sure! Here you go:"]
    assert "dropped" in feedback_text(j)


@pytest.mark.parametrize(
    "raw", ["", "   ", "I am a small model and I like trains.", "[1, 2, 3]", '{"answer": 42}']
)
def test_replies_without_items_score_zero_with_feedback(raw):
    j = judge("auth", raw)
    assert j.percentage == 0.0 and j.score.rating == "Failed"
    assert j.items == [] and j.parse_error
    text = feedback_text(j)
    assert "Score 0.0%" in text and ("hyde:" in text or "empty" in text)


def test_only_mode_feedback_names_the_requested_kind():
    j = judge("ssh key auth /only:lex", "vec: how do I log in with ssh keys\nlex: ssh key login setup")
    assert j.score.only_type == "lex"
    assert "/only:lex" in feedback_text(j) and "drop the vec lines" in feedback_text(j)
    failed = judge("ssh key auth /only:lex", "nothing useful")
    assert "/only:lex" in feedback_text(failed)


def test_feedback_names_missing_entities_echoed_lex_and_hyde_length():
    raw = (
        "hyde: "
        + "x" * 230
        + "\nlex: who is TDS motorsports\nlex: racing company history\nvec: what kind of racing team is it"
    )
    text = feedback_text(judge(QUERY, raw))
    assert "lex echoes query" in text  # the deduction
    assert "'who is TDS motorsports' just repeats the query" in text
    assert "'racing company history' lacks the query's names (motorsports, tds)" in text
    assert "No vec line mentions motorsports, tds" in text
    assert "hyde line is 230 characters" in text


def test_feedback_suggests_missing_kinds():
    text = feedback_text(judge("kubernetes pod restart", "lex: kubernetes pod crashloop"))
    assert "Add 1-3 'vec:' lines" in text and "one 'hyde:' line" in text


def test_metric_has_the_gepa_signature_and_returns_score_and_feedback():
    params = list(inspect.signature(gepa_metric).parameters)
    assert params == ["gold", "pred", "trace", "pred_name", "pred_trace"]
    gold = dspy.Example(query=QUERY).with_inputs("query")
    out = gepa_metric(gold, dspy.Prediction(expansion=GOOD), None, "expand", None)
    assert isinstance(out, dspy.Prediction)
    assert out.score == pytest.approx(score(QUERY, GOOD).percentage / 100)
    assert out.feedback.startswith("Score 100.0%")
    assert gepa_metric(gold, None).score == 0.0
    dspy.GEPA(metric=gepa_metric, max_metric_calls=1, instruction_proposer=lambda **kw: {})
