"""The rubric parameter through curate: score, run (YAML ``rubric:``), dedup, balance, analyze.

Two records for the query "Bob asked about deploy" score in opposite order under the two
rubrics (arithmetic in tests/test_reward_v2.py and below):
  BOB_NO_NAME (v2 spec example 2): v1 89.2, v2 39.2 (v2 finds the entity `bob` at position 0
    and no line keeps it: -30 - 20).
  BOB_NAMED: lex "bob deploy notes", lex "bob release steps", no vec.
    v1: F 20, D 0 + 5 + 5 + 5 + 5 = 20, Q 5 + 5 (all keep a key term) = 10, E 10 (none), T 20
        = 80 / 120 = 66.7.
    v2: the same but E = 15 (every lex line holds `bob`, nothing dropped, no vec) = 85 / 120 = 70.8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _curate_fixtures import REFERENCE, write_jsonl
from typer.testing import CliRunner

from qmd_finetune.curate.card import build_card
from qmd_finetune.curate.cli import app
from qmd_finetune.curate.pipeline import balance_config
from qmd_finetune.resources import validator

runner = CliRunner()
BOB = "Bob asked about deploy"
BOB_NO_NAME = {
    "query": BOB,
    "output": [
        ["lex", "deploy question"],
        ["lex", "deployment process steps"],
        ["vec", "someone asking how the deployment works"],
    ],
}
BOB_NAMED = {"query": BOB, "output": [["lex", "bob deploy notes"], ["lex", "bob release steps"]]}


def invoke(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("flags", "rubric", "expected"), [([], "v2", 39.2), (["--rubric", "v1"], "v1", 89.2)]
)
def test_curate_score_scores_with_the_rubric_and_names_it(
    tmp_path: Path, flags: list[str], rubric: str, expected: float
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME])
    result = invoke("score", "-i", str(source), "-o", str(tmp_path / "s.jsonl"), *flags)
    assert result.exit_code == 0, result.output
    assert f"score (rubric {rubric})" in result.output
    (row,) = rows(tmp_path / "s.jsonl")
    assert row["score"] == expected
    assert row["meta"]["score_rubric"] == rubric


def test_unknown_rubric_is_a_usage_error_listing_the_valid_names(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME])
    for command in ("score", "balance", "analyze"):
        extra = [] if command == "analyze" else ["-o", str(tmp_path / "x.jsonl")]
        result = invoke(command, "-i", str(source), *extra, "--rubric", "v3")
        assert result.exit_code == 2
        assert "unknown rubric 'v3': valid rubrics are v1, v2" in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_curate_score_modernizes_the_legacy_only_spelling_before_scoring(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"query": "ssh key auth only: lex", "output": [["lex", "ssh keygen setup"]]}]
    )
    # Modernized: only mode, F 30 + D 15 + Q 10 + 5 + 5 + E 10 + T 20 = 95 / 120 = 79.2.
    result = invoke("score", "-i", str(source), "-o", str(tmp_path / "s.jsonl"))
    assert result.exit_code == 0, result.output
    (row,) = rows(tmp_path / "s.jsonl")
    assert (row["query"], row["score"]) == ("ssh key auth /only:lex", 79.2)
    assert "modernized only-mode spelling" in result.output
    # Left alone it is a normal-mode query missing vec and hyde:
    # F 20, D 0 + 0 + 5 + 5 + 5 = 15, Q 5 + 5 = 10, E 10, T 20 = 75 / 120 = 62.5.
    invoke("score", "-i", str(source), "-o", str(tmp_path / "raw.jsonl"), "--no-modernize-only")
    (raw,) = rows(tmp_path / "raw.jsonl")
    assert (raw["query"], raw["score"]) == ("ssh key auth only: lex", 62.5)


@pytest.mark.parametrize("rubric", ["v1", "v2"])
def test_handcrafted_only_reference_rows_are_no_longer_rejected_for_spelling(
    tmp_path: Path, rubric: str
) -> None:
    source = REFERENCE / "qmd_expansion_handcrafted_only.jsonl"
    if not source.exists():
        pytest.skip(f"reference data not found in {REFERENCE}")
    base = ["score", "-i", str(source), "--min-score", "70", "--rubric", rubric]
    old = invoke(*base, "-o", str(tmp_path / "old.jsonl"), "--no-modernize-only")
    new = invoke(*base, "-o", str(tmp_path / "new.jsonl"))
    assert old.exit_code == new.exit_code == 0
    old_rejects = rows(tmp_path / "old.rejects.jsonl")
    new_rejects = rows(tmp_path / "new.rejects.jsonl")
    # Read as normal mode, hundreds of valid only-mode rows fall under 70 (316 under v1).
    assert len(old_rejects) >= 300 and (rubric != "v1" or len(old_rejects) == 316)
    # Modernized, the 4 left fail on their own merits: /only:hyde passages outside 50-200
    # characters, not the spelling.
    assert len(new_rejects) == 4
    assert all(json.loads(r["raw"])["query"].endswith(" /only:hyde") for r in new_rejects)
    assert all(row["query"].rsplit(" ", 1)[-1].startswith("/only:") for row in rows(tmp_path / "new.jsonl"))


def pipeline_config(tmp_path: Path, source: Path, **top: object) -> Path:
    config = {
        "input": [str(source)],
        "output": str(tmp_path / "out.jsonl"),
        **top,
        "stages": ["dedup", "score"],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.mark.parametrize(
    ("top", "flags", "rubric", "kept"),
    [
        ({}, [], "v2", BOB_NAMED),  # default v2: 70.8 beats 39.2
        ({"rubric": "v1"}, [], "v1", BOB_NO_NAME),  # 89.2 beats 66.7
        ({"rubric": "v1"}, ["--rubric", "v2"], "v2", BOB_NAMED),  # the flag overrides the config
    ],
)
def test_pipeline_rubric_reaches_dedup_and_score_and_the_summary(
    tmp_path: Path, top: dict, flags: list[str], rubric: str, kept: dict
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME, BOB_NAMED])
    result = invoke("run", "-c", str(pipeline_config(tmp_path, source, **top)), *flags)
    assert result.exit_code == 0, result.output
    (row,) = rows(tmp_path / "out.jsonl")
    assert row["output"] == kept["output"]  # dedup kept the better row under the rubric
    assert row["meta"]["score_rubric"] == rubric
    summary = json.loads((tmp_path / "out.run.json").read_text())
    assert not list(validator("run-summary").iter_errors(summary))
    assert not list(validator("record").iter_errors(row))
    assert summary["rubric"] == rubric
    assert summary["reports"]["score"]["rubric"] == rubric
    assert summary["reports"]["dedup"]["score_rubric"] == rubric


def test_a_stage_rubric_wins_over_the_pipeline_rubric(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME])
    config = {
        "input": [str(source)],
        "output": str(tmp_path / "o.jsonl"),
        "stages": [{"score": {"rubric": "v1"}}],
    }
    (tmp_path / "p.yaml").write_text(json.dumps(config))
    assert invoke("run", "-c", str(tmp_path / "p.yaml")).exit_code == 0
    (row,) = rows(tmp_path / "o.jsonl")
    assert (row["score"], row["meta"]["score_rubric"]) == (89.2, "v1")


def test_unknown_rubric_in_a_pipeline_config_fails_before_reading(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME])
    result = invoke("run", "-c", str(pipeline_config(tmp_path, source, rubric="v9")))
    assert result.exit_code == 2
    assert "rubric: unknown rubric 'v9': valid rubrics are v1, v2" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_balance_config_passes_its_rubric_to_every_stage_that_scores(tmp_path: Path) -> None:
    config = balance_config([tmp_path / "in.jsonl"], tmp_path / "out.jsonl", rubric="v1")
    with_rubric = {spec.name for spec in config.stage_specs() if spec.options.get("rubric") == "v1"}
    assert with_rubric == {"dedup", "score"}
    assert config.to_dict()["rubric"] == "v1"


def test_analyze_names_the_rubric_it_scored_with_or_the_one_the_rows_carry(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME])
    invoke("analyze", "-i", str(source), "--json", str(tmp_path / "a.json"), "--rubric", "v1")
    stats = json.loads((tmp_path / "a.json").read_text())
    assert (stats["score"]["rubric"], stats["score"]["mean"]) == ("v1", 89.2)
    # a scored file keeps its scores: the rubric comes from meta.score_rubric, not --rubric
    invoke("score", "-i", str(source), "-o", str(tmp_path / "s.jsonl"), "--rubric", "v1")
    result = invoke("analyze", "-i", str(tmp_path / "s.jsonl"), "--json", str(tmp_path / "b.json"))
    assert "score (rubric v1)" in result.output
    assert json.loads((tmp_path / "b.json").read_text())["score"]["rubric"] == "v1"
    # rows scored under both rubrics are reported as mixed
    invoke("score", "-i", str(source), "-o", str(tmp_path / "s2.jsonl"))
    invoke(
        "analyze",
        "-i",
        str(tmp_path / "s.jsonl"),
        str(tmp_path / "s2.jsonl"),
        "--json",
        str(tmp_path / "c.json"),
    )
    assert json.loads((tmp_path / "c.json").read_text())["score"]["rubric"] == "mixed (v1, v2)"


def test_dataset_card_names_the_score_rubric(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [BOB_NO_NAME])
    invoke("score", "-i", str(source), "-o", str(tmp_path / "s.jsonl"), "--rubric", "v1")
    assert "| score rubric | v1 |" in build_card(tmp_path / "s.jsonl", name="bob")
