"""curate normalize / clean / split / leakage / balance --stage-only through the CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

from _curate_fixtures import echo, good, write_jsonl
from typer.testing import CliRunner

from qmd_finetune.curate.cli import app
from qmd_finetune.io import read_frame

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def data(tmp_path: Path) -> Path:
    records = [
        good("docker compose networking", "technology"),
        {"input": "  Docker Compose   Networking only: lex ", "output": "LEX: docker compose bridge"},
        echo("auth config", "technology"),
        good("sourdough bread", "food_cooking"),
        '{"query": broken',
    ]
    return write_jsonl(tmp_path / "in.jsonl", records)


def ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_normalize_prints_the_stage_table_and_writes_the_ledger_beside_the_output(tmp_path: Path) -> None:
    result = invoke("normalize", "-i", str(data(tmp_path)), "-o", str(tmp_path / "n.jsonl"))
    assert result.exit_code == 0
    assert "normalize" in result.output and "rows in 5 = kept 4 + rejected 1" in result.output
    assert "modernized_only_mode: 1" in result.output
    rows = read_frame([tmp_path / "n.jsonl"]).frame
    assert "Docker Compose Networking /only:lex" in rows.get_column("query").to_list()
    assert [r["stage"] for r in ledger(tmp_path / "n.rejects.jsonl")] == ["validate"]


def test_clean_takes_fix_and_action_overrides(tmp_path: Path) -> None:
    out, rejects = tmp_path / "c.jsonl", tmp_path / "ledger.jsonl"
    result = invoke(
        "clean",
        "-i",
        str(data(tmp_path)),
        "-o",
        str(out),
        "--rejects",
        str(rejects),
        "--fix",
        "--action",
        "echo=reject",
    )
    assert result.exit_code == 0, result.output
    stages = {r["stage"] for r in ledger(rejects)}
    assert "clean" in stages


def test_split_and_leakage_commands(tmp_path: Path) -> None:
    split_out = tmp_path / "s.jsonl"
    result = invoke(
        "split", "-i", str(data(tmp_path)), "-o", str(split_out), "--split-dir", str(tmp_path / "splits")
    )
    assert result.exit_code == 0 and (tmp_path / "splits" / "train.jsonl").exists()
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text("# evals\ndocker compose networking\n")
    result = invoke(
        "leakage",
        "-i",
        str(split_out),
        "-o",
        str(tmp_path / "l.jsonl"),
        "--eval",
        str(eval_file),
        "--drop-leaks",
    )
    assert result.exit_code == 0
    assert "leaks: 1 exact" in result.output
    rejected = [r["reason"] for r in ledger(tmp_path / "l.rejects.jsonl")]
    kept_leak = '"leak":"exact: docker compose networking"' in (tmp_path / "l.jsonl").read_text()
    assert rejected == ["eval leak (exact)"] or (rejected == [] and kept_leak)


def test_balance_stage_only_with_flag_targets_writes_the_plan(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"tech {i}", "technology") for i in range(5)])
    out = tmp_path / "b.jsonl"
    result = invoke(
        "balance",
        "-i",
        str(source),
        "-o",
        str(out),
        "--stage-only",
        "--target",
        "technology=2",
        "--target",
        "history=3",
    )
    assert result.exit_code == 0, result.output
    assert "category over target: technology: 3" in result.output
    assert json.loads((tmp_path / "b.plan.json").read_text()) == {
        "categories": {"history": 3},
        "facets": {},
        "total_needed": 3,
        "targets": {"total": 5, "categories": {"technology": 2, "history": 3}, "facets": {}, "default": None},
    }
    assert "generation plan: 3 more queries needed" in result.output


def test_bad_target_flag_and_missing_input_exit_2(tmp_path: Path) -> None:
    assert (
        invoke(
            "balance", "-i", str(data(tmp_path)), "-o", str(tmp_path / "b.jsonl"), "--target", "x"
        ).exit_code
        == 2
    )
    assert invoke("split", "-i", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "s.jsonl")).exit_code == 2


def test_nothing_valid_read_exits_1(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "bad.jsonl", ["not json", "{}"])
    assert invoke("normalize", "-i", str(source), "-o", str(tmp_path / "n.jsonl")).exit_code == 1


def test_dedup_command_rejects_duplicate_queries_to_the_ledger(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [good("docker compose networking"), good("Docker Compose  networking"), good("tide tables")],
    )
    result = invoke("dedup", "-i", str(source), "-o", str(tmp_path / "d.jsonl"), "--near-threshold", "0.9")
    assert result.exit_code == 0, result.output
    assert "duplicate of <row>: 1" in result.output
    rows = ledger(tmp_path / "d.rejects.jsonl")
    assert [r["stage"] for r in rows] == ["dedup"] and rows[0]["reason"].startswith("duplicate of ")


def test_categorize_command_explains_assignments(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [good("docker compose networking"), good("sourdough bread", "food")]
    )
    result = invoke("categorize", "-i", str(source), "-o", str(tmp_path / "c.jsonl"), "--explain")
    assert result.exit_code == 0, result.output
    assert "categorize: why" in result.output and "technology" in result.output
    rows = read_frame([tmp_path / "c.jsonl"]).frame
    assert rows.get_column("category").to_list() == ["technology", "food_cooking"]
    assert rows.get_column("category_reason").null_count() == 0


def test_categorize_command_no_query_cache_writes_no_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path / "cache"))
    source = write_jsonl(tmp_path / "in.jsonl", [good("docker compose networking")])
    args = ("categorize", "-i", str(source), "-o", str(tmp_path / "c.jsonl"), "--recategorize")
    result = invoke(*args, "--method", "embedding", "--no-query-cache")
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "cache").rglob("queries-*.sqlite"))
    assert read_frame([tmp_path / "c.jsonl"]).frame.get_column("category").to_list() == ["technology"]
    result = invoke(*args, "--method", "embedding")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache").rglob("queries-*.sqlite"))) == 1
