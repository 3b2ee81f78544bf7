"""Model resolution: adapters, merged dirs and names load as given, anything else fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.embedded import model_dir
from qmd_finetune.training.cli import app
from qmd_finetune.training.evaluate import read_eval_queries
from qmd_finetune.training.models import ModelLoadError, inspect_model


def test_embedded_names_resolve_to_the_embedded_model() -> None:
    for name in ("local/smollm2", "smollm2"):
        source = inspect_model(name)
        assert source.kind == "merged" and Path(source.path) == model_dir()


def test_adapter_dir_maps_its_embedded_base(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "local/smollm2"}))
    source = inspect_model(str(tmp_path))
    assert source.kind == "adapter" and Path(source.base) == model_dir()


def test_dir_that_is_neither_fails_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "merged").mkdir()
    with pytest.raises(ModelLoadError, match="neither an adapter.*adapter/ and merged/"):
        inspect_model(str(tmp_path))


def test_missing_path_fails() -> None:
    with pytest.raises(ModelLoadError, match="model not found"):
        inspect_model("./no/such/model")


def test_eval_of_an_empty_dir_never_falls_back_to_the_base(tmp_path: Path, queries_file: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path), "--queries", str(queries_file)])
    assert result.exit_code == 2
    assert "neither an adapter directory" in result.output


def test_query_file_headings_become_categories(queries_file: Path) -> None:
    queries = read_eval_queries(queries_file)
    assert [(q.query, q.category) for q in queries] == [
        ("docker compose networking", "Technical"),
        ("auth /only:lex", "Technical"),
        ("who is TDS motorsports", "Named entities"),
    ]


def test_prose_comment_blocks_are_not_categories(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text(
        "# Eval queries for the demo.\n# One query per line.\nauth\n\n# Tech\ndocker\n", encoding="utf-8"
    )
    assert [(q.query, q.category) for q in read_eval_queries(path)] == [
        ("auth", "uncategorized"),
        ("docker", "Tech"),
    ]
