"""`generate offline`: local JSON/CSV/Parquet files and dirs through `datasets`, column mappings."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from conftest import invoke

from qmd_finetune.generate.offline import classify_expansion

ROWS = [
    {
        "query": "docker compose networking",
        "expansions": [
            "docker compose network bridge",
            "how do containers talk to each other in docker compose?",
            "compose service dns names",
        ],
    },
    {
        "query": "sourdough starter",
        "expansions": ["sourdough starter feeding", "What flour is best for a starter"],
    },
    {"query": "", "expansions": ["orphan"]},
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_expansions_split_into_lex_and_vec_by_form():
    assert classify_expansion("docker compose network bridge") == "lex"
    assert classify_expansion("how do containers talk to each other") == "vec"
    assert classify_expansion("containers in one compose file share a default network.") == "vec"
    assert classify_expansion("one two three four five six seven") == "vec"


def test_jsonl_with_query_and_expansions_maps_to_records(tmp_path: Path):
    data = tmp_path / "qe.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out.jsonl"
    result = invoke(["offline", "--dataset", str(data), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [r["query"] for r in rows] == ["docker compose networking", "sourdough starter"]
    assert [k for k, _ in rows[0]["output"]] == ["lex", "vec", "lex"]
    assert rows[0]["meta"]["mapping"] == "expansions"
    rejects = _rows(tmp_path / "out.rejects.jsonl")
    assert rejects[0]["stage"] == "map" and rejects[0]["line"] == 3


def test_parquet_directory_and_csv_with_explicit_columns(tmp_path: Path):
    folder = tmp_path / "ds"
    folder.mkdir()
    pl.DataFrame(ROWS[:2]).write_parquet(folder / "part-0.parquet")
    out = tmp_path / "p.jsonl"
    assert invoke(["offline", "--dataset", str(folder), "--output", str(out)]).exit_code == 0
    assert len(_rows(out)) == 2
    csv = tmp_path / "t.csv"
    pl.DataFrame(
        {
            "q": ["auth config"],
            "kw": ["auth settings file\nlogin config yaml"],
            "nl": ["where is auth configured"],
            "cat": ["technology"],
        }
    ).write_csv(csv)
    out = tmp_path / "c.jsonl"
    args = ["offline", "--dataset", str(csv), "--output", str(out), "--query-column", "q"]
    args += ["--lex-column", "kw", "--vec-column", "nl", "--category-column", "cat"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (row,) = _rows(out)
    assert row["output"] == [
        ["lex", "auth settings file"],
        ["lex", "login config yaml"],
        ["vec", "where is auth configured"],
    ]
    assert row["category"] == "technology"


def test_record_shaped_rows_pass_through(tmp_path: Path):
    data = tmp_path / "legacy.jsonl"
    data.write_text(
        json.dumps({"input": "auth", "output": "lex: auth config\nvec: how is auth configured"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    assert invoke(["offline", "--dataset", str(data), "--output", str(out)]).exit_code == 0
    assert _rows(out)[0]["output"] == [["lex", "auth config"], ["vec", "how is auth configured"]]


def test_hub_id_gives_a_clear_error_offline(tmp_path: Path):
    result = invoke(
        ["offline", "--dataset", "someone/query-expansion", "--output", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2
    assert "Hub is offline" in " ".join(result.output.split())


def test_hyde_model_fills_missing_hyde_first(tmp_path: Path, llm_server, secret_env):
    data = tmp_path / "qe.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    out = tmp_path / "out.jsonl"
    args = ["offline", "--dataset", str(data), "--output", str(out), "--no-progress"]
    args += ["--hyde-model", "openai/m", "--api-base", llm_server.url + "/v1"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert all(r["output"][0][0] == "hyde" for r in rows)
    assert all(r["meta"]["hyde_model"] == "openai/m" for r in rows)
