"""curate under faults: empty results, a full disk, a second run on the same output, bad paths.

Outputs follow one rule: output, ledger, summary, plan, splits and report are written
together when the run succeeds, atomically, or not at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _curate_fixtures import good, write_jsonl
from typer.testing import CliRunner

from qmd_finetune.curate.cli import app
from qmd_finetune.locks import lock_path

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def invoke(args: list[str]):
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def run_config(tmp_path: Path, inputs: list[Path], out: Path, stages: list) -> Path:
    import yaml

    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": [str(p) for p in inputs],
                "output": str(out / "c.jsonl"),
                "report": str(out / "r.html"),
                "stages": stages,
            }
        )
    )
    return config


def test_run_with_report_when_no_row_survives_writes_an_empty_report(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic {i}") for i in range(3)])
    out = tmp_path / "out"
    config = run_config(tmp_path, [source], out, ["validate", {"score": {"min_score": 101}}])
    result = invoke(["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "rows in 3 = kept 0 + rejected 3" in result.output
    assert (out / "c.jsonl").read_text() == ""
    assert "<html" in (out / "r.html").read_text()
    assert json.loads((out / "c.run.json").read_text())["kept"] == 0


def test_run_with_report_when_nothing_valid_is_read(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ['{"query": "\\u200b", "output": [["lex", "a"]]}', "oops"])
    out = tmp_path / "out"
    result = invoke(["run", "--config", str(run_config(tmp_path, [source], out, ["validate", "normalize"]))])
    assert result.exit_code == 1 and "nothing valid was read" in result.output
    assert "<html" in (out / "r.html").read_text()
    ledger = [json.loads(line) for line in (out / "c.rejects.jsonl").read_text().splitlines()]
    assert [(row["line"], row["reason"]) for row in ledger] == [
        (1, "query has no visible characters"),
        (2, "invalid JSON: Expecting value (column 1)"),
    ]


def balance_args(source: Path, out: Path) -> list[str]:
    return [
        "balance",
        "--input",
        str(source),
        "--output",
        str(out / "b.jsonl"),
        "--report",
        str(out / "b.html"),
    ]


def test_balance_on_a_full_disk_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, small_disk: Path, fill_disk
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic number {i}") for i in range(400)])
    out = small_disk / "out"
    out.mkdir()
    fill_disk(small_disk, 16 * 1024)
    result = invoke(balance_args(source, out))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "disk full" in lines[0], result.output
    assert sorted(p.name for p in out.iterdir()) == [], "a partial output, plan or temp file was left"


def test_validate_rejects_on_a_full_disk_is_one_line(tmp_path: Path, small_disk: Path, fill_disk) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ["bad line " + "x" * 200] * 400)
    fill_disk(small_disk, 8 * 1024)
    result = invoke(
        ["validate", "--input", str(source), "--rejects", str(small_disk / "r.jsonl"), "--allow-invalid"]
    )
    assert result.exit_code == 2
    assert "disk full" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_plan_and_splits_are_written_with_the_output_only(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic {i}", "home_garden") for i in range(6)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.jsonl").mkdir()  # the output cannot be written: the run fails at the end
    config = run_config(
        tmp_path,
        [source],
        out,
        [
            "validate",
            {"balance": {"plan": str(out / "plan.json")}},
            {"split": {"output_dir": str(out / "splits")}},
        ],
    )
    result = invoke(["run", "--config", str(config)])
    assert result.exit_code == 2, result.output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [], "plan, splits or report written by a failed run"


def test_second_run_on_the_same_output_refuses_naming_the_pid(tmp_path: Path, hold_lock) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic {i}") for i in range(5)])
    out = tmp_path / "out"
    child = hold_lock(out / "b.jsonl")
    result = invoke(balance_args(source, out))
    assert result.exit_code == 2
    assert f"in use by another run (PID {child.pid})" in result.output
    assert not (out / "b.jsonl").exists()


def test_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path, hold_lock) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic {i}") for i in range(5)])
    out = tmp_path / "out"
    child = hold_lock(out / "b.jsonl")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock_path(out / "b.jsonl").read_text().split()[0] == str(child.pid)
    result = invoke(balance_args(source, out))
    assert result.exit_code == 0, result.output
    assert (out / "b.jsonl").exists() and not lock_path(out / "b.jsonl").exists()


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic {i}") for i in range(5)])
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in ("b.jsonl", "b.plan.json", "b.run.json"):
        (out / f".{name}.{dead.pid}.x1y2z3.tmp").write_text("partial")
    time.sleep(0)
    assert invoke(balance_args(source, out)).exit_code == 0
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["fifo", "loop", "directory"])
def test_unreadable_inputs_fail_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "in.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(tmp_path / "other.jsonl")
        (tmp_path / "other.jsonl").symlink_to(path)
    else:
        path.mkdir()
    for args in (
        ["validate", "--input", str(path)],
        balance_args(path, tmp_path / "out"),
    ):
        result = invoke(args)
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.output


def test_analyze_writes_its_ledger_json_and_html_together_or_not_at_all(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good("docker compose networking"), "{not json"])
    blocked = tmp_path / "report.html"
    blocked.mkdir()  # the HTML cannot be written: a directory is in the way
    args = ["analyze", "--input", str(source), "--json", str(tmp_path / "stats.json")]
    args += ["--html", str(blocked), "--rejects", str(tmp_path / "bad.jsonl")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "is a directory; nothing was written" in result.output
    assert not (tmp_path / "stats.json").exists() and not (tmp_path / "bad.jsonl").exists()
    result = CliRunner().invoke(app, [*args[:-4], "--html", str(tmp_path / "ok.html"), *args[-2:]])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "stats.json").is_file() and (tmp_path / "ok.html").is_file()
    assert (tmp_path / "bad.jsonl").read_text().count("\n") == 1
