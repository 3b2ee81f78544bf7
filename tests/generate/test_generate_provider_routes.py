"""Where requests go: `ollama/` as chat, the anthropic base URL, and the default cache file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from qmd_finetune.generate.cli import app
from qmd_finetune.generate.prompts import load_prompt

REPO = Path(__file__).resolve().parents[2]


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _turns(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def test_ollama_prefix_is_served_as_chat_messages_with_a_note(tmp_path, llm_server, queries_file):
    out = tmp_path / "out.jsonl"
    args = ["expand", "--model", "ollama/qwen3:1.7b", "--api-base", llm_server.url]
    result = invoke([*args, "--queries", str(queries_file), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ollama/qwen3:1.7b is served as ollama_chat/qwen3:1.7b" in " ".join(result.output.split())
    paths = {r["path"] for r in llm_server.requests}
    assert "/api/chat" in paths and "/api/generate" not in paths
    posts = [r for r in llm_server.requests if r["path"] == "/api/chat"]
    prompt = load_prompt()
    sent = {r["body"]["messages"][-1]["content"]: r["body"]["messages"] for r in posts}
    # LiteLLM adds an empty "images" list to each Ollama message; roles and texts are the prompt's
    assert len(sent) == 4 and all(
        _turns(messages) == _turns(prompt.messages(q)) for q, messages in sent.items()
    )
    assert {r["meta"]["model"] for r in _rows(out)} == {"ollama_chat/qwen3:1.7b"}


def test_anthropic_api_base_ending_in_v1_posts_to_v1_messages(tmp_path, llm_server, queries_file, secret_env):
    out = tmp_path / "out.jsonl"
    args = ["expand", "--model", "anthropic/claude-sonnet-4-5", "--api-base", llm_server.url + "/v1/"]
    result = invoke([*args, "--queries", str(queries_file), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert {r["path"] for r in llm_server.requests} == {"/v1/messages"}
    assert len(_rows(out)) == 4


def test_default_cache_file_sits_beside_the_output_as_documented(tmp_path, llm_server, queries_file):
    out = tmp_path / "records.jsonl"
    args = ["expand", "--model", "openai/m", "--api-base", llm_server.url + "/v1"]
    result = invoke([*args, "--queries", str(queries_file), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "records.cache.sqlite").is_file() and (tmp_path / "records.rejects.jsonl").is_file()
    assert not (tmp_path / "records.jsonl.cache.sqlite").exists()
    docs = " ".join((REPO / "docs" / "generate.md").read_text(encoding="utf-8").split())
    assert "`out/x.jsonl` -> `out/x.cache.sqlite`" in docs and "<output>.cache.sqlite" not in docs
    expand = typer.main.get_command(app).commands["expand"]
    cache_help = next(p.help for p in expand.params if p.name == "cache")
    assert "out/x.jsonl -> out/x.cache.sqlite" in cache_help
