"""`generate expand --rubric`: the score, --min-score and meta.score_rubric follow the rubric.

The fake server answers "React hooks tutorial" with its good_answer (hyde, 2 lex, 2 vec, all
holding the query). v1 finds no entity (React is the first word), so the lex lines do not
score the entity bonus: 130 / 140 = 92.9. v2 takes `react` (position 0, not a query verb)
and chains `hooks`: every line holds them, E 15 + 5 = 20, so 140 / 140 = 100.0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke
from typer.testing import CliRunner

from qmd_finetune.generate.cli import app

QUERY = "React hooks tutorial"


def _expand(server, tmp_path: Path, *extra: str):
    queries = tmp_path / "q.txt"
    queries.write_text(f"{QUERY}\n")
    out = tmp_path / "out.jsonl"
    args = ["expand", "--model", "openai/m", "--queries", str(queries), "--output", str(out)]
    args += ["--api-base", server.url + "/v1", "--api-key-env", "TEST_LLM_KEY", "--no-progress", *extra]
    return invoke(args), out, tmp_path / "out.rejects.jsonl"


@pytest.mark.parametrize(
    ("flags", "rubric", "expected"), [([], "v2", 100.0), (["--rubric", "v1"], "v1", 92.9)]
)
def test_records_carry_the_score_and_rubric(
    tmp_path, llm_server, secret_env, flags, rubric, expected
) -> None:
    result, out, _ = _expand(llm_server, tmp_path, *flags)
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["score"] == expected
    assert record["meta"]["score_rubric"] == rubric
    assert "score rubric" in result.output and rubric in result.output


def test_min_score_is_judged_under_the_chosen_rubric(tmp_path, llm_server, secret_env) -> None:
    result, out, rejects = _expand(llm_server, tmp_path, "--min-score", "95", "--rubric", "v1")
    assert result.exit_code == 0, result.output
    assert not out.exists() or out.read_text() == ""
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (reject["stage"], reject["reason"]) == ("score", "score 92.9 < 95 (rubric v1)")


def test_unknown_rubric_exits_2(tmp_path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text(f"{QUERY}\n")
    args = ["expand", "--model", "openai/m", "--queries", str(queries), "--output", str(tmp_path / "o.jsonl")]
    result = CliRunner().invoke(app, [*args, "--rubric", "v0"])
    assert result.exit_code == 2
    assert "valid rubrics are v1, v2" in result.output
