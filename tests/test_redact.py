"""Secrets become *** wherever they would be written; ordinary text is left alone."""

from __future__ import annotations

import io
import sys

import polars as pl
import pytest

from qmd_finetune.io import atomic_write, empty_rejects, write_rejects
from qmd_finetune.redact import RedactedStream, redact, redact_expr, redact_value, register_env

LEAKS = [
    ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer ***"),
    ('{"x-api-key": "sk-ant-api03-AAAAbbbbCCCCdddd"}', '{"x-api-key": "***"}'),
    ("key sk-proj-0123456789abcdefXYZ in text", "key *** in text"),
    ("token hf_abcdefghijklmnopqrstuvwxyz012", "token ***"),
    ("api_key=hunter2hunter2", "api_key=***"),
    ("aws AKIAABCDEFGHIJKLMNOP", "aws ***"),
]
ORDINARY = [
    "basic sourdough recipes for beginners",
    "bearer bonds explained",
    "sk-learn tutorial",
    "what is an api key and how do I rotate it",
    "ghost stories for kids",
]


@pytest.mark.parametrize(("text", "expected"), LEAKS)
def test_token_shapes_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    frame = pl.DataFrame({"t": [text]})
    assert frame.select(redact_expr(pl.col("t"))).item() == expected


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text
    assert pl.DataFrame({"t": [text]}).select(redact_expr(pl.col("t"))).item() == text


def test_values_of_key_variables_are_masked_whatever_their_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "plainvalue123")
    monkeypatch.setenv("MY_CREDENTIAL", "anotherplainvalue")
    assert redact("echo plainvalue123 and anotherplainvalue") == "echo *** and anotherplainvalue"
    register_env("MY_CREDENTIAL")  # what --api-key-env MY_CREDENTIAL does
    assert redact("echo plainvalue123 and anotherplainvalue") == "echo *** and ***"
    assert redact_value({"a": ["x anotherplainvalue"], "n": 3}) == {"a": ["x ***"], "n": 3}


def test_ledger_and_text_outputs_are_redacted(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", "tok-9a8b7c6d5e")
    rejects = pl.concat(
        [
            empty_rejects(),
            pl.DataFrame(
                {
                    "source": ["a.jsonl"],
                    "line": [1],
                    "stage": ["request"],
                    "reason": ["HTTP 401: tok-9a8b7c6d5e"],
                    "path": [None],
                    "raw": ["Bearer abcdefghijklmnop1234"],
                },
                schema=empty_rejects().schema,
            ),
        ]
    )
    write_rejects(rejects, tmp_path / "r.jsonl")
    text = (tmp_path / "r.jsonl").read_text()
    assert "tok-9a8b7c6d5e" not in text and "abcdefghijklmnop1234" not in text
    with atomic_write(tmp_path / "summary.json") as handle:
        handle.write('{"note": "tok-9a8b7c6d5e"}')
    assert (tmp_path / "summary.json").read_text() == '{"note": "***"}'


def test_console_stream_redacts_and_follows_sys_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stdout", captured)
    RedactedStream().write("Authorization: Bearer abcdefghijklmnop1234\n")
    assert captured.getvalue() == "Authorization: Bearer ***\n"


def test_train_cli_messages_are_redacted(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from qmd_finetune.training.cli import app

    secret = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    monkeypatch.setenv("HF_TOKEN", secret)
    queries = tmp_path / "q.txt"
    queries.write_text("docker compose networking\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "--model", f"/no/such/{secret}", "--queries", str(queries)])
    assert result.exit_code == 2
    assert secret not in result.output and "/no/such/***" in result.output


def test_redacted_json_equals_redacting_every_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line-level shortcut skips the walk only when nothing in the line could be masked."""
    import json

    from qmd_finetune.redact import redacted_json

    monkeypatch.setenv("OPENAI_API_KEY", 'pl"ain\\value\u00e9123')  # a secret JSON escapes
    values = [
        {"query": text, "output": [["lex", text]], "meta": {"n": 3, "note": [text, None]}}
        for text, _ in LEAKS
    ]
    values += [{"query": text, "meta": {"ok": True}} for text in ORDINARY]
    values += [
        {"query": 'echo pl"ain\\value\u00e9123 here', "output": [["vec", "x"]]},
        {"query": "caf\u00e9 \u00fcber", "output": [["hyde", "nothing to hide \u2014 at all"]]},
        {"query": "plain", "output": [["lex", "words only"]], "score": 90.5},
    ]
    for value in values:
        assert redacted_json(value) == json.dumps(redact_value(value), ensure_ascii=False)
    assert "***" in redacted_json(values[-3])
