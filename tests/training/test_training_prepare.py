"""train prepare: chat rows TRL accepts, hyde-first targets, seeded stratified split, counts."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from qmd_finetune.records import parse_prefixed
from qmd_finetune.training.cli import app
from qmd_finetune.training.prepare import prepare
from qmd_finetune.training.prompts import format_for


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_rows_are_conversational_prompt_completion_with_messages(prepared: Path) -> None:
    row = _rows(prepared / "train.jsonl")[0]
    assert row["prompt"] == [
        {"role": "user", "content": f"/no_think Expand this search query: {row['query']}"}
    ]
    assert row["completion"][0]["role"] == "assistant"
    assert row["messages"] == row["prompt"] + row["completion"]


def test_targets_are_hyde_first_and_never_think(prepared: Path) -> None:
    for row in _rows(prepared / "train.jsonl") + _rows(prepared / "val.jsonl"):
        target = row["completion"][0]["content"]
        items, unknown = parse_prefixed(target)
        assert items and not unknown
        kinds = [k for k, _ in items]
        assert kinds == sorted(kinds, key=["hyde", "lex", "vec"].index)
        assert "<think>" not in target


def test_dataset_info_counts_add_up(prepared: Path) -> None:
    info = json.loads((prepared / "dataset_info.json").read_text(encoding="utf-8"))
    counts = info["counts"]
    assert counts["rows_in"] == counts["valid"] + counts["rejected"] == 10
    assert counts["train"] == len(_rows(prepared / "train.jsonl"))
    assert counts["val"] == len(_rows(prepared / "val.jsonl"))
    assert info["prompt_format"]["template"] == "/no_think Expand this search query: {query}"


def test_split_is_seeded_and_keeps_a_query_on_one_side(tmp_path: Path, records_file: Path) -> None:
    a = prepare([records_file, records_file], tmp_path / "a", val_split=0.3, seed=1)
    b = prepare([records_file, records_file], tmp_path / "b", val_split=0.3, seed=1)
    assert (tmp_path / "a" / "val.jsonl").read_text() == (tmp_path / "b" / "val.jsonl").read_text()
    train = {r["query"].lower() for r in _rows(tmp_path / "a" / "train.jsonl")}
    val = {r["query"].lower() for r in _rows(tmp_path / "a" / "val.jsonl")}
    assert val and not train & val
    assert a.info["counts"]["val"] == b.info["counts"]["val"]


def test_only_variants_and_short_augment_add_training_rows(tmp_path: Path, records_file: Path) -> None:
    result = prepare([records_file], tmp_path, val_split=0.0, with_only_variants=True, short_augment_n=3)
    rows = _rows(tmp_path / "train.jsonl")
    only = [r for r in rows if r["origin"] == "only_variant"]
    assert (
        len(only) == result.info["counts"]["only_variants"] == 9
    )  # the record already in only-mode is skipped
    for row in only:
        kind = row["query"].rsplit(":", 1)[1]
        assert {k for k, _ in parse_prefixed(row["completion"][0]["content"])[0]} == {kind}
    short = [r for r in rows if r["origin"] == "short_augment"]
    assert len(short) == 3 and all(len(r["query"].split()) <= 2 for r in short)


def test_invalid_rows_are_rejected_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"query": "ok query", "output": [["lex", "ok words"]]}\nnot json\n{"query": "", "output": []}\n',
        encoding="utf-8",
    )
    result = prepare([path], tmp_path / "out", val_split=0.0)
    assert result.info["counts"] == {
        "rows_in": 3, "valid": 1, "rejected": 2, "train": 1, "val": 0, "only_variants": 0, "short_augment": 0,
    }  # fmt: skip
    assert (tmp_path / "out" / "rejects.jsonl").is_file()


def test_qwen3_prompts_disable_thinking_in_the_template() -> None:
    fmt = format_for("Qwen/Qwen3-1.7B")
    assert fmt.chat_template_kwargs == {"enable_thinking": False}
    assert fmt.user_text("auth").startswith("/no_think ")


def test_cli_prepare_accepts_several_files_after_one_flag(tmp_path: Path, records_file: Path) -> None:
    second = tmp_path / "second.jsonl"
    second.write_text(
        '{"input": "vim macros", "output": "lex: vim macro record\\nvec: how do I record a macro in vim"}\n'
    )
    result = CliRunner().invoke(
        app, ["prepare", "--input", str(records_file), str(second), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "o" / "dataset_info.json").read_text())
    assert info["counts"]["valid"] == 11


def test_cli_prepare_missing_input_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["prepare", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "not found" in result.output
