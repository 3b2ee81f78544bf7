from __future__ import annotations

import json
from collections import Counter

from qmd_finetune.generate.prompts import parse_prompt
from qmd_finetune.gepa.metric import judge
from qmd_finetune.gepa.optimize import DEFAULT_SEED_PROMPT
from qmd_finetune.gepa.rubric import (
    EMPHASIS_PREFIX,
    EXAMPLE,
    ONLY_EXAMPLE,
    RULES,
    Instruction,
    RubricProposer,
    categories,
    edit_instruction,
)
from qmd_finetune.reward import score

SEED = "Expand the search query into hyde, lex and vec lines."


def reflective(query: str, reply: str) -> dict:
    """One record as DSPy's GEPA adapter hands it to a custom proposer."""
    return {"Inputs": {"query": query}, "Generated Outputs": {"expansion": reply}, "Feedback": "..."}


def test_worked_examples_have_no_deductions():
    full = score(*EXAMPLE)
    assert full.deductions == [] and full.rating == "Excellent"
    only = score(*ONLY_EXAMPLE)
    assert only.deductions == [] and only.rating == "Excellent"


def test_categories_follow_the_deductions():
    assert categories(judge("auth", "no lines here")) == {"format"}
    assert categories(judge("docker networking", "lex: docker networking")) >= {"echo", "vec", "hyde"}
    assert "entities" in categories(
        judge("who is TDS motorsports", "lex: racing team\nvec: a racing team history")
    )
    assert "only" in categories(judge("ssh keys /only:vec", "lex: ssh key setup"))
    assert "format" in categories(judge("ssh keys", "Sure!\nlex: ssh key setup"))


def test_seed_prompt_round_trips_unchanged():
    text = DEFAULT_SEED_PROMPT.read_text(encoding="utf-8").strip()
    assert Instruction.parse(text).render() == text


def test_edits_add_the_most_frequent_rules_first_then_reorder_then_emphasize():
    counts = Counter({"echo": 3, "hyde": 2, "diverse": 1})
    first, edits = edit_instruction(SEED, counts)
    assert edits == ["add rule [echo]", "add rule [hyde]"]
    assert first.startswith(SEED) and RULES["echo"] in first and RULES["diverse"] not in first
    second, edits = edit_instruction(first, counts)
    assert edits == ["add rule [diverse]"]
    third, edits = edit_instruction(second, Counter({"hyde": 2}))
    assert edits == ["move rule first [hyde]"]
    assert Instruction.parse(third).rules[0] == RULES["hyde"]
    fourth, edits = edit_instruction(third, Counter({"hyde": 2}))
    assert edits == ["emphasize [hyde]"] and fourth.endswith(EMPHASIS_PREFIX + RULES["hyde"])
    assert edit_instruction(fourth, Counter({"hyde": 2})) == (fourth, [])


def test_format_failures_add_a_worked_example_as_a_demo_turn():
    text, edits = edit_instruction(SEED, Counter({"format": 2}))
    assert "add example [format]" in edits
    prompt = parse_prompt(text, "t")
    assert prompt.examples == (EXAMPLE,)
    messages = prompt.messages("auth")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert RULES["format"] in messages[0]["content"] and messages[-1]["content"] == "auth"
    again, edits = edit_instruction(text, Counter({"format": 2, "only": 1}))
    assert parse_prompt(again, "t").examples == (EXAMPLE, ONLY_EXAMPLE)
    assert Instruction.parse(again).render() == again


def test_query_template_keeps_its_placeholder_last_and_gets_inline_examples():
    template = SEED + "\n\nQuery: {query}"
    text, _ = edit_instruction(template, Counter({"format": 1, "echo": 1}))
    assert text.endswith("Query: {query}") and RULES["echo"] in text
    assert "Example for the query: ssh key authentication" in text and "## Examples" not in text
    assert Instruction.parse(text).render() == text


def test_existing_rules_section_is_extended_in_place():
    seed = DEFAULT_SEED_PROMPT.read_text(encoding="utf-8").strip()
    text, _ = edit_instruction(seed, Counter({"think": 1}))
    inst = Instruction.parse(text)
    assert inst.rules[-1] == RULES["think"]
    assert text.count("Rules:") == 1


def test_proposer_is_deterministic_and_logs_its_edits(tmp_path):
    dataset = {
        "expand": [
            reflective("docker compose networking", "Sure!\nlex: docker compose networking"),
            reflective("who is TDS motorsports", "lex: who is TDS motorsports\nvec: TDS"),
            reflective("auth", ""),
        ]
    }
    log = tmp_path / "log.jsonl"
    proposer = RubricProposer(log_path=log)
    one = proposer(candidate={"expand": SEED}, reflective_dataset=dataset, components_to_update=["expand"])
    two = RubricProposer()(
        candidate={"expand": SEED}, reflective_dataset=dataset, components_to_update=["expand"]
    )
    assert one == two and one["expand"] != SEED
    entry = json.loads(log.read_text().splitlines()[0])
    assert entry["problems"]["format"] == 2 and entry["edits"][0] == "add rule [format]"
    assert [m["query"] for m in entry["minibatch"]] == [
        "docker compose networking",
        "who is TDS motorsports",
        "auth",
    ]


def test_proposer_reads_dspy_failed_parse_records():
    record = {
        "Inputs": {"query": "auth"},
        "Generated Outputs": "Couldn't parse the output as per the expected output format. The model's raw response was:\n```\nhello there\n```\n\n",
        "Feedback": "...",
    }
    out = RubricProposer()(
        candidate={"expand": SEED}, reflective_dataset={"expand": [record]}, components_to_update=["expand"]
    )
    assert RULES["format"] in out["expand"]
