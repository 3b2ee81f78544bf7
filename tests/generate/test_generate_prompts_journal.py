"""Prompt files (versioned, hashed, GEPA plain-text form) and the kill-safe JSONL journal."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qmd_finetune.generate.journal import JsonlAppender, iter_json_lines, repair_tail
from qmd_finetune.generate.prompts import load_prompt


def test_builtin_prompt_has_examples_as_turns_and_a_stable_sha():
    prompt = load_prompt()
    assert prompt.name == "expand_v1"
    assert prompt.sha == hashlib.sha256(prompt.text.encode()).hexdigest()
    messages = prompt.messages("auth config")
    assert messages[0]["role"] == "system" and "## Examples" not in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[-1] == {"role": "user", "content": "auth config"}


def test_plain_instruction_file_from_gepa_becomes_system_plus_query(tmp_path: Path):
    path = tmp_path / "optimized.txt"
    path.write_text("Expand the query into hyde:, lex: and vec: lines.\n")
    prompt = load_prompt(path)
    assert prompt.messages("q") == [
        {"role": "system", "content": "Expand the query into hyde:, lex: and vec: lines."},
        {"role": "user", "content": "q"},
    ]


def test_query_placeholder_makes_one_user_message(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("Query: {query}\nAnswer with lex: lines.")
    assert load_prompt(path).messages("rust") == [
        {"role": "user", "content": "Query: rust\nAnswer with lex: lines."}
    ]


def test_repair_tail_cuts_a_partial_last_line(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"query": "a"}\n{"query": "b"}\n{"query": "c", "out')
    assert repair_tail(path) == len(b'{"query": "c", "out')
    with JsonlAppender(path) as out:
        out.append({"query": "d"})
    assert [r["query"] for r in iter_json_lines(path)] == ["a", "b", "d"]
