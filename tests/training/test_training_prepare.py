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
        "rows_in": 3, "valid": 1, "rejected": 2, "train": 1, "val": 0, "test": 0, "only_variants": 0,
            "short_augment": 0,
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


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _record(query: str, split: str | None = None) -> dict:
    row = {"query": query, "output": [["lex", f"{query} keywords"], ["vec", f"how does {query} work"]]}
    if split is not None:
        row["split"] = split
    return row


def test_existing_split_column_is_honoured_and_test_rows_never_train(tmp_path: Path) -> None:
    rows = [
        _record(f"topic {i}", split) for i, split in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    ]
    result = prepare([_write(tmp_path / "in.jsonl", rows)], tmp_path / "out", val_split=0.5, seed=3)
    assert {r["query"] for r in _rows(tmp_path / "out" / "train.jsonl")} == {f"topic {i}" for i in range(6)}
    assert {r["query"] for r in _rows(tmp_path / "out" / "val.jsonl")} == {"topic 6", "topic 7"}
    assert {r["query"] for r in _rows(tmp_path / "out" / "test.jsonl")} == {"topic 8", "topic 9"}
    assert result.info["counts"]["test"] == 2
    assert result.info["split_source"] == {"from_input": 10, "split_here": 0}
    assert result.warnings == []


def test_a_query_with_a_test_row_is_dropped_from_training_with_a_reason(tmp_path: Path) -> None:
    rows = [
        _record("redis eviction", "test"),
        _record("Redis eviction", "train"),
        _record("kafka lag", "train"),
    ]
    result = prepare([_write(tmp_path / "in.jsonl", rows)], tmp_path / "out", seed=1)
    assert [r["query"] for r in _rows(tmp_path / "out" / "train.jsonl")] == ["kafka lag"]
    assert result.info["reject_reasons"] == {"query also in the test split": 1}


def test_mixed_split_and_unsplit_rows_warn_and_unknown_split_is_rejected(tmp_path: Path) -> None:
    rows = [_record(f"a{i}", "train") for i in range(4)] + [_record(f"b{i}") for i in range(4)]
    rows.append(_record("c0", "holdout"))
    result = prepare([_write(tmp_path / "in.jsonl", rows)], tmp_path / "out", val_split=0.25, seed=1)
    assert len(result.warnings) == 1 and "4 of 8 rows have no split column" in result.warnings[0]
    assert result.info["split_source"] == {"from_input": 4, "split_here": 4}
    [(reason, count)] = result.info["reject_reasons"].items()
    assert "'holdout'" in reason and count == 1
    counts = result.info["counts"]
    assert counts["train"] + counts["val"] + counts["test"] + counts["rejected"] == counts["rows_in"] == 9


def test_cli_prepare_prints_the_mixed_split_warning(tmp_path: Path) -> None:
    rows = [_record("a0", "train"), _record("b0"), _record("b1")]
    source = _write(tmp_path / "in.jsonl", rows)
    result = CliRunner().invoke(app, ["prepare", "--input", str(source), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "warning: 2 of 3 rows have no split column" in result.output
