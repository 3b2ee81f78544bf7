"""One bad row never costs the file: limits, broken encodings and unreadable inputs.

Every bad row here sits among good rows, goes to the ledger with its line and reason, and
the good rows around it are kept (``rows == valid + invalid``).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from qmd_finetune.io import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_ITEMS,
    MAX_LINE_BYTES,
    InputError,
    atomic_write,
    frame_to_dicts,
    read_query_lines,
    read_records,
    remove_stale_temps,
)

GOOD_ROWS = 80  # more than the bulk reader's minimum group, so good rows take the fast path


def good(i: int) -> str:
    return json.dumps({"query": f"good query {i}", "output": [["lex", f"term {i}"], ["vec", f"what is {i}"]]})


def with_bad_line(path: Path, bad: str | bytes) -> Path:
    """GOOD_ROWS good lines with ``bad`` as line 41."""
    rows = [good(i).encode() for i in range(GOOD_ROWS)]
    rows.insert(40, bad if isinstance(bad, bytes) else bad.encode("utf-8"))
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def reject_at_41(path: Path) -> str:
    result = read_records([path])
    assert result.frame.height == GOOD_ROWS, "good rows were lost"
    assert result.rows == result.frame.height + result.rejects.height
    assert result.rejects.height == 1, result.rejects
    row = result.rejects.row(0, named=True)
    assert (row["source"], row["line"]) == (str(path), 41)
    return row["reason"]


def test_deeply_nested_array_is_one_reject(tmp_path: Path) -> None:
    line = '{"query": "deep", "output": [["lex", "a b"]], "meta": {"x": ' + "[" * 10000 + "]" * 10000 + "}}"
    reason = reject_at_41(with_bad_line(tmp_path / "a.jsonl", line))
    assert reason == f"nesting too deep (10002 levels > {MAX_DEPTH})"


def test_deeply_nested_object_is_one_reject(tmp_path: Path) -> None:
    line = '{"query": "deep", "output": [["lex", "a b"]], "meta": ' + '{"a":' * 10000 + "1" + "}" * 10001
    assert reject_at_41(with_bad_line(tmp_path / "a.jsonl", line)).startswith("nesting too deep")


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    line = json.dumps({"query": "[[[[" * 20, "output": [["lex", "{{{{" * 20]]})
    result = read_records([with_bad_line(tmp_path / "a.jsonl", line)])
    assert result.frame.height == GOOD_ROWS + 1 and result.rejects.height == 0


def test_lone_surrogate_is_one_reject(tmp_path: Path) -> None:
    reason = reject_at_41(
        with_bad_line(tmp_path / "a.jsonl", '{"query": "x\\ud800", "output": [["lex", "a"]]}')
    )
    assert reason == "lone surrogate escape in a string (not valid Unicode)"


def test_surrogate_pair_is_kept(tmp_path: Path) -> None:
    result = read_records(
        [with_bad_line(tmp_path / "a.jsonl", '{"query": "smile \\ud83d\\ude00", "output": [["lex", "a"]]}')]
    )
    assert result.rejects.height == 0
    assert "smile \U0001f600" in result.frame.get_column("query").to_list()


def test_huge_integer_is_one_reject(tmp_path: Path) -> None:
    line = '{"query": "int", "output": [["lex", "a b"]], "meta": {"n": ' + "9" * 5000 + "}}"
    reason = reject_at_41(with_bad_line(tmp_path / "a.jsonl", line))
    assert reason == f"number too long (5000 digits > {MAX_INT_DIGITS})"


def test_long_integer_under_the_limit_is_kept_exactly(tmp_path: Path) -> None:
    line = '{"query": "int", "output": [["lex", "a b"]], "n": ' + "9" * 30 + "}"
    result = read_records([with_bad_line(tmp_path / "a.jsonl", line)])
    rows = [row for row in frame_to_dicts(result.frame) if row["query"] == "int"]
    assert rows[0]["n"] == int("9" * 30)


def test_nan_is_not_json(tmp_path: Path) -> None:
    line = '{"query": "nan", "output": [["lex", "a b"]], "meta": {"x": NaN}}'
    assert reject_at_41(with_bad_line(tmp_path / "a.jsonl", line)) == "NaN is not valid JSON"


def test_mid_file_bom_is_stripped_and_the_row_kept(tmp_path: Path) -> None:
    first = tmp_path / "a.jsonl"
    first.write_bytes(b"\xef\xbb\xbf" + good(1).encode() + b"\n")
    second = tmp_path / "b.jsonl"
    second.write_bytes(b"\xef\xbb\xbf" + good(2).encode() + b"\n")
    joined = tmp_path / "cat.jsonl"
    joined.write_bytes(first.read_bytes() + second.read_bytes())  # what `cat a b` makes
    result = read_records([joined])
    assert result.frame.height == 2 and result.rejects.height == 0
    assert result.files[0].notes["utf-8 BOM removed"] == 2


@pytest.mark.parametrize("items", [MAX_ITEMS + 1, 10_000])
def test_too_many_output_items_is_rejected_before_scoring(tmp_path: Path, items: int) -> None:
    line = json.dumps({"query": "many", "output": [["lex", f"term {i}"] for i in range(items)]})
    assert (
        reject_at_41(with_bad_line(tmp_path / "a.jsonl", line))
        == f"too many output items ({items} > {MAX_ITEMS})"
    )


def test_items_at_the_limit_are_kept(tmp_path: Path) -> None:
    line = json.dumps({"query": "many", "output": [["lex", f"term {i}"] for i in range(MAX_ITEMS)]})
    result = read_records([with_bad_line(tmp_path / "a.jsonl", line)])
    assert result.rejects.height == 0


def test_line_over_the_limit_without_newline_is_one_reject(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    size = 3 * MAX_LINE_BYTES
    path.write_bytes(good(0).encode() + b"\n" + b'{"query": "' + b"x" * size)
    result = read_records([path])
    assert result.frame.height == 1
    assert (
        result.rejects.row(0, named=True)["reason"] == f"line too long ({size + 11} bytes > {MAX_LINE_BYTES})"
    )


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("\u200b\u200c\u200d\ufeff", "query has no visible characters"),
        ("\u3164 \u2800", "query has no visible characters"),
        ("abc\u0000def", "control character in query"),
        ("abc\u0007", "control character in query"),
    ],
)
def test_invisible_or_control_queries_are_rejected(tmp_path: Path, query: str, reason: str) -> None:
    line = json.dumps({"query": query, "output": [["lex", "a b"]]})
    assert reject_at_41(with_bad_line(tmp_path / "a.jsonl", line)) == reason
    # the careful path (a legacy row shape) gives the same reason
    legacy = json.dumps({"input": query, "output": "lex: a b"})
    assert reject_at_41(with_bad_line(tmp_path / "b.jsonl", legacy)) == reason


def test_truncated_gzip_keeps_the_rows_before_the_break(tmp_path: Path) -> None:
    rows = [good(i) for i in range(2000)]
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = read_records([path])
    assert result.frame.height > 500
    assert result.rows == result.frame.height + result.rejects.height
    last = result.rejects.row(-1, named=True)
    assert last["reason"].startswith("gzip data ends early (truncated file): the rows after line ")
    assert result.files[0].notes["data ends early"] == 1


def test_concatenated_gzip_members_are_all_read(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress((good(1) + "\n").encode()) + gzip.compress((good(2) + "\n").encode()))
    result = read_records([path])
    assert result.frame.height == 2 and result.rejects.height == 0


def test_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"pipe.jsonl: is a FIFO \(named pipe\), not a regular file"):
        read_records([fifo])
    with pytest.raises(InputError, match="FIFO"):
        read_query_lines(fifo)


def test_character_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "null.jsonl"
    link.symlink_to("/dev/null")
    with pytest.raises(InputError, match="is a character device, not a regular file"):
        read_records([link])


def test_symlink_loop_is_named(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(InputError, match=r"a.jsonl: symlink loop$"):
        read_records([a])


def test_broken_symlink_is_named(tmp_path: Path) -> None:
    link = tmp_path / "a.jsonl"
    link.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(InputError, match="broken symlink"):
        read_records([link])


def test_unreadable_file_is_permission_denied() -> None:
    """Checked in a child process without root's override of file permissions."""
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        path = folder / "secret.jsonl"
        path.write_text(good(1) + "\n")
        path.chmod(0)
        code = (
            "import os, sys\n"
            "from qmd_finetune.io import read_records, InputError\n"
            "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
            "try: read_records([sys.argv[1]])\n"
            "except InputError as exc: print(exc)\n"
        )
        repo = str(Path(__file__).resolve().parents[1])
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": repo},
            check=True,
        )
        assert out.stdout.strip() == f"{path}: permission denied", out.stderr
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".out.jsonl.{dead.stdout.strip()}.abcd1234.tmp"
    legacy = tmp_path / ".out.jsonl.k2j3h4g5.tmp"  # the naming before PIDs were recorded
    alive = tmp_path / f".out.jsonl.{os.getppid()}.efgh5678.tmp"
    other = tmp_path / ".other.jsonl.1.x.tmp"
    for path in (stale, legacy, alive, other):
        path.write_text("partial")
    with atomic_write(target) as handle:
        handle.write("done\n")
    assert target.read_text() == "done\n"
    assert not stale.exists() and not legacy.exists()
    assert alive.exists() and other.exists()
    assert remove_stale_temps(target) == []
