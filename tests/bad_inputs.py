"""The bad-input corpus: one file per kind of bad input, each bad row among good ones.

    python tests/bad_inputs.py OUT_DIR     # writes the files and prints one line per kind

Row kinds hold good rows and one bad line (or a good row written oddly); the reader must
keep the good rows, put each bad row in the ledger with its file, line and reason, and
account for every row. File kinds cannot be read at all and must fail in one line naming
the file. Used by tests/curate/test_bad_input_corpus.py.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GOOD_ROWS = 4
BAD_AT = 3
"""The bad line's number in a row kind's file (after two good rows)."""
UNKNOWN = -1
"""Row counts that depend on where a truncated file breaks."""


def good_row(kind: str, i: int) -> str:
    topic = f"{kind.replace('_', ' ')} topic {i}"
    return json.dumps(
        {
            "query": f"how to care for {topic}",
            "output": [
                [
                    "hyde",
                    f"Caring for {topic} means steady light, careful watering and a loose, well drained soil mix.",
                ],
                ["lex", f"{topic} care guide"],
                ["lex", f"{topic} watering schedule"],
                ["vec", f"what does {topic} need to grow well indoors"],
                ["vec", f"common mistakes people make with {topic}"],
            ],
        }
    )


def _pair(kind: str, query: object = "a fine query", output: object = None, **extra: object) -> str:
    row = {"query": query, "output": output if output is not None else [["lex", "fine words"]], **extra}
    return json.dumps(row)


@dataclass
class Kind:
    name: str
    bad_line: bytes | None = None
    """The line written at BAD_AT among the good rows (row kinds)."""
    bad: int = 1
    """Rows the reader rejects."""
    suffix: str = ".jsonl"
    make: Callable[[Path], None] | None = None
    """Writes a file kind itself."""
    error: str | None = None
    """Start of the one-line error after the path, for file kinds."""
    rows: int | None = None
    """Rows read (default: the good rows plus one)."""

    @property
    def file_kind(self) -> bool:
        return self.error is not None

    def expected_rows(self) -> int:
        if self.rows is not None:
            return self.rows
        return GOOD_ROWS + (1 if self.bad_line is not None and self.bad_line.strip() else 0)


def _b(text: str) -> bytes:
    return text.encode("utf-8")


def _row_kinds() -> list[Kind]:
    deep_array = (
        '{"query": "deep", "output": [["lex", "a b"]], "meta": {"x": ' + "[" * 10000 + "]" * 10000 + "}}"
    )
    deep_object = (
        '{"query": "deep", "output": [["lex", "a b"]], "meta": ' + '{"a":' * 10000 + "1" + "}" * 10001
    )
    kinds = [
        Kind("not_json", b"this is not json at all"),
        Kind("truncated_object", b'{"query": "x", "output": [["lex", "a"]]'),
        Kind("unterminated_string", b'{"query": "x, "output": [["lex", "a"]]}'),
        Kind("single_quotes", b"{'query': 'x', 'output': [['lex', 'a']]}"),
        Kind("trailing_comma", b'{"query": "x", "output": [["lex", "a"]],}'),
        Kind("trailing_garbage", _b(_pair("k") + " xyz")),
        Kind("two_objects_one_line", _b(_pair("k") + _pair("k"))),
        Kind("json_array_line", b"[1, 2, 3]"),
        Kind("json_string_line", b'"just a string"'),
        Kind("json_number_line", b"42"),
        Kind("json_null_line", b"null"),
        Kind("missing_query", b'{"output": [["lex", "a"]]}'),
        Kind("query_not_string", _b(_pair("k", query=17))),
        Kind("query_null", _b(_pair("k", query=None))),
        Kind("empty_query", _b(_pair("k", query=""))),
        Kind("whitespace_query", _b(_pair("k", query="   \t "))),
        Kind("newline_in_query", _b(_pair("k", query="first line\nsecond line"))),
        Kind("carriage_return_in_query", _b(_pair("k", query="first\rsecond"))),
        Kind("nul_in_query", _b(_pair("k", query="abc\u0000def"))),
        Kind("control_char_in_query", _b(_pair("k", query="bell \u0007 here"))),
        Kind("invisible_query", _b(_pair("k", query="\u200b\u200c\u200d\ufeff"))),
        Kind("blank_letter_query", _b(_pair("k", query="\u3164\u2800 \u115f"))),
        Kind("missing_output", b'{"query": "x"}'),
        Kind("output_null", b'{"query": "x", "output": null}'),
        Kind("output_number", b'{"query": "x", "output": 3}'),
        Kind("empty_output", b'{"query": "x", "output": []}'),
        Kind("item_not_pair", b'{"query": "x", "output": [["lex"]]}'),
        Kind("item_triple", b'{"query": "x", "output": [["lex", "a", "b"]]}'),
        Kind("unknown_kind", b'{"query": "x", "output": [["foo", "a"]]}'),
        Kind("kind_not_string", b'{"query": "x", "output": [[1, "a"]]}'),
        Kind("text_not_string", b'{"query": "x", "output": [["lex", 5]]}'),
        Kind("empty_text", b'{"query": "x", "output": [["lex", ""]]}'),
        Kind("newline_in_text", _b(_pair("k", output=[["lex", "a\nb"]]))),
        Kind("text_output_without_prefix", b'{"query": "x", "output": "nothing useful"}'),
        Kind("searches_wrong_type", b'{"query": "x", "searches": "lex: a"}'),
        Kind("category_not_string", _b(_pair("k", category=5))),
        Kind("meta_not_object", _b(_pair("k", meta=[1, 2]))),
        Kind("score_out_of_range", _b(_pair("k", score=500))),
        Kind("deep_array_nesting", _b(deep_array)),
        Kind("deep_object_nesting", _b(deep_object)),
        Kind("lone_high_surrogate", b'{"query": "x \\ud800 y", "output": [["lex", "a"]]}'),
        Kind("lone_low_surrogate", b'{"query": "x", "output": [["lex", "a \\udc00"]]}'),
        Kind(
            "huge_integer", _b('{"query": "x", "output": [["lex", "a"]], "meta": {"n": ' + "9" * 5000 + "}}")
        ),
        Kind("nan_literal", b'{"query": "x", "output": [["lex", "a"]], "meta": {"v": NaN}}'),
        Kind("infinity_literal", b'{"query": "x", "output": [["lex", "a"]], "meta": {"v": -Infinity}}'),
        Kind("float_overflow", b'{"query": "x", "output": [["lex", "a"]], "meta": {"v": 1e999}}'),
        Kind("ten_thousand_items", _b(_pair("k", output=[["lex", f"t{i}"] for i in range(10_000)]))),
        Kind("items_over_limit", _b(_pair("k", output=[["lex", f"t{i}"] for i in range(33)]))),
        Kind("line_too_long", _b('{"query": "' + "x" * (2 << 20) + '", "output": [["lex", "a"]]}')),
        Kind("invalid_utf8", b'{"query": "caf\xe9", "output": [["lex", "a"]]}'),
        Kind("overlong_utf8", b'{"query": "\xc0\xaf", "output": [["lex", "a"]]}'),
        Kind("binary_garbage", bytes(b for b in range(256) if b not in (10, 13))),
        Kind("raw_nul_bytes", b"\x00\x00\x00\x00"),
        Kind("mid_file_bom_kept", b"\xef\xbb\xbf" + _b(good_row("bom", 9)), bad=0),
        Kind("bom_only_line", b"\xef\xbb\xbf", bad=0, rows=GOOD_ROWS),
        Kind("blank_lines_kept", b"   ", bad=0),
        Kind("crlf_row_kept", _b(good_row("crlf", 9)) + b"\r", bad=0),
        Kind(
            "duplicate_keys_kept",
            b'{"query": "first", "query": "second wins", "output": [["lex", "a b"]]}',
            bad=0,
        ),
    ]
    return kinds


def _write_rows(kind: Kind, path: Path) -> None:
    lines = [_b(good_row(kind.name, i)) for i in range(GOOD_ROWS)]
    assert kind.bad_line is not None
    lines.insert(BAD_AT - 1, kind.bad_line)
    path.write_bytes(b"\n".join(lines) + b"\n")


def _truncated_gzip(path: Path) -> None:
    data = gzip.compress(("\n".join(good_row("gzip", i) for i in range(200)) + "\n").encode())
    path.write_bytes(data[: len(data) // 2])


def _loop(path: Path) -> None:
    other = path.with_name(path.name + ".other.jsonl")
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def _file_kinds() -> list[Kind]:
    return [
        Kind("empty_file", make=lambda p: p.write_bytes(b""), rows=0, bad=0),
        Kind(
            "only_bad_rows",
            make=lambda p: p.write_bytes(b"nope\n" + _b(_pair("k", query="\u200b")) + b"\n"),
            rows=2,
            bad=2,
        ),
        Kind("truncated_gzip", suffix=".jsonl.gz", make=_truncated_gzip, rows=UNKNOWN, bad=UNKNOWN),
        Kind(
            "not_gzip_data",
            suffix=".jsonl.gz",
            make=lambda p: p.write_bytes(b"plain text, not gzip\n"),
            rows=1,
            bad=1,
        ),
        Kind("fifo", make=lambda p: os.mkfifo(p), error="is a FIFO (named pipe), not a regular file"),
        Kind("symlink_loop", make=_loop, error="symlink loop"),
        Kind("broken_symlink", make=lambda p: p.symlink_to(p.name + ".gone"), error="broken symlink"),
        Kind("character_device", make=lambda p: p.symlink_to("/dev/null"), error="is a character device"),
        Kind(
            "unknown_suffix",
            suffix=".txt",
            make=lambda p: p.write_text(good_row("txt", 1) + "\n"),
            error="unknown file type",
        ),
        Kind(
            "corrupt_parquet",
            suffix=".parquet",
            make=lambda p: p.write_bytes(b"PAR1 garbage"),
            error="not a readable Parquet file",
        ),
    ]


ROW_KINDS = _row_kinds()
FILE_KINDS = _file_kinds()
ALL_KINDS = ROW_KINDS + FILE_KINDS


def write_kind(kind: Kind, folder: Path) -> Path:
    path = folder / f"{kind.name}{kind.suffix}"
    if kind.make is not None:
        kind.make(path)
    else:
        _write_rows(kind, path)
    return path


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else "bad-inputs")
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ALL_KINDS:
        path = write_kind(kind, folder)
        what = (
            f"error: {kind.error}" if kind.file_kind else f"rows {kind.expected_rows()}, rejected {kind.bad}"
        )
        print(f"{path}\t{what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
