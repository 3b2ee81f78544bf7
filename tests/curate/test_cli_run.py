"""curate run / analyze / card through the CLI runner and the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from _curate_fixtures import echo, good, write_jsonl
from typer.testing import CliRunner

from qmd_finetune.curate.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent


def config_file(tmp_path: Path) -> Path:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [good(f"garden topic {i}", "home_garden") for i in range(5)] + [echo("auth config"), "oops"],
    )
    config = {
        "input": [str(source)],
        "output": str(tmp_path / "out" / "curated.jsonl"),
        "report": str(tmp_path / "out" / "report.html"),
        "stages": ["validate", "normalize", {"score": {"min_score": 60}}, {"split": {"seed": 1}}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_config_prints_table_and_writes_everything(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(config_file(tmp_path))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "rows in 7 = kept 5 + rejected 2" in result.output
    out = tmp_path / "out"
    for name in ("curated.jsonl", "curated.rejects.jsonl", "curated.run.json", "report.html"):
        assert (out / name).exists(), name
    assert json.loads((out / "curated.run.json").read_text())["stages"][2]["rejected_by_reason"] == {
        "score below 60": 1
    }


def test_run_dry_run_and_overrides(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    result = runner.invoke(app, ["run", "-c", str(config), "-o", str(tmp_path / "x.jsonl"), "--dry-run"])
    assert result.exit_code == 0 and "x.jsonl" in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_run_bad_config_exits_2_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("input: [missing.jsonl]\nstages: [{score: {min: 3}}]\n")
    result = runner.invoke(app, ["run", "-c", str(path)])
    assert result.exit_code == 2 and "unknown option" in result.output


def test_analyze_and_card_commands(tmp_path: Path) -> None:
    runner.invoke(app, ["run", "--config", str(config_file(tmp_path))])
    curated = tmp_path / "out" / "curated.jsonl"
    result = runner.invoke(
        app,
        [
            "analyze",
            "-i",
            str(curated),
            "--html",
            str(tmp_path / "a.html"),
            "--json",
            str(tmp_path / "a.json"),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "score histogram" in result.output and "home_garden" in result.output
    assert json.loads((tmp_path / "a.json").read_text())["rows"] == 5
    result = runner.invoke(app, ["card", "-i", str(curated), "-o", str(tmp_path / "README.md")])
    assert result.exit_code == 0
    assert "Rows in 7 = kept 5 + rejected 2" in (tmp_path / "README.md").read_text()


def test_console_script_runs_a_config(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(BIN / "curate"), "run", "--config", str(config_file(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows in 7 = kept 5 + rejected 2" in proc.stdout
