"""`train eval` checks every argument before loading a model, and takes a `train sft` output dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.training.cli import app

EVAL_ARGS = ["--max-new-tokens", "32", "--dtype", "fp32", "--threads", "1", "--batch-size", "3"]

PROBE = """
import sys
from qmd_finetune.training.cli import app
try:
    app(sys.argv[1:], prog_name="train")
except SystemExit as exit:
    loaded = [m for m in sys.modules if m.startswith("transformers.models.") and "modeling" in m]
    print("EXIT", exit.code, "MODELING", loaded)
"""


def _probe(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)


def test_bad_compare_fails_before_any_model_is_loaded(queries_file: Path) -> None:
    done = _probe(
        ["eval", "--model", "local/smollm2", "--queries", str(queries_file), "--compare", "/no/such/path"]
    )
    assert "EXIT 2 MODELING []" in done.stdout, done.stdout + done.stderr
    assert "--compare: model not found: /no/such/path" in done.stderr
    done = _probe(["eval", "--model", "local/smollm2", "--queries", str(queries_file), "--rubric", "v9"])
    assert "EXIT 2 MODELING []" in done.stdout and "v9" in done.stderr, done.stdout + done.stderr


def test_every_bad_argument_is_reported_at_once(tmp_path: Path) -> None:
    not_a_report = tmp_path / "other.json"
    not_a_report.write_text("[1, 2]", encoding="utf-8")
    broken = tmp_path / "q.jsonl"
    broken.write_text('{"query": "ok"}\n{"query": \n', encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "eval", "--model", str(tmp_path / "missing"), "--queries", str(broken),
            "--compare", str(not_a_report), "--output", str(tmp_path), "--limit", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "--limit must be at least 1 (got 0)" in out
    assert "--model: model not found" in out
    assert f"--queries: {broken}:2: not JSON" in out
    assert f"--compare: {not_a_report} is not a train eval report" in out
    assert f"--output: {tmp_path} is a directory" in out
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_train_sft_dir_is_evaluated_by_its_merged_model_else_its_adapter(
    trained: Path, queries_file: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    report = tmp_path / "sft.json"
    result = runner.invoke(
        app, ["eval", "--model", str(trained), "--queries", str(queries_file), "-o", str(report), *EVAL_ARGS]
    )
    assert result.exit_code == 0, result.output
    loaded = json.loads(report.read_text())["loaded"]
    assert loaded.startswith(f"merged model {trained / 'merged'}") and "its merged model" in loaded
    assert "its merged model" in " ".join(result.output.split())

    unmerged = tmp_path / "sft-unmerged"
    shutil.copytree(trained / "adapter", unmerged / "adapter")
    result = runner.invoke(
        app, ["eval", "--model", str(unmerged), "--queries", str(queries_file), *EVAL_ARGS]
    )
    assert result.exit_code == 0, result.output
    assert f"adapter {unmerged / 'adapter'} on base local/smollm2" in " ".join(result.output.split())
    assert "its adapter (no merged/ model in it)" in " ".join(result.output.split())


@pytest.mark.slow
def test_int8_eval_names_its_dtype_and_a_bad_dtype_fails_first(queries_file: Path, tmp_path: Path) -> None:
    done = _probe(["eval", "--model", "local/smollm2", "--queries", str(queries_file), "--dtype", "int4"])
    assert "EXIT 2 MODELING []" in done.stdout, done.stdout + done.stderr
    assert "--dtype must be auto, fp32, bf16 or int8, not 'int4'" in done.stderr
    report = tmp_path / "int8.json"
    args = ["--max-new-tokens", "32", "--threads", "1", "--limit", "1", "-o", str(report)]
    result = CliRunner().invoke(
        app, ["eval", "--model", "local/smollm2", "--queries", str(queries_file), "--dtype", "int8", *args]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["dtype"] == "int8 (dynamic, per channel)" and len(data["results"]) == 1
