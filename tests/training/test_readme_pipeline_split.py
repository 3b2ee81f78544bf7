"""The README's "pipeline in one go", curate to train prepare: curate's test rows never reach training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _queries(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["query"].strip().lower() for line in lines if line.strip()}


@pytest.mark.slow
def test_no_query_of_curates_test_split_appears_in_the_training_file(tmp_path: Path) -> None:
    demo = ROOT / "data" / "demo.jsonl"
    _run("curate", "balance", "--input", str(demo), "--output", "out/balanced.jsonl", cwd=tmp_path)
    _run(
        "curate", "split", "--input", "out/balanced.jsonl", "--output", "out/split.jsonl",
        "--split-dir", "out/splits", "--fractions", "0.6,0.2,0.2", cwd=tmp_path,
    )  # fmt: skip
    _run("train", "prepare", "--input", "out/split.jsonl", "--output", "out/train", cwd=tmp_path)
    test_queries = _queries(tmp_path / "out" / "splits" / "test.jsonl")
    train_queries = _queries(tmp_path / "out" / "train" / "train.jsonl")
    assert test_queries and train_queries
    assert not test_queries & train_queries
    assert _queries(tmp_path / "out" / "train" / "test.jsonl") == test_queries
