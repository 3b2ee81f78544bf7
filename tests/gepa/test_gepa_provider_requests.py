"""GEPA sends the requests `generate expand` sends, for every HTTP provider; the headline
`gepa optimize --model ollama/... --api-base ... --train ...` runs with nothing else given."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.generate.cli import app as generate_app
from qmd_finetune.gepa.cli import app as gepa_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from _generate_servers import FakeLLMServer  # noqa: E402

QUERIES = ["docker compose networking", "sourdough starter", "who is Marie Curie", "git rebase vs merge"]
CHAT_PATHS = {"/api/chat", "/v1/chat/completions", "/v1/messages"}


@pytest.fixture
def server():
    with FakeLLMServer() as running:
        yield running


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    path = tmp_path / "queries.txt"
    path.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    return path


def _query(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def _bodies(server: FakeLLMServer, start: int = 0) -> dict[str, dict]:
    """Chat request bodies from request ``start`` on, by query (the first request for each)."""
    bodies: dict[str, dict] = {}
    for request in server.requests[start:]:
        if request["path"] in CHAT_PATHS:
            bodies.setdefault(_query(request["body"]), request["body"])
    return bodies


@pytest.mark.parametrize(
    ("model", "suffix"),
    [
        ("ollama/qwen3:1.7b", ""),
        ("ollama_chat/qwen3:1.7b", ""),
        ("openai/fake-expander", "/v1"),
        ("anthropic/claude-sonnet-4-5", ""),
    ],
)
def test_gepa_sends_the_request_bodies_generate_expand_sends(
    server, queries, tmp_path, monkeypatch, model, suffix
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    api_base = server.url + suffix
    args = ["optimize", "--model", model, "--api-base", api_base, "--train", str(queries)]
    args += ["--reflection-model", "rubric", "--max-metric-calls", "4", "--run-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(gepa_app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    gepa_bodies = _bodies(server)
    assert set(gepa_bodies) == set(QUERIES)

    start = len(server.requests)
    out = tmp_path / "out.jsonl"
    args = [
        "expand",
        "--model",
        model,
        "--api-base",
        api_base,
        "--queries",
        str(queries),
        "--output",
        str(out),
    ]
    args += ["--max-tokens", "256", "--temperature", "0", "--no-progress", "--no-cache"]
    result = CliRunner().invoke(generate_app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    generate_bodies = _bodies(server, start)
    assert set(generate_bodies) == set(QUERIES)
    # The seed prompt is the generate command's built-in prompt: whole bodies must be equal.
    for query in QUERIES:
        assert gepa_bodies[query] == generate_bodies[query], query


def test_headline_command_runs_with_only_model_api_base_and_train(server, queries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["optimize", "--model", "ollama/qwen3:1.7b", "--api-base", server.url, "--train", str(queries)]
    result = CliRunner().invoke(gepa_app, [*args, "--max-metric-calls", "8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "reflection: ollama/qwen3:1.7b (default: the task model reflects on its own answers" in said
    assert "ollama/qwen3:1.7b is served as ollama_chat/qwen3:1.7b" in said
    paths = [r["path"] for r in server.requests]
    assert "/api/generate" not in paths
    # the task model answered the queries and, as reflection model, was asked for a new instruction
    reflections = [
        r for r in server.requests if r["path"] == "/api/chat" and _query(r["body"]) not in QUERIES
    ]
    assert reflections, paths
    run_dirs = list((tmp_path / "out").glob("gepa-*"))
    assert len(run_dirs) == 1 and (run_dirs[0] / "prompt.txt").read_text(encoding="utf-8").strip()
    assert f"prompt: {Path('out') / run_dirs[0].name / 'prompt.txt'}" in said


def test_embedded_model_defaults_to_the_rubric_reflection(queries, tmp_path):
    from qmd_finetune.gepa.optimize import OptimizeConfig, prepare

    prep = prepare(OptimizeConfig(model="local/smollm2", train=queries, run_dir=tmp_path / "run"))
    assert prep.cfg.reflection_model == "rubric" and prep.cfg.auto == "light"
    assert prep.cfg.save_prompt == tmp_path / "run" / "prompt.txt"
    assert any(note.startswith("reflection: rubric (default for the embedded model") for note in prep.notes)
