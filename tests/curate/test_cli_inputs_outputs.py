"""curate's command line: --output moves derived outputs, globs and directories as input,
defaults that agree with the library and the docs, clean usage lines."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from _curate_fixtures import echo, good, write_jsonl
from typer.testing import CliRunner

from qmd_finetune.curate.cli import app
from qmd_finetune.curate.pipeline import stage_function
from qmd_finetune.io import InputError, expand_inputs, records_to_frame, write_records

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
STAGE_COMMANDS = ("normalize", "clean", "dedup", "categorize", "balance", "split", "leakage")


def _full_config(tmp_path: Path) -> Path:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [good(f"garden topic {i}", "home_garden") for i in range(8)] + [echo("auth config")],
    )
    cfg = tmp_path / "cfg"
    config = {
        "input": [str(source)],
        "output": str(cfg / "curated.jsonl"),
        "rejects": str(cfg / "curated.rejects.jsonl"),
        "stats": str(cfg / "curated.run.json"),
        "report": str(cfg / "report.html"),
        "stages": [
            "validate",
            {"score": {"min_score": 60}},
            {"balance": {"categories": {"home_garden": 4}, "plan": str(cfg / "plan.json")}},
            {"split": {"seed": 1, "output_dir": str(cfg / "splits")}},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_output_flag_moves_every_derived_output_beside_it(tmp_path: Path) -> None:
    config = _full_config(tmp_path)
    out = tmp_path / "elsewhere" / "mine.jsonl"
    result = runner.invoke(app, ["run", "-c", str(config), "--output", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "cfg").exists()  # nothing the config names was written
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == [
        "mine.jsonl",
        "mine.plan.json",
        "mine.rejects.jsonl",
        "mine.report.html",
        "mine.run.json",
        "mine.splits",
    ]
    assert sorted(p.name for p in (out.parent / "mine.splits").iterdir()) == [
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]


def test_output_flag_keeps_paths_the_command_line_sets(tmp_path: Path) -> None:
    config = _full_config(tmp_path)
    out, report = tmp_path / "o" / "x.jsonl", tmp_path / "r" / "mine.html"
    result = runner.invoke(app, ["run", "-c", str(config), "-o", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert report.exists() and not (out.parent / "x.report.html").exists()


def test_quoted_glob_and_directory_inputs_read_sorted_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "b.jsonl", [good("beta topic")])
    write_jsonl(data / "a.jsonl", [good("alpha topic")])
    write_records(records_to_frame([good("gamma topic")], source="x"), data / "c.parquet")
    write_jsonl(data / "a.rejects.jsonl", ['{"not": "a record"}'])
    (data / "notes.txt").write_text("ignored\n")
    expected = [data / "a.jsonl", data / "b.jsonl", data / "c.parquet"]
    assert expand_inputs([data]) == expected
    assert expand_inputs([str(data / "*.jsonl")]) == [
        data / "a.jsonl",
        data / "a.rejects.jsonl",
        data / "b.jsonl",
    ]
    for args in (["--input", str(data)], ["--input", str(data / "[ab].jsonl"), str(data / "c.parquet")]):
        result = runner.invoke(app, ["validate", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert (
            "a.jsonl" in result.output
            and "c.parquet" in result.output
            and "notes.txt" not in result.output
            and "rejects" not in result.output
        )
    result = runner.invoke(
        app, ["normalize", "-i", str(data), "-o", str(tmp_path / "n.jsonl")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0 and "rows in 3 = kept 3" in result.output, result.output


def test_glob_or_directory_matching_nothing_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jsonl")])
    result = runner.invoke(app, ["validate", "--input", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "directory holds no" in result.output
    assert "Traceback" not in result.output


def _command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", STAGE_COMMANDS)
def test_cli_defaults_equal_the_stage_defaults(name: str) -> None:
    signature = inspect.signature(stage_function(name)).parameters
    compared = 0
    for param in _command(name).params:
        option = signature.get(param.name or "")
        if option is None or option.default in (inspect.Parameter.empty, None) or param.default is None:
            continue
        assert param.default == option.default, f"curate {name} --{param.name}"
        compared += 1
    assert compared or name in ("categorize", "clean")


def _documented_options(text: str) -> dict[str, dict[str, str]]:
    """``## stage`` sections of docs/curate-stages.md -> {option: default as written}."""
    out: dict[str, dict[str, str]] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        name = section.split("\n", 1)[0].strip()
        match = re.search(r"^Options: (.*?)(?:\n\n|\Z)", section, flags=re.M | re.S)
        if match:
            pairs = re.findall(r"`(\w+): [^`=]+ = ([^`]+)`", match.group(1))
            out[name] = dict(pairs)
    return out


def test_documented_defaults_equal_the_stage_and_cli_defaults() -> None:
    documented = _documented_options((ROOT / "docs" / "curate-stages.md").read_text(encoding="utf-8"))
    assert "dedup" in documented and "near_threshold" in documented["dedup"]
    for stage, options in documented.items():
        signature = inspect.signature(stage_function(stage)).parameters
        cli = {p.name: p.default for p in _command(stage).params} if stage in STAGE_COMMANDS else {}
        for option, written in options.items():
            assert option in signature, f"{stage}.{option} is documented but not an option"
            default = signature[option].default
            assert written == repr(default).replace("'", '"'), f"docs: {stage}.{option} = {written}"
            if cli.get(option) is not None:
                assert cli[option] == default, f"curate {stage} --{option}"


def test_near_keep_has_a_flag() -> None:
    result = runner.invoke(app, ["dedup", "--help"], env={"COLUMNS": "200"})
    assert "--near-keep" in result.output


@pytest.mark.parametrize("name", ["validate", "score", "dedup", "balance", "analyze", "run"])
def test_usage_lines_show_no_hidden_positional(name: str) -> None:
    result = runner.invoke(app, [name, "--help"], prog_name="curate", env={"COLUMNS": "200"})
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert usage.strip() == f"Usage: curate {name} [OPTIONS]"
