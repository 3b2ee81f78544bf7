"""`curate validate` and `curate score` through the real console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
GOOD = {
    "query": "who is TDS motorsports",
    "output": [
        ["lex", "TDS motorsports history"],
        ["lex", "TDS motorsports founders"],
        ["vec", "information about TDS motorsports company"],
    ],
}
ECHO = {
    "query": "auth config",
    "output": [["lex", "auth config"], ["vec", "how do i configure authentication"]],
}


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=120
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_reports_counts_and_first_invalid_rows(tmp_path: Path) -> None:
    data = write(
        tmp_path / "a.jsonl",
        [json.dumps(GOOD), "{broken", json.dumps({"query": "q", "output": [["lexx", "a"]]})],
    )
    ledger = tmp_path / "rejects.jsonl"
    result = run("curate", "validate", "--input", str(data), "--show", "5", "--rejects", str(ledger))
    assert result.returncode == 1
    assert f"{data}:2: invalid JSON" in result.stdout
    assert f"{data}:3: unknown kind 'lexx'" in result.stdout
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["line"], r["stage"]) for r in rows] == [(2, "validate"), (3, "validate")]


def test_validate_allow_invalid_exits_zero_and_accepts_several_inputs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [json.dumps(GOOD), "nope"])
    b = write(tmp_path / "b.jsonl", [json.dumps(ECHO)])
    result = run("curate", "validate", "--input", str(a), str(b), "--allow-invalid")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "total" in result.stdout


def test_validate_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run("curate", "validate", "--input", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert "no such file" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_score_adds_columns_and_sends_low_rows_to_ledger(tmp_path: Path) -> None:
    data = write(tmp_path / "in.jsonl", [json.dumps(GOOD), json.dumps(ECHO), "not json"])
    out = tmp_path / "scored.jsonl"
    result = run("curate", "score", "--input", str(data), "--output", str(out), "--min-score", "70")
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["query"], r["score"], r["rating"]) for r in kept] == [
        ("who is TDS motorsports", 100.0, "Excellent")
    ]
    ledger = [json.loads(line) for line in (tmp_path / "scored.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["stage"] for r in ledger) == ["read", "score"]
    low = next(r for r in ledger if r["stage"] == "score")
    assert low["reason"] == "score 50.0 < min-score 70.0"
    assert json.loads(low["raw"])["deductions"][0].startswith("lex echoes query")
    assert "rows in 3 = kept 1 + rejected 2" in result.stdout
    assert "share >= 70" in result.stdout


def test_every_command_has_help() -> None:
    for command in ("curate", "generate", "gepa", "train"):
        result = run(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
