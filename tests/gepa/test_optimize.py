"""``gepa optimize`` end to end against a local OpenAI-compatible server (real LiteLLM, real DSPy GEPA)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.gepa.cli import app
from qmd_finetune.gepa.program import QueryExpander, prompt_sha
from qmd_finetune.gepa.rubric import RULES
from qmd_finetune.records import coerce_record

SEED = "Expand the search query into hyde, lex and vec lines."
runner = CliRunner()


def optimize_args(
    server, query_file: Path, tmp_path: Path, run_dir: Path, budget: int, *extra: str
) -> list[str]:
    seed = tmp_path / "seed.txt"
    seed.write_text(SEED + "\n", encoding="utf-8")
    return [
        "optimize",
        "--model", "openai/fake-expander",
        "--api-base", server.api_base,
        "--reflection-model", "rubric",
        "--train", str(query_file),
        "--val-limit", "3",
        "--max-metric-calls", str(budget),
        "--seed-prompt", str(seed),
        "--run-dir", str(run_dir),
        "--save-prompt", str(tmp_path / "prompt.txt"),
        "--threads", "2",
        *extra,
    ]  # fmt: skip


def run_cli(args: list[str]):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_optimize_improves_the_prompt_and_writes_every_output(chat_server, query_file, tmp_path):
    run_dir = tmp_path / "run"
    program_path = tmp_path / "program.json"
    emit_path = tmp_path / "emitted.jsonl"
    result = run_cli(
        optimize_args(
            chat_server,
            query_file,
            tmp_path,
            run_dir,
            40,
            "--save-program",
            str(program_path),
            "--emit",
            str(emit_path),
        )
    )
    assert "rule-based proposer" in result.output and "mean" in result.output

    prompt = (tmp_path / "prompt.txt").read_text(encoding="utf-8").strip()
    assert prompt.startswith(SEED) and RULES["format"] in prompt
    assert (run_dir / "best_prompt.txt").read_text(encoding="utf-8").strip() == prompt

    report = json.loads((run_dir / "report.json").read_text())
    assert report["after"]["mean"] > report["before"]["mean"]
    assert report["val_queries"] == 3 == len(report["per_query"]) == sum(report["before"]["ratings"].values())
    assert sum(report["after"]["ratings"].values()) == 3
    means = report["gepa_val_means"]
    assert report["before"]["mean"] == pytest.approx(means[0] * 100, abs=0.01)
    assert report["after"]["mean"] == pytest.approx(means[report["best_idx"]] * 100, abs=0.01)
    for row in report["per_query"]:
        assert row["delta"] == pytest.approx(row["after"] - row["before"], abs=0.05)
    assert report["delta_mean"] == pytest.approx(report["after"]["mean"] - report["before"]["mean"], abs=0.01)
    assert report["metric_calls"] <= 40 + 3 + 3  # GEPA finishes the iteration it is in

    scores = json.loads((run_dir / "scores.json").read_text())
    assert len(scores["candidates"]) == report["candidates"] >= 2
    assert scores["candidates"][scores["best_idx"]]["instruction"] == prompt
    assert scores["candidates"][0]["instruction"] == SEED
    proposals = [json.loads(line) for line in (run_dir / "rubric_proposals.jsonl").read_text().splitlines()]
    assert proposals and proposals[0]["edits"]

    program = QueryExpander("placeholder")
    program.load(str(program_path))
    assert program.instruction == prompt

    records = [json.loads(line) for line in emit_path.read_text().splitlines()]
    assert len(records) == 8
    for row in records:
        record = coerce_record(row)
        assert record.meta["prompt_sha"] == prompt_sha(prompt)
        assert record.meta["model"] == "openai/fake-expander" and record.meta["source"] == "gepa"


def test_rerun_with_the_same_run_dir_resumes_instead_of_restarting(chat_server, query_file, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(optimize_args(chat_server, query_file, tmp_path, run_dir, 12))
    first = json.loads((run_dir / "scores.json").read_text())
    calls_after_first = len(chat_server.requests)

    run_cli(optimize_args(chat_server, query_file, tmp_path, run_dir, 30))
    second = json.loads((run_dir / "scores.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["resumed"] is True
    assert second["iteration"] > first["iteration"]
    assert second["metric_calls"] > first["metric_calls"]
    assert [c["instruction"] for c in second["candidates"][: len(first["candidates"])]] == [
        c["instruction"] for c in first["candidates"]
    ]
    # The seed's validation pass was answered from the run's cache, not the server.
    seed_requests = [
        r for r in chat_server.requests[calls_after_first:] if r["messages"][0]["content"] == SEED
    ]
    assert seed_requests == []

    # Budget already spent: a third run changes nothing and calls no model.
    calls_before_third = len(chat_server.requests)
    run_cli(optimize_args(chat_server, query_file, tmp_path, run_dir, 30))
    assert len(chat_server.requests) == calls_before_third
    assert json.loads((run_dir / "scores.json").read_text())["candidates"] == second["candidates"]


@pytest.mark.slow
def test_killed_run_continues_from_its_saved_state(slow_chat_server, query_file, tmp_path):
    server = slow_chat_server
    run_dir = tmp_path / "run"
    args = optimize_args(server, query_file, tmp_path, run_dir, 60)
    args[args.index("--threads") + 1] = "1"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gepa"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    scores_path = run_dir / "scores.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if scores_path.exists() and json.loads(scores_path.read_text())["iteration"] >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before_kill = json.loads(scores_path.read_text())
    requests_at_kill = len(server.requests)

    run_cli(args)
    after = json.loads(scores_path.read_text())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["resumed"] is True
    assert (
        after["iteration"] > before_kill["iteration"] and after["metric_calls"] > before_kill["metric_calls"]
    )
    assert [c["instruction"] for c in after["candidates"][: len(before_kill["candidates"])]] == [
        c["instruction"] for c in before_kill["candidates"]
    ]
    resumed_requests = server.requests[requests_at_kill:]
    assert not [r for r in resumed_requests if r["messages"][0]["content"] == SEED]


def test_max_full_evals_budget_counts_train_plus_val(chat_server, query_file, tmp_path):
    args = optimize_args(chat_server, query_file, tmp_path, tmp_path / "run", 1)
    budget_at = args.index("--max-metric-calls")
    args[budget_at : budget_at + 2] = ["--max-full-evals", "2"]
    result = run_cli(args)
    assert "budget 16" in result.output  # 2 x (5 train + 3 val)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["budget"] == 16 and report["metric_calls"] <= 16 + 3 + 3
