from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from _curate_fixtures import REFERENCE, echo, frame, good, write_jsonl

from qmd_finetune.curate import pipeline
from qmd_finetune.curate.pipeline import PipelineConfig, PipelineError, StageSpec, load_config, run_pipeline
from qmd_finetune.curate.stage import StageResult, empty_rejected
from qmd_finetune.io import read_frame, read_records, records_to_frame, write_records
from qmd_finetune.resources import validator

ROOT = Path(__file__).resolve().parents[2]


def dataset(tmp_path: Path) -> Path:
    records: list = [good(f"topic number {i}", "technology") for i in range(6)]
    records += [echo("auth config", "technology"), good("sourdough bread", "food_cooking")]
    records += [
        {
            "input": "tide tables",
            "output": "lex: tide tables times\nvec: when is high tide at the coast today",
        }
    ]
    records += ['{"query": broken', '{"query": "x", "output": [["keywords", "x"]]}']
    return write_jsonl(tmp_path / "in.jsonl", records)


def test_config_rejects_unknown_stage_and_unknown_option_before_reading(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("input: [missing.jsonl]\noutput: out.jsonl\nstages: [normalise]\n")
    with pytest.raises(PipelineError, match="unknown stage 'normalise'"):
        load_config(config)
    config.write_text("input: [missing.jsonl]\nstages:\n  - score: {min_scor: 3}\n")
    with pytest.raises(PipelineError, match="unknown option"):
        load_config(config)
    config.write_text("inputs: [x]\nstages: [score]\n")
    with pytest.raises(PipelineError, match="unknown key"):
        load_config(config)


def test_stage_entries_in_every_spelling() -> None:
    assert pipeline.parse_stage("score") == StageSpec("score")
    assert pipeline.parse_stage({"score": {"min_score": 5}}) == StageSpec("score", {"min_score": 5})
    assert pipeline.parse_stage({"stage": "score", "min_score": 5}) == StageSpec("score", {"min_score": 5})
    assert pipeline.parse_stage({"score": None}) == StageSpec("score")


def test_run_writes_output_ledger_and_summary_with_every_row_accounted_for(tmp_path: Path) -> None:
    source = dataset(tmp_path)
    out = tmp_path / "out" / "curated.jsonl"
    config = PipelineConfig(
        inputs=[source],
        output=out,
        stages=[
            StageSpec("validate"),
            StageSpec("normalize"),
            StageSpec("score", {"min_score": 60}),
            StageSpec("balance", {"categories": {"technology": 4}, "plan": str(tmp_path / "plan.json")}),
            StageSpec("split", {"seed": 0}),
        ],
    )
    run = run_pipeline(config)
    assert run.rows_in == 11 and run.balanced
    assert [s.name for s in run.stages] == ["validate", "normalize", "score", "balance", "split"]
    for stage in run.stages:
        assert stage.rows_in == stage.kept + stage.rejected
    assert read_records([out]).frame.height == run.kept == 5

    ledger = [
        json.loads(line) for line in (tmp_path / "out" / "curated.rejects.jsonl").read_text().splitlines()
    ]
    assert len(ledger) == run.rejected == 6
    stages = {row["stage"] for row in ledger}
    assert stages == {"validate", "score", "balance"}
    score_reject = next(row for row in ledger if row["stage"] == "score")
    assert score_reject["reason"] == "score below 60"
    assert score_reject["source"] == str(source) and score_reject["line"] == 7
    for row in ledger:
        assert not list(validator("reject").iter_errors(row))

    summary = json.loads((tmp_path / "out" / "curated.run.json").read_text())
    assert not list(validator("run-summary").iter_errors(summary))
    assert summary["rows_in"] == summary["kept"] + summary["rejected"]
    assert json.loads((tmp_path / "plan.json").read_text())["total_needed"] == 0


def test_explicit_rejects_path_wins(tmp_path: Path) -> None:
    config = PipelineConfig(
        [dataset(tmp_path)], tmp_path / "o.jsonl", [StageSpec("score")], rejects=tmp_path / "r.jsonl"
    )
    run = run_pipeline(config)
    assert run.outputs["rejects"] == str(tmp_path / "r.jsonl")
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_a_stage_that_loses_rows_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def lossy(frame: pl.DataFrame) -> StageResult:
        return StageResult(kept=frame.head(1), rejected=empty_rejected(frame))

    monkeypatch.setattr(pipeline, "stage_function", lambda name: lossy)
    with pytest.raises(PipelineError, match="lost rows"):
        pipeline.run_stages(frame([good("a b"), good("c d")]), [StageSpec("lossy")])


def test_curated_columns_come_back_when_a_curated_file_is_read_again(tmp_path: Path) -> None:
    data = frame([good("tide tables")], score=[91.5], split=["val"], dup_group=["7"])
    data = data.with_columns(pl.Series("flags", [["echo:lex"]], dtype=pl.List(pl.Utf8)))
    write_records(data, tmp_path / "c.jsonl")
    again = read_frame([tmp_path / "c.jsonl"]).frame
    row = again.row(0, named=True)
    assert row["score"] == 91.5 and row["split"] == "val" and row["dup_group"] == "7"
    assert row["flags"] == ["echo:lex"] and row["extra"] is None


def test_outputs_load_with_datasets_json_and_parquet(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    source = dataset(tmp_path)
    for name in ("curated.jsonl", "curated.parquet"):
        out = tmp_path / name
        run_pipeline(
            PipelineConfig([source], out, [StageSpec("normalize"), StageSpec("score"), StageSpec("split")])
        )
        kind = "parquet" if name.endswith(".parquet") else "json"
        loaded = datasets.load_dataset(
            kind, data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
        )
        assert loaded.num_rows == 9
        assert {"query", "output", "score", "split"} <= set(loaded.column_names)
        assert loaded[0]["output"][0][0] in ("hyde", "lex", "vec")
    assert read_records([tmp_path / "curated.parquet"]).frame.height == 9


def test_non_ascii_rows_round_trip(tmp_path: Path) -> None:
    data = records_to_frame([good("café crème brûlée — recipe")]).with_columns(pl.lit(90.0).alias("score"))
    write_records(data, tmp_path / "u.jsonl")
    assert read_records([tmp_path / "u.jsonl"]).frame.height == 1


def test_default_pipeline_config_is_valid() -> None:
    pytest.importorskip("qmd_finetune.curate.dedup")
    pytest.importorskip("qmd_finetune.curate.categorize")
    config = load_config(ROOT / "configs" / "pipeline.yaml")
    assert [s.name for s in config.stages][:3] == ["validate", "normalize", "clean"]
    assert config.report is not None


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE.exists(), reason="reference data not present")
def test_balance_pipeline_on_the_reference_data(tmp_path: Path) -> None:
    pytest.importorskip("qmd_finetune.curate.dedup")
    pytest.importorskip("qmd_finetune.curate.categorize")
    inputs = sorted(REFERENCE.glob("*.jsonl"))
    config = pipeline.balance_config(inputs, tmp_path / "balanced.jsonl")
    run = run_pipeline(config)
    assert run.rows_in == 3407 and run.balanced
    out = read_frame([tmp_path / "balanced.jsonl"]).frame
    keys = out.get_column("query").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    assert keys.n_unique() == out.height  # no duplicate queries left
    assert (
        not out.get_column("query").str.contains(r"\sonly:\s*(lex|vec|hyde)$").any()
    )  # legacy only-mode normalized
    flags = out.get_column("flags").explode().drop_nulls()
    assert not flags.str.contains(r"^(boilerplate|lex_filler|degenerate)").any()  # junk out by default
    assert run.stage("clean").rejected_by_reason["template boilerplate hyde/vec"] > 1000


def test_split_files_hold_the_final_rows_after_later_stages(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [good(f"garden topic {i}") for i in range(30)])
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text("\n".join(f"garden topic {i}" for i in range(10)) + "\n")
    stages = [
        StageSpec("split", {"output_dir": str(tmp_path / "splits")}),
        StageSpec("leakage", {"eval_queries": str(eval_file), "drop_leaks": True}),
    ]
    run = run_pipeline(PipelineConfig([source], tmp_path / "o.jsonl", stages))
    in_files = sum(
        read_records([tmp_path / "splits" / f"{n}.jsonl"]).frame.height for n in ("train", "val", "test")
    )
    assert in_files == run.kept < 30
