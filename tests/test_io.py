"""The reader never loses a row: each bad line is a reject with file, line and reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from qmd_finetune.io import (
    InputError,
    atomic_write,
    default_rejects_path,
    frame_to_dicts,
    read_query_lines,
    read_records,
    records_to_frame,
    rejects_from_frame,
    write_records,
    write_rejects,
)
from qmd_finetune.resources import validator

GOOD = {
    "query": "auth config",
    "output": [
        ["hyde", "Auth is set in config.yaml."],
        ["lex", "auth settings"],
        ["vec", "how to configure authentication"],
    ],
}


def good_line(query: str = "auth config") -> str:
    return json.dumps({**GOOD, "query": query})


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    data = b"\n".join(line if isinstance(line, bytes) else line.encode("utf-8") for line in lines) + b"\n"
    path.write_bytes(data)
    return path


def read_one(path: Path):
    result = read_records([path])
    assert result.rows == result.frame.height + result.rejects.height, "a row was lost"
    return result


def only_reason(result) -> str:
    assert result.rejects.height == 1, result.rejects
    return result.rejects.row(0, named=True)["reason"]


BAD_LINES = [
    ("not json at all", "invalid JSON"),
    ('{"query": "x", "output": [["lex", "a"]]', "invalid JSON"),
    ("[1, 2, 3]", "JSON value is not an object (list)"),
    ('"just a string"', "JSON value is not an object (str)"),
    ('{"output": [["lex", "a b"]]}', "missing query"),
    ('{"query": "   ", "output": [["lex", "a b"]]}', "empty query"),
    ('{"query": "q", "output": 42}', "output has wrong type (int)"),
    ('{"query": "q", "output": {"lex": "a"}}', "output has wrong type (dict)"),
    ('{"query": "q", "output": [["lexx", "a b"]]}', "unknown kind 'lexx'"),
    ('{"query": "q", "output": [["lex", "  "]]}', "empty text"),
    ('{"query": "q", "output": [["lex", "line one\\nline two"]]}', "newline inside item"),
    ('{"query": "q"}', "missing output"),
    ('{"query": "q", "output": []}', "empty output"),
    ('{"query": "q", "output": [["lex"]]}', "output item is not a [kind, text] pair"),
    ('{"query": 7, "output": [["lex", "a b"]]}', "query is not a string (int)"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_line_is_rejected_with_reason_and_line_number(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "data.jsonl", [good_line("first"), line, good_line("third")])
    result = read_one(path)
    assert result.frame.height == 2
    assert only_reason(result).startswith(reason)
    reject = result.rejects.row(0, named=True)
    assert reject["line"] == 2
    assert reject["source"] == str(path)
    assert reject["raw"] == line


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_line_inside_a_bulk_block_gets_the_same_reason(tmp_path: Path, line: str, reason: str) -> None:
    """Among many well-formed rows the fast path bisects down to the bad line."""
    lines = [good_line(f"query {i}") for i in range(200)]
    lines.insert(137, line)
    result = read_one(write_lines(tmp_path / "big.jsonl", lines))
    assert result.frame.height == 200
    assert only_reason(result).startswith(reason)
    assert result.rejects.row(0, named=True)["line"] == 138
    assert result.frame.get_column("_line").to_list() == [i for i in range(1, 202) if i != 138]


def test_large_block_with_bad_lines_bisects_to_them(tmp_path: Path) -> None:
    """Lines that pass the cheap screen but break pyarrow: bisection, then line-by-line."""
    lines = [good_line(f"query {i}") for i in range(10_000)]
    lines[1234] = good_line("extra brace") + "}"
    lines[8765] = '{"query": "x", "output": [["lex", "a"]], "category": 5}'
    result = read_one(write_lines(tmp_path / "big.jsonl", lines))
    assert result.frame.height == 9_998
    reasons = dict(
        zip(result.rejects.get_column("line").to_list(), result.rejects.get_column("reason").to_list())
    )
    assert reasons[1235].startswith("invalid JSON")
    assert reasons[8766] == "category is not a string"


def test_non_utf8_bytes_are_rejected_not_fatal(tmp_path: Path) -> None:
    bad = b'{"query": "caf\xe9", "output": [["lex", "cafe"]]}'
    result = read_one(write_lines(tmp_path / "latin1.jsonl", [good_line(), bad]))
    assert only_reason(result).startswith("invalid UTF-8 (byte 0xe9")
    assert "\\xe9" in result.rejects.row(0, named=True)["raw"]


def test_utf8_bom_is_removed_and_first_row_kept(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (good_line("one") + "\n" + good_line("two") + "\n").encode())
    result = read_one(path)
    assert result.frame.get_column("query").to_list() == ["one", "two"]
    assert result.files[0].notes == {"utf-8 BOM removed": 1}


def test_crlf_line_endings_are_accepted_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes((good_line("one") + "\r\n" + good_line("two") + "\r\n").encode())
    result = read_one(path)
    assert result.frame.get_column("query").to_list() == ["one", "two"]
    assert result.files[0].notes["CRLF line endings"] == 2


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "blank.jsonl", [good_line("one"), "", "   ", good_line("four"), "not json"])
    result = read_one(path)
    assert result.frame.get_column("_line").to_list() == [1, 4]
    assert result.rejects.row(0, named=True)["line"] == 5
    assert result.files[0].notes["blank lines skipped"] == 2


def test_empty_file_reads_as_zero_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = read_one(path)
    assert (result.frame.height, result.rejects.height) == (0, 0)
    assert result.files[0].notes == {"empty file": 1}


def test_one_megabyte_line_is_rejected_with_truncated_raw(tmp_path: Path) -> None:
    huge = json.dumps({"query": "q", "output": [["hyde", "word " * 220_000]]})
    assert len(huge) > 1 << 20
    result = read_one(write_lines(tmp_path / "huge.jsonl", [good_line(), huge, good_line("after")]))
    assert only_reason(result).startswith("line too long")
    assert len(result.rejects.row(0, named=True)["raw"]) < 10_000
    assert result.frame.get_column("query").to_list() == ["auth config", "after"]


def test_legacy_shapes_are_read_as_canonical_records(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "input": "auth config",
                "output": "hyde: Auth lives in config.\nlex: auth settings\nvec: how to set auth",
            }
        ),
        json.dumps(
            {
                "query": "git rebase",
                "searches": [
                    {"type": "lex", "query": "git rebase onto"},
                    {"type": "vec", "query": "how to rebase a branch"},
                ],
            }
        ),
    ]
    result = read_one(write_lines(tmp_path / "legacy.jsonl", lines))
    records = frame_to_dicts(result.frame)
    assert records[0]["query"] == "auth config"
    assert records[0]["output"][0] == ["hyde", "Auth lives in config."]
    assert records[1]["output"] == [["lex", "git rebase onto"], ["vec", "how to rebase a branch"]]


def test_legacy_string_output_with_unprefixed_line_is_rejected(tmp_path: Path) -> None:
    line = json.dumps({"input": "auth", "output": "auth is important"})
    result = read_one(write_lines(tmp_path / "legacy.jsonl", [line]))
    assert only_reason(result).startswith("output line without lex:/vec:/hyde: prefix")


def test_meta_and_extra_fields_survive_a_round_trip(tmp_path: Path) -> None:
    rows = [
        {**GOOD, "query": f"q{i}", "meta": {"source": "claude", "model": "m"}, "is_short": i % 2 == 0}
        for i in range(100)
    ]
    path = write_lines(tmp_path / "meta.jsonl", [json.dumps(r) for r in rows])
    result = read_one(path)
    out = tmp_path / "out.jsonl"
    write_records(result.frame, out)
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[3]["meta"] == {"source": "claude", "model": "m"}
    assert again[3]["is_short"] is False and again[4]["is_short"] is True
    for record in again:
        assert not list(validator("record").iter_errors(record))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_write_then_read_each_format(tmp_path: Path, suffix: str) -> None:
    frame = records_to_frame(
        [{**GOOD, "query": f"q{i}", "category": "technology", "meta": {"model": "x"}} for i in range(5)]
    )
    out = write_records(frame, tmp_path / f"records{suffix}")
    result = read_one(out)
    assert result.frame.get_column("query").to_list() == [f"q{i}" for i in range(5)]
    assert frame_to_dicts(result.frame)[0] == {
        **GOOD,
        "query": "q0",
        "category": "technology",
        "meta": {"model": "x"},
    }


def test_non_ascii_text_round_trips_exactly(tmp_path: Path) -> None:
    record = {
        "query": "café crème brûlée — 東京",
        "output": [["lex", "crème brûlée recette"]],
        "meta": {"note": "naïve"},
    }
    out = write_records(
        records_to_frame([record]).with_columns(pl.lit(90.0).alias("score")), tmp_path / "u.jsonl"
    )
    assert json.loads(out.read_text(encoding="utf-8")) == {**record, "score": 90.0}


def test_gzip_input_with_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress((good_line() + "\n{oops\n").encode()))
    result = read_one(path)
    assert result.frame.height == 1
    assert only_reason(result).startswith("invalid JSON")


def test_missing_file_and_unknown_suffix_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_records([tmp_path / "nope.jsonl"])
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    with pytest.raises(InputError, match="unknown file type"):
        read_records([other])


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_upper_case_kinds_are_read_as_lower_case_and_counted(tmp_path: Path) -> None:
    upper = json.dumps({"query": "q", "output": [["LEX", "a b"], ["Vec", "how to a b"]]})
    lines = (
        [upper]
        + [good_line(f"q{i}") for i in range(100)]
        + [json.dumps({"query": "z", "searches": [{"type": "lex", "query": "z"}], "output": [["HYDE", "h"]]})]
    )
    result = read_one(write_lines(tmp_path / "upper.jsonl", lines))
    first = frame_to_dicts(result.frame)[0]
    assert first["output"] == [["lex", "a b"], ["vec", "how to a b"]]
    assert frame_to_dicts(result.frame)[-1]["output"] == [["hyde", "h"]]
    assert result.files[0].notes["rows with kinds lower-cased"] == 2


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    import os

    out = write_records(records_to_frame([GOOD]), tmp_path / "perm.jsonl")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_rejects_ledger_rows_match_schema(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "data.jsonl", [good_line(), "nope", '{"query": ""}'])
    result = read_one(path)
    frame = result.frame.with_columns(pl.lit("score too low").alias("_reason"))
    ledger = pl.concat([result.rejects, rejects_from_frame(frame, "score")])
    out = write_rejects(ledger, default_rejects_path(tmp_path / "out.jsonl"))
    assert out.name == "out.rejects.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["read", "read", "score"]
    for row in rows:
        assert not list(validator("reject").iter_errors(row))
    assert json.loads(rows[2]["raw"])["query"] == "auth config"


def test_reference_data_reads_completely() -> None:
    files = sorted(
        (Path(__file__).resolve().parents[2] / "shared" / "data" / "qmd-reference").glob("*.jsonl")
    )
    if not files:
        pytest.skip("../shared/data/qmd-reference not present")
    result = read_records(files)
    assert result.rows == sum(1 for f in files for line in f.read_text().splitlines() if line.strip())
    assert result.rejects.height == 0


def test_query_list_skips_comments(tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_text("# header\nauth\n\n  docker compose  \n# more\n")
    assert read_query_lines(path) == ["auth", "docker compose"]


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize(("line", "reason"), [(line, reason) for line, reason in BAD_LINES if _is_json(line)])
def test_fast_checks_reject_exactly_what_the_json_schema_rejects(line: str, reason: str) -> None:
    """The reader's own checks implement schemas/record.schema.json: every canonical-shape row
    they reject is also invalid under jsonschema (and the good row is valid under both)."""
    assert list(validator("record").iter_errors(json.loads(line))), (
        f"schema accepts a row the reader rejects ({reason})"
    )
    assert not list(validator("record").iter_errors(json.loads(good_line())))


def test_read_json_objects_names_file_and_line_and_raises_the_given_error(tmp_path) -> None:
    from qmd_finetune.io import read_json_objects

    class Bad(ValueError):
        pass

    good = tmp_path / "good.jsonl"
    good.write_text('\ufeff{"query": "a"}\n\n{"query": "b"}\n', encoding="utf-8")
    assert list(read_json_objects(good)) == [(1, {"query": "a"}), (3, {"query": "b"})]
    for text, reason in (
        ('{"query": "a"}\n{oops\n', "not JSON"),
        ('{"query": "a"}\n[1, 2]\n', "not a JSON object"),
    ):
        path = tmp_path / "bad.jsonl"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(Bad, match=f"{path}:2: {reason}"):
            list(read_json_objects(path, Bad))
