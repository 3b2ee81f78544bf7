"""`generate expand` under hostile conditions: servers that echo the API key in error bodies,
every request failing, a second run on the same output, a shared cache, a full disk."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import invoke

from qmd_finetune.generate.cache import ResponseCache

PLAIN_SECRET = "Zq7plainCredential42xK"
"""A key with no recognisable shape: only knowing the environment variable can hide it."""
REPO = Path(__file__).resolve().parents[2]

PATHS = {
    "openai-aiohttp": ("openai/test-model", ["--client", "auto"]),
    "openai-litellm": ("openai/test-model", ["--client", "litellm"]),
    "ollama_chat": ("ollama_chat/qwen3:1.7b", []),
    "anthropic-sdk": ("anthropic/claude-sonnet-4-5", []),
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _expand(model: str, server, queries: Path, out: Path, *extra: str):
    args = ["expand", "--model", model, "--queries", str(queries), "--output", str(out)]
    args += ["--api-base", server.url + ("/v1" if model.startswith("openai/") else ""), "--no-progress"]
    return invoke(args + list(extra))


def _everything_written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("status", ["echo401", "echo500"])
@pytest.mark.parametrize("path", list(PATHS))
def test_keys_echoed_in_error_bodies_are_never_written(
    tmp_path, llm_server, queries_file, monkeypatch, path, status
) -> None:
    model, extra = PATHS[path]
    monkeypatch.setenv("QMD_PLAIN_CREDENTIAL", PLAIN_SECRET)
    llm_server.faults = {q: [status] for q in ("docker", "sourdough", "Marie", "python")}
    out = tmp_path / "run" / "out.jsonl"
    result = _expand(
        model,
        llm_server,
        queries_file,
        out,
        "--api-key-env",
        "QMD_PLAIN_CREDENTIAL",
        "--max-retries",
        "0",
        *extra,
    )
    sent = [h.get("authorization", "") + h.get("x-api-key", "") for h in llm_server.headers]
    assert any(PLAIN_SECRET in h for h in sent), "the key never reached the server"
    assert result.exit_code == 4, result.output
    assert "all 4 requests failed" in result.output
    rejects = _rows(tmp_path / "run" / "out.rejects.jsonl")
    assert [r["stage"] for r in rejects] == ["request"] * 4
    for row in rejects:
        assert row["raw"] and "rejected" in row["raw"], "the response body is kept for the ledger"
        assert "***" in row["raw"] or "REDACTED" in row["raw"]  # LiteLLM masks some bodies itself
    assert PLAIN_SECRET not in result.output
    assert PLAIN_SECRET.encode() not in _everything_written(tmp_path / "run")


def test_raw_body_of_a_request_reject_is_capped(tmp_path, llm_server, queries_file, secret_env) -> None:
    llm_server.faults = {"docker": ["echo500"]}
    out = tmp_path / "out.jsonl"
    result = _expand(
        "openai/m", llm_server, queries_file, out, "--max-retries", "0", "--api-key-env", "TEST_LLM_KEY"
    )
    assert result.exit_code == 0, result.output
    (row,) = _rows(tmp_path / "out.rejects.jsonl")
    assert row["stage"] == "request" and len(row["raw"]) <= 4000
    assert "Bearer ***" in row["raw"] and "HTTP 500" in row["reason"]


def test_a_second_run_on_the_same_output_refuses_naming_the_pid(
    tmp_path, llm_server, queries_file, hold_lock
) -> None:
    out = tmp_path / "out.jsonl"
    child = hold_lock(out)
    result = _expand("openai/m", llm_server, queries_file, out)
    assert result.exit_code == 2
    assert f"in use by another run (PID {child.pid})" in result.output
    assert llm_server.count("/chat/completions") == 0 and not out.exists()


def test_a_second_run_on_the_same_cache_refuses(tmp_path, llm_server, queries_file, hold_lock) -> None:
    cache = tmp_path / "shared.sqlite"
    hold_lock(cache)
    result = _expand("openai/m", llm_server, queries_file, tmp_path / "b.jsonl", "--cache", str(cache))
    assert result.exit_code == 2 and "response cache is in use by another run" in result.output


WRITE_MANY = """
import sys
from qmd_finetune.generate.cache import ResponseCache

path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = ResponseCache(path)
for i in range(start, start + count):
    cache.put(f"k{i}", "m", [{"role": "user", "content": f"q{i}"}], {"max_tokens": 1}, f"lex: {i}", 1, 1, 0.0)
    assert cache.get(f"k{i}") is not None
cache.close()
"""


@pytest.mark.parametrize("processes", [2, 6])
def test_processes_sharing_a_new_cache_do_not_crash(tmp_path, processes) -> None:
    # Real processes started with `python -c` (not multiprocessing, whose children re-import
    # this test module and, in a whole-suite run, pick up another directory's conftest). They
    # open the same new file at once: sqlite refused the switch to WAL there without waiting
    # ("database is locked", CI at bb73c8a), and an answer committed between the first put and
    # the first get was missed. Each failed about one start in twelve with six processes.
    for attempt in range(5):
        path = str(tmp_path / f"shared{attempt}.sqlite")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITE_MANY, path, str(n * 1000), "300"],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(processes)
        ]
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
        assert [w.returncode for w in workers] == [0] * processes, errors
        assert len(ResponseCache(path)) == 300 * processes


def test_expand_on_a_full_disk_fails_in_one_line_without_a_partial_line(
    tmp_path, llm_server, queries_file, small_disk, fill_disk
) -> None:
    out = small_disk / "out.jsonl"
    queries_file.write_text("".join(f"garden topic number {i}\n" for i in range(60)))
    fill_disk(small_disk, 8 * 1024)  # room for the lock file and a few records, not 60
    result = _expand("openai/m", llm_server, queries_file, out, "--no-cache", "--concurrency", "1")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk full" in errors[0], result.output
    for name in ("out.jsonl", "out.rejects.jsonl"):
        data = (small_disk / name).read_bytes() if (small_disk / name).exists() else b""
        assert data == b"" or data.endswith(b"\n"), f"{name} holds a partial line"
        for line in data.splitlines():
            json.loads(line)


def test_queries_without_visible_characters_go_to_the_ledger_and_the_others_run(tmp_path, llm_server) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text(
        "sourdough starter\n\u200b\u200c\u200d\ufeff\nabc\u0007\nkafka lag\n", encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    for _ in range(2):  # a second run (resume) neither re-rejects nor re-sends them
        result = _expand("openai/m", llm_server, queries, out)
        assert result.exit_code == 0, result.output
    kept = [json.loads(line)["query"] for line in out.read_text().splitlines()]
    assert sorted(kept) == ["kafka lag", "sourdough starter"]
    ledger = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["stage"], r["reason"]) for r in ledger] == [
        (2, "query", "query has no visible characters"),
        (3, "query", "control character in query"),
    ]
    assert all(r["source"] == str(queries) for r in ledger)


def test_a_fifo_as_queries_file_is_refused_at_once(tmp_path, llm_server) -> None:
    fifo = tmp_path / "q.txt"
    os.mkfifo(fifo)
    result = _expand("openai/m", llm_server, fifo, tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "is a FIFO" in result.output


def test_cache_on_a_full_disk_fails_in_one_line(
    tmp_path, llm_server, queries_file, small_disk, fill_disk
) -> None:
    cache = small_disk / "cache.sqlite"
    fill_disk(small_disk, 8 * 1024)
    out = tmp_path / "out.jsonl"
    result = _expand("openai/m", llm_server, queries_file, out, "--cache", str(cache))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "response cache failed (database or disk is full)" in errors[0], result.output
    assert "Traceback" not in result.output


def test_opening_a_cache_another_connection_is_reading_waits_for_it(tmp_path) -> None:
    # The switch to WAL needs the file to itself: opening waits for another connection's read.
    path = tmp_path / "busy.sqlite"
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("CREATE TABLE t (x)")
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()  # a shared lock, held until COMMIT
    timer = threading.Timer(0.5, lambda: reader.execute("COMMIT"))
    timer.start()
    try:
        cache = ResponseCache(path)
    finally:
        timer.join()
    cache.put("k", "m", [{"role": "user", "content": "q"}], {}, "lex: a", 1, 1, 0.0)
    assert len(cache) == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()
