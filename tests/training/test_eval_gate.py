"""The eval report counts answers per quality-gate rule beside the rubric's score."""

from __future__ import annotations

from qmd_finetune.training.evaluate import EvalQuery, build_report
from qmd_finetune.training.prompts import format_for


def test_eval_report_counts_each_gate_rule():
    queries = [EvalQuery("docker compose networking", "tech"), EvalQuery("ssh key setup", "tech")]
    degenerate = "hyde: Docker compose networking connects services.\nlex: docker compose network\n"
    degenerate += "vec: docker-comdll\n" * 49
    good = "lex: ssh-keygen ed25519\nlex: ssh key authorized_keys\nvec: how do I set up ssh keys for a server"
    fmt = format_for("HuggingFaceTB/SmolLM2-135M-Instruct")
    report = build_report("m", None, queries, [degenerate, good], fmt, "q.txt", 1.0, "fp32")
    assert report["gate"] == {"repeated_lines": 1, "too_many_items": 1}
    assert report["results"][0]["gate"][0] == "repeated_lines: vec: docker-comdll x49"
    assert report["results"][1]["gate"] == []


TEMPLATE = (
    "hyde: This comprehensive guide covers everything you need to know about {q}. It includes "
    "practical examples, best practices, and troubleshooting tips for beginners and advanced users alike."
)


def _answer(query: str, hyde: str) -> str:
    # the raw-data model's own lex and vec lines for these queries
    return f"{hyde.format(q=query)}\nlex: {query} documentation\nlex: {query} best practices\nvec: understanding {query}"


def test_eval_report_counts_answers_whose_hyde_three_queries_share():
    # the raw-data model's passage, written for 25 of the 36 eval queries (rubric v2: 82-92% each)
    names = ["connection timeout error", "React hooks tutorial", "best laptops right now", "ssh key setup"]
    queries = [EvalQuery(q, "tech") for q in names]
    outputs = [_answer(q, TEMPLATE) for q in names[:3]]
    outputs.append(
        _answer(
            names[3],
            "hyde: Run ssh-keygen -t ed25519, then copy the public key to the server's authorized_keys.",
        )
    )
    fmt = format_for("HuggingFaceTB/SmolLM2-135M-Instruct")
    report = build_report("m", None, queries, outputs, fmt, "q.txt", 1.0, "fp32")
    assert report["template_answers"] == 3
    assert [r["template"] for r in report["results"]] == [True, True, True, False]
    assert all(r["percentage"] > 75 for r in report["results"][:3])  # what the rubric alone says


def test_two_queries_sharing_a_passage_or_one_query_asked_three_ways_is_no_template():
    from qmd_finetune.quality import template_answers, template_signature

    two = [(q, _answer(q, TEMPLATE)) for q in ("auth", "kafka consumer lag")]
    assert template_answers(two) == [False, False]
    one_query = [(q, _answer("auth", TEMPLATE)) for q in ("auth", "Auth", "auth /only:hyde")]
    assert template_answers(one_query) == [False, False, False]
    three = [*two, ("ideas for new feature", _answer("ideas for new feature", TEMPLATE))]
    assert template_answers(three) == [True, True, True]
    assert template_answers(three, min_queries=4) == [False, False, False]
    # the query's own words are not part of the signature; a short passage has none to share
    assert template_signature("auth", _answer("auth", TEMPLATE)) == template_signature(
        "kafka consumer lag", _answer("kafka consumer lag", TEMPLATE)
    )
    assert template_signature("auth", "hyde: Auth with tokens.\nlex: auth token") is None
    assert template_signature("auth", "lex: auth token\nvec: how does auth work") is None
