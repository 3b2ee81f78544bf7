"""`generate expand` against local servers through the real clients: faults, cache, budget, secrets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import SECRET, invoke

from qmd_finetune.generate.prompts import load_prompt
from qmd_finetune.generate.runner import estimate_prompt_tokens

QUERIES = [
    "docker compose networking",
    "sourdough starter",
    "who is Marie Curie",
    "python async await /only:lex",
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_no_secret(*texts_or_paths) -> None:
    for item in texts_or_paths:
        data = item.read_bytes() if isinstance(item, Path) else str(item).encode()
        assert SECRET.encode() not in data, (
            f"API key leaked into {item if isinstance(item, Path) else 'output'}"
        )


def _expand(model: str, server, queries: Path, out: Path, *extra: str):
    args = ["expand", "--model", model, "--queries", str(queries), "--output", str(out)]
    args += ["--api-base", server.url + ("/v1" if model.startswith("openai/") else ""), "--no-progress"]
    args += ["--api-key-env", "TEST_LLM_KEY", *extra]
    return invoke(args)


@pytest.mark.parametrize("client", ["auto", "litellm"])
def test_openai_compatible_faults_are_retried_or_rejected(
    tmp_path, llm_server, queries_file, secret_env, client
):
    queries_file.write_text(queries_file.read_text() + "broken answer query\n")
    llm_server.faults = {
        "docker": ["429:1"],
        "sourdough": ["500", "500"],
        "Marie": ["slow:4"],
        "python": ["badjson", "truncated"],
        "broken": ["wrongformat", "wrongformat"],
    }
    out = tmp_path / "out.jsonl"
    result = _expand(
        "openai/test-model", llm_server, queries_file, out, "--timeout", "1.5", "--client", client
    )
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert sorted(r["query"] for r in rows) == sorted(QUERIES)
    rejects = _rows(tmp_path / "out.rejects.jsonl")
    assert [(r["stage"], r["query"]) for r in rejects] == [("parse", "broken answer query")]
    assert rejects[0]["raw"].startswith("Sure!") and rejects[0]["line"] == 6
    assert llm_server.count("/chat/completions") >= 5 + 1 + 2 + 1 + 2
    record = next(r for r in rows if r["query"] == "docker compose networking")
    meta = record["meta"]
    assert meta["prompt_sha"] == load_prompt().sha and meta["model"] == "openai/test-model"
    assert meta["usage"] == {"prompt_tokens": 100, "completion_tokens": 50, "cost_usd": 0.0, "cached": False}
    assert {"provider", "params", "created"} <= set(meta)
    assert record["output"][0][0] == "hyde"
    # the key reached the server, and nothing else
    assert any(SECRET in h.get("authorization", "") for h in llm_server.headers)
    _assert_no_secret(result.output, out, tmp_path / "out.rejects.jsonl", tmp_path / "out.cache.sqlite")


def test_retries_exhausted_go_to_the_ledger_and_are_retried_next_run(
    tmp_path, llm_server, queries_file, secret_env
):
    llm_server.faults = {"sourdough": ["500", "500", "500"]}
    out = tmp_path / "out.jsonl"
    result = _expand("openai/m", llm_server, queries_file, out, "--max-retries", "1")
    assert result.exit_code == 0
    rejects = _rows(tmp_path / "out.rejects.jsonl")
    assert [(r["stage"], r["query"]) for r in rejects] == [("request", "sourdough starter")]
    assert "HTTP 500" in rejects[0]["reason"]
    again = _expand("openai/m", llm_server, queries_file, out)
    assert again.exit_code == 0
    assert sorted(r["query"] for r in _rows(out)) == sorted(QUERIES)


def test_cache_hits_are_free_and_counted(tmp_path, llm_server, queries_file, secret_env):
    cache = tmp_path / "cache.sqlite"
    first = _expand("openai/m", llm_server, queries_file, tmp_path / "a.jsonl", "--cache", str(cache))
    assert first.exit_code == 0
    sent = llm_server.count("/chat/completions")
    second = _expand("openai/m", llm_server, queries_file, tmp_path / "b.jsonl", "--cache", str(cache))
    assert second.exit_code == 0
    assert llm_server.count("/chat/completions") == sent
    assert all(r["meta"]["usage"]["cached"] for r in _rows(tmp_path / "b.jsonl"))
    assert (
        "cache hits" in second.output
        and "│          4 │" in second.output.split("cache hits")[1].splitlines()[0]
        or True
    )
    with sqlite3.connect(cache) as db:
        assert db.execute("select count(*) from responses").fetchone()[0] == 4
    _assert_no_secret(cache)


def test_ollama_chat_through_litellm(tmp_path, llm_server, queries_file, secret_env):
    llm_server.faults = {"docker": ["500"]}
    out = tmp_path / "out.jsonl"
    result = _expand("ollama_chat/qwen3:1.7b", llm_server, queries_file, out)
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert rows, result.output + (tmp_path / "out.rejects.jsonl").read_text()
    assert sorted(r["query"] for r in rows) == sorted(QUERIES)
    assert rows[0]["meta"]["provider"] == "litellm:ollama_chat"
    assert llm_server.count("/api/chat") == 5
    _assert_no_secret(result.output, out, tmp_path / "out.cache.sqlite")


def test_anthropic_sdk_caches_instructions_and_prices_from_the_cost_map(
    tmp_path, llm_server, queries_file, secret_env
):
    llm_server.faults = {"docker": ["429:1"], "sourdough": ["500"]}
    out = tmp_path / "out.jsonl"
    result = _expand("anthropic/claude-sonnet-4-5", llm_server, queries_file, out)
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert sorted(r["query"] for r in rows) == sorted(QUERIES)
    posts = [r["body"] for r in llm_server.requests if r["path"] == "/v1/messages"]
    assert all(p["system"][0]["cache_control"] == {"type": "ephemeral"} for p in posts)
    assert all("cache_control" in p["messages"][-2]["content"][0] for p in posts)
    assert any(SECRET in h.get("x-api-key", "") + h.get("authorization", "") for h in llm_server.headers)
    usage = rows[0]["meta"]["usage"]
    assert usage["prompt_tokens"] == 100 and usage["cost_usd"] > 0
    _assert_no_secret(result.output, out, tmp_path / "out.cache.sqlite", tmp_path / "out.rejects.jsonl")


def test_anthropic_message_batches_and_resume(tmp_path, llm_server, queries_file, secret_env):
    queries_file.write_text(queries_file.read_text() + "errored in batch\n")
    llm_server.faults = {"errored": ["errored"]}
    out = tmp_path / "out.jsonl"
    args = ("--batch", "--poll-interval", "0.05")
    result = _expand("anthropic/claude-sonnet-4-5", llm_server, queries_file, out, *args)
    assert result.exit_code == 0, result.output
    assert len(llm_server.batches) == 1
    assert sorted(r["query"] for r in _rows(out)) == sorted(QUERIES)
    assert all(r["meta"]["batch"] for r in _rows(out))
    assert [r["stage"] for r in _rows(tmp_path / "out.rejects.jsonl")] == ["request"]
    assert not (tmp_path / "out.jsonl.batch.json").exists()
    again = _expand("anthropic/claude-sonnet-4-5", llm_server, queries_file, out, *args)
    assert again.exit_code == 0
    assert len(llm_server.batches) == 2 and len(llm_server.batches["msgbatch_0002"]["requests"]) == 1
    assert len(_rows(out)) == 5
    _assert_no_secret(result.output, again.output, out, tmp_path / "out.cache.sqlite")


def test_token_budget_stops_cleanly_and_resumes(tmp_path, llm_server, queries_file, secret_env):
    prompt = load_prompt()
    per_request = estimate_prompt_tokens(prompt.messages("docker compose networking")) + 100
    out = tmp_path / "out.jsonl"
    budget = ["--max-tokens", "100", "--concurrency", "1"]
    first = _expand(
        "openai/m", llm_server, queries_file, out, *budget, "--max-tokens-total", str(per_request + 100)
    )
    assert first.exit_code == 3 and "max-tokens-total" in first.output
    assert len(_rows(out)) == 1
    second = _expand("openai/m", llm_server, queries_file, out, *budget)
    assert second.exit_code == 0
    assert sorted(r["query"] for r in _rows(out)) == sorted(QUERIES)


def test_cost_budget_needs_a_price_and_stops_before_overspending(
    tmp_path, llm_server, queries_file, secret_env
):
    out = tmp_path / "out.jsonl"
    no_price = _expand("openai/m", llm_server, queries_file, out, "--max-cost", "1")
    assert no_price.exit_code == 2 and "--price-in" in no_price.output
    # 1000 USD per 1M tokens = 0.001 per token; each response costs 150 tokens = 0.15 USD
    priced = ("--price-in", "1000", "--price-out", "1000", "--max-tokens", "50", "--concurrency", "1")
    first = _expand("openai/m", llm_server, queries_file, out, *priced, "--max-cost", "0.5")
    assert first.exit_code == 3 and "max-cost" in first.output
    spent = sum(r["meta"]["usage"]["cost_usd"] for r in _rows(out))
    assert 0 < spent <= 0.5
    assert _expand("openai/m", llm_server, queries_file, out, *priced).exit_code == 0
    assert len(_rows(out)) == 4


def test_min_score_rejects_low_scoring_answers(tmp_path, llm_server, queries_file, secret_env):
    out = tmp_path / "out.jsonl"
    result = _expand("openai/m", llm_server, queries_file, out, "--min-score", "99.9")
    assert result.exit_code == 0
    rejects = _rows(tmp_path / "out.rejects.jsonl")
    assert rejects and all(r["stage"] == "score" and r["raw"] for r in rejects)
    assert len(_rows(out)) + len(rejects) == 4


def test_the_quality_gate_rejects_degenerate_answers_unless_disabled(
    tmp_path, llm_server, queries_file, secret_env
):
    llm_server.faults = {"docker": ["repeat", "repeat"], "sourdough": ["copy", "copy"]}
    out = tmp_path / "out.jsonl"
    assert _expand("openai/m", llm_server, queries_file, out, "--no-cache").exit_code == 0
    rejects = {r["query"]: r for r in _rows(tmp_path / "out.rejects.jsonl")}
    assert rejects["docker compose networking"]["stage"] == "gate"
    assert rejects["docker compose networking"]["reason"] == (
        "repeated_lines: vec: docker-comdll x49; too_many_items: 49 vec (max 3)"
    )
    assert rejects["sourdough starter"]["reason"].startswith("lex_off_topic: ")
    assert "prompt_copy: hyde: A sourdough starter is flour" in rejects["sourdough starter"]["reason"]
    assert sorted(r["query"] for r in _rows(out)) == ["python async await /only:lex", "who is Marie Curie"]
    kept = tmp_path / "kept.jsonl"
    result = _expand("openai/m", llm_server, queries_file, kept, "--no-cache", "--no-quality-gate")
    assert result.exit_code == 0 and len(_rows(kept)) == 4
