"""Every kind of bad input in tests/bad_inputs.py through `curate validate`, `balance` and `run`:
no traceback, a file:line reason for each bad row (or one line naming an unreadable file),
and rows in = kept + rejected."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from qmd_finetune.curate.cli import app
from qmd_finetune.io import read_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bad_inputs import ALL_KINDS, BAD_AT, FILE_KINDS, ROW_KINDS, UNKNOWN, Kind, write_kind  # noqa: E402

runner = CliRunner()
READABLE_FILE_KINDS = [k for k in FILE_KINDS if not k.file_kind]
UNREADABLE = [k for k in FILE_KINDS if k.file_kind]


def test_the_corpus_has_at_least_50_kinds() -> None:
    assert len(ALL_KINDS) >= 50
    assert len({k.name for k in ALL_KINDS}) == len(ALL_KINDS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-inputs")
    return {kind.name: write_kind(kind, folder) for kind in ALL_KINDS}


def invoke(args: list[str]):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert "Traceback" not in result.output
    return result


def ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_one_line_error(result, path: Path, kind: Kind) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}: {kind.error}"), lines[0]


def check_read_rows(kind: Kind, path: Path, rows: list[dict], counts: dict) -> None:
    """The file's counts add up and each rejected row names this file, its line and a reason."""
    assert counts["rows"] == counts["valid"] + counts["invalid"]
    if kind.rows != UNKNOWN:
        assert counts["rows"] == kind.expected_rows(), counts
        assert counts["invalid"] == kind.bad, (counts, rows)
    mine = [r for r in rows if r["source"] == str(path)]
    assert len(mine) == counts["invalid"]
    for row in mine:
        assert isinstance(row["line"], int) and row["line"] >= 1 and row["reason"], row
    if kind in ROW_KINDS and kind.bad:
        assert [r["line"] for r in mine] == [BAD_AT]


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.name)
def test_validate_each_kind(corpus: dict[str, Path], kind: Kind, tmp_path: Path) -> None:
    path = corpus[kind.name]
    rejects = tmp_path / "rejects.jsonl"
    result = invoke(["validate", "--input", path, "--rejects", rejects, "--allow-invalid"])
    if kind.file_kind:
        check_one_line_error(result, path, kind)
        return
    assert result.exit_code == 0, result.output
    read = read_records([path])
    counts = read.files[0].to_dict()
    check_read_rows(kind, path, ledger(rejects), counts)
    if kind.bad and kind.rows != UNKNOWN:
        reason = ledger(rejects)[0]["reason"]
        assert f"{path}:{ledger(rejects)[0]['line']}: {reason}" in result.output.replace("\n", "")


def check_run(kind_paths: list[tuple[Kind, Path]], out: Path, name: str) -> None:
    summary = json.loads((out / f"{name}.run.json").read_text())
    rows = ledger(out / f"{name}.rejects.jsonl")
    assert summary["rows_in"] == summary["kept"] + summary["rejected"]
    assert len(rows) == summary["rejected"]
    kept = (out / f"{name}.jsonl").read_text().splitlines()
    assert len(kept) == summary["kept"]
    by_path = {item["path"]: item for item in summary["inputs"]}
    read_rejects = [r for r in rows if r["stage"] == "validate"]
    for kind, path in kind_paths:
        check_read_rows(kind, path, read_rejects, by_path[str(path)])


def test_balance_reads_every_readable_kind(corpus: dict[str, Path], tmp_path: Path) -> None:
    kinds = [(k, corpus[k.name]) for k in ROW_KINDS + READABLE_FILE_KINDS]
    out = tmp_path / "out"
    result = invoke(["balance", "--input", *[p for _, p in kinds], "--output", out / "b.jsonl"])
    assert result.exit_code == 0, result.output
    check_run(kinds, out, "b")
    assert (out / "b.plan.json").exists()


def test_run_with_a_report_reads_every_readable_kind(corpus: dict[str, Path], tmp_path: Path) -> None:
    kinds = [(k, corpus[k.name]) for k in ROW_KINDS + READABLE_FILE_KINDS]
    out = tmp_path / "out"
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": [str(p) for _, p in kinds],
                "output": str(out / "c.jsonl"),
                "report": str(out / "c.html"),
                "stages": [
                    "validate",
                    "normalize",
                    "clean",
                    "dedup",
                    {"score": {"min_score": 40}},
                    "balance",
                ],
            }
        )
    )
    result = invoke(["run", "--config", config])
    assert result.exit_code == 0, result.output
    check_run(kinds, out, "c")
    assert "<html" in (out / "c.html").read_text()


@pytest.mark.parametrize("kind", READABLE_FILE_KINDS, ids=lambda k: k.name)
def test_run_with_a_report_on_a_file_of_its_own(corpus: dict[str, Path], kind: Kind, tmp_path: Path) -> None:
    """Files where no row survives (the empty report) or the data ends early."""
    path = corpus[kind.name]
    out = tmp_path / "out"
    result = invoke(["run", "--config", write_config(tmp_path, path, out), "--report", out / "c.html"])
    assert result.exit_code in (0, 1), result.output  # 1: nothing valid was read
    check_run([(kind, path)], out, "c")
    assert "<html" in (out / "c.html").read_text()


def write_config(tmp_path: Path, path: Path, out: Path) -> Path:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": [str(path)],
                "output": str(out / "c.jsonl"),
                "stages": ["validate", "normalize", "score"],
            }
        )
    )
    return config


@pytest.mark.parametrize("kind", UNREADABLE, ids=lambda k: k.name)
@pytest.mark.parametrize("command", ["balance", "run"])
def test_unreadable_kinds_stop_balance_and_run_in_one_line(
    corpus: dict[str, Path], kind: Kind, command: str, tmp_path: Path
) -> None:
    path = corpus[kind.name]
    out = tmp_path / "out"
    if command == "balance":
        result = invoke(["balance", "--input", path, "--output", out / "b.jsonl"])
    else:
        result = invoke(["run", "--config", write_config(tmp_path, path, out)])
    check_one_line_error(result, path, kind)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
