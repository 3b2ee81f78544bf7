"""``gepa optimize`` offline: the embedded local/smollm2 student, rubric reflection, a tiny budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qmd_finetune.generate import local_llm
from qmd_finetune.gepa.program import prompt_sha
from qmd_finetune.records import coerce_record

pytestmark = pytest.mark.slow


def test_offline_run_with_the_embedded_model_writes_a_consistent_report(tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("docker compose networking\nwho is TDS motorsports\ngit rebase vs merge\n")
    seed = tmp_path / "seed.txt"
    seed.write_text("Expand the search query. Answer with lines starting with hyde:, lex: or vec:.\n")
    run_dir, prompt, program, emitted = (
        tmp_path / "run",
        tmp_path / "prompt.txt",
        tmp_path / "p.json",
        tmp_path / "e.jsonl",
    )
    cmd = [
        str(Path(sys.executable).parent / "gepa"), "optimize",
        "--model", "local/smollm2", "--reflection-model", "rubric", "--train", str(queries),
        "--val-limit", "1", "--max-metric-calls", "4", "--minibatch-size", "2", "--max-tokens", "32",
        "--seed-prompt", str(seed), "--run-dir", str(run_dir), "--save-prompt", str(prompt),
        "--save-program", str(program), "--emit", str(emitted),
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rule-based proposer" in done.stdout and "mean" in done.stdout

    for name in ("run.json", "scores.json", "best_prompt.txt", "report.json", "gepa/gepa_state.bin"):
        assert (run_dir / name).exists(), name
    # no --threads: the embedded model gets one batch's worth of evaluation threads
    assert json.loads((run_dir / "run.json").read_text())["config"]["threads"] == local_llm.MAX_BATCH == 32
    text = prompt.read_text(encoding="utf-8")
    assert text.strip() and (run_dir / "best_prompt.txt").read_text(encoding="utf-8") == text
    assert json.loads(program.read_text())

    report = json.loads((run_dir / "report.json").read_text())
    assert report["model"] == "local/smollm2" and report["val_queries"] == 1 == len(report["per_query"])
    assert sum(report["before"]["ratings"].values()) == sum(report["after"]["ratings"].values()) == 1
    means = report["gepa_val_means"]
    assert report["before"]["mean"] == pytest.approx(means[0] * 100, abs=0.01)
    assert report["after"]["mean"] == pytest.approx(means[report["best_idx"]] * 100, abs=0.01)

    rows = [json.loads(line) for line in emitted.read_text().splitlines()] if emitted.exists() else []
    for row in rows:
        assert coerce_record(row).meta["prompt_sha"] == prompt_sha(text)
    rejects = tmp_path / "e.rejects.jsonl"
    rejected = len(rejects.read_text().splitlines()) if rejects.exists() else 0
    assert len(rows) + rejected == 3


def test_a_model_directory_runs_as_local_dir_with_rubric_reflection_by_default(tmp_path):
    """``--model local/<dir>``: a model the user trained (here the embedded model's own directory,
    a plain model directory as `train sft` writes to merged/) is the student, served by the same
    embedded provider; with no --reflection-model the summary says rubric was chosen."""
    from qmd_finetune.embedded import model_dir

    queries = tmp_path / "queries.txt"
    queries.write_text("docker compose networking\ngit rebase vs merge\n")
    model = f"local/{model_dir()}"
    cmd = [
        str(Path(sys.executable).parent / "gepa"), "optimize", "--model", model, "--train", str(queries),
        "--val-limit", "1", "--max-metric-calls", "2", "--minibatch-size", "1", "--max-tokens", "24",
        "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "reflection: rubric" in done.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["model"] == model and len(report["per_query"]) == 1

    missing = subprocess.run(
        [*cmd[:3], f"local/{tmp_path / 'no-such-model'}", *cmd[4:]], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2 and "unknown local model" in missing.stderr + missing.stdout
    assert "Traceback" not in missing.stderr
