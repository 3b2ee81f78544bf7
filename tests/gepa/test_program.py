"""The DSPy program against a local OpenAI-compatible server: messages as generate sends them, no crash on junk."""

from __future__ import annotations

import dspy
import pytest

from qmd_finetune.generate.prompts import parse_prompt
from qmd_finetune.gepa.metric import gepa_metric
from qmd_finetune.gepa.program import ProviderEngine, QueryExpander, prompt_file_text, prompt_sha, student_lm

INSTRUCTION = (
    "Expand the query.\n\n## Examples\nQuery: ssh keys\nlex: ssh keygen setup\nvec: how do I create ssh keys"
)


def run(server, instruction: str, query: str) -> dspy.Prediction:
    engine = ProviderEngine("openai/fake", api_base=server.api_base)
    try:
        with dspy.context(lm=student_lm(engine, max_tokens=50)):
            dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
            return QueryExpander(instruction)(query=query)
    finally:
        engine.close()


def test_program_sends_the_messages_generate_expand_sends(reply_server):
    server = reply_server(lambda system, user: "lex: docker compose network bridge")
    pred = run(server, INSTRUCTION, "docker networking")
    assert server.requests[0]["messages"] == parse_prompt(prompt_file_text(INSTRUCTION), "x").messages(
        "docker networking"
    )
    assert pred.pairs == [["lex", "docker compose network bridge"]] and pred.parse_error is None


@pytest.mark.parametrize("reply", ["", "[[ ## expansion ## ]]\nI cannot", "hello, I am a tiny model"])
def test_replies_that_break_field_markers_are_scored_failures_not_crashes(reply_server, reply):
    server = reply_server(lambda system, user: reply)
    pred = run(server, INSTRUCTION, "auth")
    assert pred.pairs == [] and pred.parse_error
    out = gepa_metric(dspy.Example(query="auth").with_inputs("query"), pred)
    assert out.score == 0.0 and "Score 0.0%" in out.feedback


def test_prompt_sha_matches_the_saved_file():
    assert len(prompt_sha(INSTRUCTION)) == 64
    assert parse_prompt(prompt_file_text(INSTRUCTION), "x").sha == prompt_sha(INSTRUCTION)
