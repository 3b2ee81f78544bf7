"""Reading and writing records: JSONL, JSONL.gz and Parquet, atomic writes, the rejects ledger.

The reader is fast on large files and exact on bad ones. Lines that look canonical go in
bulk through pyarrow's JSON reader into polars and are validated with polars expressions;
a bulk block that pyarrow refuses is bisected until the offending lines are isolated.
Everything else (legacy shapes, broken lines) is parsed one line at a time, so each bad
line becomes a reject naming its file, line number and reason. Rows are never dropped:
``rows == valid + invalid`` for every file.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import gzip
import io
import json
import math
import os
import re
import stat
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qmd_finetune.records import CONTROL_CHARS, INVISIBLE_CHARS, KINDS, Record, RecordError, coerce_record
from qmd_finetune.redact import redact, redact_frame
from qmd_finetune.resources import first_error

FRAME_SCHEMA: dict[str, pl.DataType] = {
    "query": pl.Utf8(),
    "output": pl.List(pl.List(pl.Utf8())),
    "category": pl.Utf8(),
    "meta": pl.Utf8(),
    "extra": pl.Utf8(),
    "_source": pl.Utf8(),
    "_line": pl.Int64(),
}
REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.Utf8(),
    "line": pl.Int64(),
    "stage": pl.Utf8(),
    "reason": pl.Utf8(),
    "path": pl.Utf8(),
    "raw": pl.Utf8(),
}
MAX_LINE_BYTES = 1 << 20
"""Longest line read (1 MiB; the longest line in the reference data is under 2 KB)."""
MAX_DEPTH = 32
"""Deepest JSON nesting read (a record needs 3 levels); deeper lines never reach a parser."""
MAX_INT_DIGITS = 32
"""Longest integer literal read (int64 needs 19 digits)."""
MAX_ITEMS = 32
"""Most output items in one row (the reference data has at most 7); more would stall scoring."""
KINDS_LOWERED = "rows with kinds lower-cased"
RAW_KEEP_CHARS = 4096
_BOM = b"\xef\xbb\xbf"
_FAST_MARKERS = (b'"output": [[', b'"output":[[')
_CORE_KEYS = {"query", "output", "category", "meta"}
_BLOCK_BYTES = 32 << 20
_GZIP_READ = 4 << 20
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_EXACT_FLOAT = 2.0**53
_MIN_BULK = 32
_SCREEN_MAX = 4096
# Schema keywords that coerce_record does not check itself; jsonschema runs only when a row has one.
_SCHEMA_ONLY_KEYS = frozenset({"meta", "score", "rating", "deductions", "flags", "facets", "split"})


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """An input that cannot be read at all (missing file, unknown suffix)."""


class OutputError(ValueError):
    """An output that cannot be written (disk full, read-only or missing directory); nothing
    of it was left behind."""


@dataclass
class FileCounts:
    path: str
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    """Things handled without losing a row: blank lines, a BOM, CRLF endings, an empty file."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.invalid,
            "notes": dict(self.notes),
        }


@dataclass
class ReadResult:
    frame: pl.DataFrame
    rejects: pl.DataFrame
    files: list[FileCounts]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


# ---------------------------------------------------------------- frames from Python objects


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=FRAME_SCHEMA)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def _record_row(record: Record, source: str, line: int) -> tuple:
    return (
        record.query,
        [[k, t] for k, t in record.output],
        record.category,
        json.dumps(record.meta, ensure_ascii=False) if record.meta else None,
        json.dumps(record.extra, ensure_ascii=False) if record.extra else None,
        source,
        line,
    )


def _frame_from_rows(rows: list[tuple]) -> pl.DataFrame:
    if not rows:
        return empty_frame()
    return pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")


def records_to_frame(
    records: Iterable[dict[str, Any] | Record], source: str = "<memory>", start_line: int = 1
) -> pl.DataFrame:
    """Build a frame from dicts (any accepted shape) or Records; raises RecordError on bad input."""
    rows = []
    for offset, item in enumerate(records):
        record = item if isinstance(item, Record) else coerce_record(item)
        rows.append(_record_row(record, source, start_line + offset))
    return _frame_from_rows(rows)


def _reject_row(
    source: str, line: int | None, stage: str, reason: str, raw: str | None, path: str | None = None
) -> tuple:
    if raw is not None and len(raw) > RAW_KEEP_CHARS:
        raw = raw[:RAW_KEEP_CHARS] + f"... [truncated, {len(raw)} chars]"
    return (source, line, stage, reason, path, raw)


def _rejects_from_rows(rows: list[tuple]) -> pl.DataFrame:
    if not rows:
        return empty_rejects()
    return pl.DataFrame(rows, schema=REJECT_SCHEMA, orient="row")


# ---------------------------------------------------------------- reading


def read_records(paths: Sequence[str | Path], stage: str = "read") -> ReadResult:
    """Read every file; valid rows into one frame, every bad row into the rejects frame."""
    frames: list[pl.DataFrame] = []
    rejects: list[pl.DataFrame] = []
    files: list[FileCounts] = []
    for raw_path in paths:
        path = Path(raw_path)
        check_readable(path)
        counts = FileCounts(str(path))
        if _suffix(path) == ".parquet":
            frame, rej = _read_parquet(path, counts, stage)
        else:
            frame, rej = _read_jsonl(path, counts, stage)
        counts.valid = frame.height
        counts.invalid = rej.height
        counts.rows = counts.valid + counts.invalid
        if counts.rows == 0:
            counts.notes["empty file"] = 1
        frames.append(frame)
        rejects.append(rej)
        files.append(counts)
    frame = pl.concat(frames, how="vertical") if frames else empty_frame()
    rejected = pl.concat(rejects, how="vertical") if rejects else empty_rejects()
    return ReadResult(frame=frame, rejects=rejected, files=files)


_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_readable(path: Path, records: bool = True) -> None:
    """Fail at once, in one line, on an input that is not a readable regular file (a FIFO
    would block the reader forever; a symlink loop is not a missing file)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{path}: broken symlink (its target does not exist)") from None
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: symlink loop") from None
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory (pass the files inside it)")
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise InputError(f"{path}: is {kind}, not a regular file")
    if records:
        _suffix(path)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl", ".ndjson", ".json", ".parquet"):
        if name.endswith(suffix):
            return suffix
    raise InputError(f"{path}: unknown file type (expected .jsonl, .jsonl.gz or .parquet)")


@dataclass
class _Overlong:
    """A line longer than MAX_LINE_BYTES: only its head is kept in memory."""

    line: int
    size: int
    head: bytes


@dataclass
class _Broken:
    """The file's data ends early (a truncated or corrupt .gz): the rows after ``line`` are lost."""

    line: int
    reason: str


def _iter_chunks(path: Path) -> Iterator[bytes | str]:
    """Decompressed chunks of the file; a string is a reason the data ends early."""
    with open(path, "rb") as handle:
        if not _suffix(path).endswith(".gz"):
            while chunk := handle.read(_BLOCK_BYTES):
                yield chunk
            return
        decoder = zlib.decompressobj(wbits=31)
        pending = b""
        started = False
        while True:
            if not pending:
                pending = handle.read(_GZIP_READ)
                if not pending:
                    break
            started = True
            try:
                out = decoder.decompress(pending, _BLOCK_BYTES)
            except zlib.error as exc:
                yield f"corrupt gzip data ({exc})"
                return
            pending = decoder.unconsumed_tail
            if out:
                yield out
            if decoder.eof:  # the next of concatenated .gz members, or padding
                pending = decoder.unused_data + pending
                if not pending.strip(b"\0"):
                    pending = b""
                decoder = zlib.decompressobj(wbits=31)
                started = False
        if started and not decoder.eof:
            tail = decoder.flush()
            if tail:
                yield tail
            yield "gzip data ends early (truncated file)"


def _iter_blocks(path: Path) -> Iterator[tuple[int, list[bytes]] | _Overlong | _Broken]:
    """Yield (first line number, lines) in blocks of about 32 MB; line numbers are
    1-based. Over-long lines and an early end of the data come as their own events."""
    line_no = 1
    rest = b""
    overlong: _Overlong | None = None
    for chunk in _iter_chunks(path):
        if isinstance(chunk, str):
            if overlong is not None:
                yield overlong
                line_no += 1
            elif rest:
                yield line_no, [rest]
                line_no += 1
            lost = f"the rows after line {line_no - 1} are lost" if line_no > 1 else "no row could be read"
            yield _Broken(line_no, f"{chunk}: {lost}")
            return
        if overlong is not None:
            cut = chunk.find(b"\n")
            if cut < 0:
                overlong.size += len(chunk)
                continue
            overlong.size += cut
            yield overlong
            line_no += 1
            overlong = None
            chunk = chunk[cut + 1 :]
        chunk = rest + chunk
        cut = chunk.rfind(b"\n")
        if cut < 0:
            if len(chunk) > MAX_LINE_BYTES:
                overlong, rest = _Overlong(line_no, len(chunk), chunk[:RAW_KEEP_CHARS]), b""
            else:
                rest = chunk
            continue
        lines = chunk[:cut].split(b"\n")
        rest = chunk[cut + 1 :]
        yield line_no, lines
        line_no += len(lines)
    if overlong is not None:
        yield overlong
    elif rest:
        yield line_no, [rest]


def _read_jsonl(path: Path, counts: FileCounts, stage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    source = str(path)
    frames: list[pl.DataFrame] = []
    slow_rows: list[tuple] = []
    reject_rows: list[tuple] = []
    notes: Counter[str] = Counter()
    try:
        for block in _iter_blocks(path):
            if isinstance(block, _Overlong):
                raw = block.head.decode("utf-8", errors="backslashreplace")
                reason = f"line too long ({block.size} bytes > {MAX_LINE_BYTES})"
                reject_rows.append(_reject_row(source, block.line, stage, reason, raw))
            elif isinstance(block, _Broken):
                reject_rows.append(_reject_row(source, block.line, stage, block.reason, None))
                notes["data ends early"] += 1
            else:
                _read_block(source, *block, frames, slow_rows, reject_rows, notes, stage)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    counts.notes.update(notes)
    frames.append(_frame_from_rows(slow_rows))
    frame = pl.concat([f for f in frames if f.height] or [empty_frame()], how="vertical").sort("_line")
    return frame, _rejects_from_rows(sorted(reject_rows, key=lambda r: r[1] or 0))


def _read_block(
    source: str,
    start: int,
    lines: list[bytes],
    frames: list[pl.DataFrame],
    slow_rows: list[tuple],
    reject_rows: list[tuple],
    notes: Counter[str],
    stage: str,
) -> None:
    bulk: list[int] = []
    for i, line in enumerate(lines):
        if line.endswith(b"\r"):
            notes["CRLF line endings"] += 1
        if not line.strip():
            notes["blank lines skipped"] += 1
        elif (
            len(line) <= MAX_LINE_BYTES
            and line[:1] == b"{"
            and line.rstrip().endswith(b"}")
            and (_FAST_MARKERS[0] in line or _FAST_MARKERS[1] in line)
            # only a line with this many brackets can nest too deep (pyarrow crashes on those)
            and line.count(b"[") + line.count(b"{") <= MAX_DEPTH
        ):
            bulk.append(i)
        else:
            _read_line_slow(source, start + i, line, slow_rows, reject_rows, stage, notes)
    if bulk:
        frames.extend(_read_bulk(source, start, lines, bulk, slow_rows, reject_rows, stage, notes))


class _LimitError(ValueError):
    """A JSON value over one of the reader's limits."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _LimitError(f"number too long ({digits} digits > {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _LimitError(f"number out of range ({text[:24]})")
    return value


def _parse_constant(name: str) -> Any:
    raise _LimitError(f"{name} is not valid JSON")


def json_depth(line: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON line, brackets inside strings ignored."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', line), dtype=np.uint8)
    if skeleton.size == 0:
        return 0
    steps = ((skeleton == 91) | (skeleton == 123)).astype(np.int32)
    steps -= (skeleton == 93) | (skeleton == 125)
    return int(np.cumsum(steps).max())


def _parse_line(line: bytes, text: str) -> Any:
    """json.loads with the reader's limits; raises _LimitError or json.JSONDecodeError."""
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH:
        depth = json_depth(line)
        if depth > MAX_DEPTH:
            raise _LimitError(f"nesting too deep ({depth} levels > {MAX_DEPTH})")
    obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    if b"\\u" in line and _SURROGATE_ESCAPE.search(line):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _LimitError("lone surrogate escape in a string (not valid Unicode)") from None
    return obj


def _read_line_slow(
    source: str,
    line_no: int,
    line: bytes,
    rows: list[tuple],
    rejects: list[tuple],
    stage: str,
    notes: Counter[str],
) -> None:
    if line.startswith(_BOM):  # also mid-file, where `cat a.jsonl b.jsonl` puts it
        line = line[len(_BOM) :]
        notes["utf-8 BOM removed"] += 1
        if not line.strip():
            notes["blank lines skipped"] += 1
            return
    if len(line) > MAX_LINE_BYTES:
        raw = line[:RAW_KEEP_CHARS].decode("utf-8", errors="backslashreplace")
        rejects.append(
            _reject_row(source, line_no, stage, f"line too long ({len(line)} bytes > {MAX_LINE_BYTES})", raw)
        )
        return
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = line.decode("utf-8", errors="backslashreplace")
        rejects.append(
            _reject_row(
                source,
                line_no,
                stage,
                f"invalid UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start})",
                raw,
            )
        )
        return
    try:
        obj = _parse_line(line, text)
    except _LimitError as exc:
        rejects.append(_reject_row(source, line_no, stage, str(exc), text))
        return
    except json.JSONDecodeError as exc:
        rejects.append(
            _reject_row(source, line_no, stage, f"invalid JSON: {exc.msg} (column {exc.colno})", text)
        )
        return
    try:
        record = coerce_record(obj)
        if len(record.output) > MAX_ITEMS:
            raise RecordError(f"too many output items ({len(record.output)} > {MAX_ITEMS})", "$.output")
        if not _SCHEMA_ONLY_KEYS.isdisjoint(obj):
            error = first_error("record", record.to_dict())
            if error is not None:
                raise RecordError(error.message, error.json_path)
    except RecordError as exc:
        rejects.append(_reject_row(source, line_no, stage, exc.reason, text, exc.path))
        return
    if record.lowered_kinds:
        notes[KINDS_LOWERED] += 1
    rows.append(_record_row(record, source, line_no))


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("query", pa.string()), ("output", pa.list_(pa.list_(pa.string()))), ("category", pa.string())]
    )


def _read_bulk(
    source: str,
    start: int,
    lines: list[bytes],
    indices: list[int],
    slow_rows: list[tuple],
    rejects: list[tuple],
    stage: str,
    notes: Counter[str],
    screened: bool = False,
) -> list[pl.DataFrame]:
    """Read lines[indices] with pyarrow. On failure, bisect; small failing groups are screened
    line by line (bad lines take the careful path) and the rest is read in bulk again."""
    import pyarrow.json as pj

    if len(indices) <= _MIN_BULK:
        for i in indices:
            _read_line_slow(source, start + i, lines[i], slow_rows, rejects, stage, notes)
        return []
    buffer = b"\n".join(lines[i] for i in indices)
    try:
        table = pj.read_json(
            io.BytesIO(buffer),
            read_options=pj.ReadOptions(
                block_size=max(1 << 20, min(len(buffer) + 1, 1 << 30)), use_threads=True
            ),
            parse_options=pj.ParseOptions(explicit_schema=_arrow_schema(), unexpected_field_behavior="infer"),
        )
        if table.num_rows != len(indices):
            raise ValueError("row count mismatch")
        frame = pl.from_arrow(table)
    except Exception:  # pyarrow raises several error types; any failure means: narrow it down
        if screened:
            for i in indices:
                _read_line_slow(source, start + i, lines[i], slow_rows, rejects, stage, notes)
            return []
        if len(indices) > _SCREEN_MAX:
            half = len(indices) // 2
            return _read_bulk(
                source, start, lines, indices[:half], slow_rows, rejects, stage, notes
            ) + _read_bulk(source, start, lines, indices[half:], slow_rows, rejects, stage, notes)
        plain: list[int] = []
        for i in indices:
            try:
                ok = isinstance(json.loads(lines[i]), dict)
            except ValueError:
                ok = False
            if ok:
                plain.append(i)
            else:
                _read_line_slow(source, start + i, lines[i], slow_rows, rejects, stage, notes)
        return (
            _read_bulk(source, start, lines, plain, slow_rows, rejects, stage, notes, screened=True)
            if plain
            else []
        )
    inexact = _inexact_numbers(frame)
    if inexact is not None and inexact.any():
        # pyarrow turned a long integer into a float: let the careful path decide on those rows
        for j in inexact.arg_true().to_list():
            _read_line_slow(source, start + indices[j], lines[indices[j]], slow_rows, rejects, stage, notes)
        indices = [i for i, bad in zip(indices, inexact.to_list()) if not bad]
        frame = frame.filter(~inexact)
    line_numbers = pl.Series("_line", [start + i for i in indices], dtype=pl.Int64)
    frame = _to_frame_columns(frame, source, line_numbers)
    frame, lowered = _lower_kinds(frame)
    if lowered:
        notes[KINDS_LOWERED] += lowered
    kept, bad = _validate_bulk(frame)
    for line_no, reason, path in bad.select("_line", "_why", "_path").iter_rows():
        raw = lines[line_no - start].decode("utf-8", errors="backslashreplace")
        rejects.append(_reject_row(source, line_no, stage, reason, raw, path))
    return [kept]


def _inexact_expr(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
    if dtype.is_float():
        return expr.abs() >= _EXACT_FLOAT
    if isinstance(dtype, pl.Struct):
        parts = [_inexact_expr(expr.struct.field(f.name), f.dtype) for f in dtype.fields]
        parts = [p for p in parts if p is not None]
        return pl.any_horizontal(parts) if parts else None
    if isinstance(dtype, pl.List):
        inner = _inexact_expr(pl.element(), dtype.inner)
        return None if inner is None else expr.list.eval(inner).list.any()
    return None


def _inexact_numbers(frame: pl.DataFrame) -> pl.Series | None:
    """Rows holding a float at or past 2**53: a long integer literal pyarrow could not keep exactly."""
    parts = [
        _inexact_expr(pl.col(name), dtype)
        for name, dtype in frame.schema.items()
        if name not in ("query", "output", "category")
    ]
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return frame.select(pl.any_horizontal(parts).fill_null(False).alias("inexact")).to_series()


def _to_frame_columns(frame: pl.DataFrame, source: str, line_numbers: pl.Series) -> pl.DataFrame:
    columns = frame.columns
    query = pl.col("query")
    if "input" in columns:
        query = pl.coalesce(pl.col("query"), pl.col("input").cast(pl.Utf8, strict=False))
    extra_cols = [c for c in columns if c not in _CORE_KEYS and c not in ("input", "searches")]
    meta = (
        pl.when(pl.col("meta").is_not_null()).then(pl.col("meta").struct.json_encode()).otherwise(None)
        if "meta" in columns and isinstance(frame.schema["meta"], pl.Struct)
        else pl.lit(None, pl.Utf8)
    )
    extra = pl.struct(extra_cols).struct.json_encode() if extra_cols else pl.lit(None, pl.Utf8)
    out = frame.select(
        query.alias("query"),
        pl.col("output"),
        pl.col("category"),
        meta.alias("meta"),
        extra.alias("extra"),
        pl.lit(source).alias("_source"),
    ).with_columns(line_numbers)
    if "meta" in columns and not isinstance(frame.schema["meta"], pl.Struct):
        # meta present but not an object in every row: let the careful path decide per row
        out = out.with_columns(pl.lit("__not_object__").alias("meta"))
    return out


def _lower_kinds(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``["LEX", ...]`` -> ``["lex", ...]``: kinds are case-insensitive on read, lower-case in records."""
    kinds = pl.col("output").list.eval(pl.element().list.get(0, null_on_oob=True))
    upper = kinds.list.eval(pl.element() != pl.element().str.to_lowercase()).list.any().fill_null(False)
    count = int(frame.select(upper.sum()).item())
    if not count:
        return frame, 0
    lowered = pl.col("output").list.eval(
        pl.when(pl.element().list.len() == 2)
        .then(
            pl.concat_list(
                pl.element().list.get(0, null_on_oob=True).str.to_lowercase(),
                pl.element().list.get(1, null_on_oob=True),
            )
        )
        .otherwise(pl.element())
    )
    return frame.with_columns(pl.when(upper).then(lowered).otherwise(pl.col("output")).alias("output")), count


def _validate_bulk(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The record schema's rules as polars expressions (same reasons as the careful path)."""
    item_len_bad = pl.col("output").list.eval(pl.element().list.len() != 2).list.any()
    kinds = pl.col("output").list.eval(pl.element().list.get(0, null_on_oob=True))
    texts = pl.col("output").list.eval(pl.element().list.get(1, null_on_oob=True))
    unknown_kind = kinds.list.eval(
        pl.element().filter(~pl.element().is_in(list(KINDS)) | pl.element().is_null())
    ).list.first()
    empty_text = texts.list.eval(pl.element().is_null() | (pl.element().str.strip_chars() == "")).list.any()
    newline_text = texts.list.eval(pl.element().str.contains(r"[\r\n]")).list.any()
    query_text = pl.col("query").str.strip_chars()
    why = (
        pl.when(pl.col("query").is_null())
        .then(pl.lit("missing query"))
        .when(query_text == "")
        .then(pl.lit("empty query"))
        .when(query_text.str.contains(r"[\r\n]"))
        .then(pl.lit("newline inside query"))
        .when(pl.col("query").str.contains(CONTROL_CHARS))
        .then(pl.lit("control character in query"))
        .when(pl.col("query").str.replace_all(INVISIBLE_CHARS, "").str.len_bytes() == 0)
        .then(pl.lit("query has no visible characters"))
        .when(pl.col("output").is_null())
        .then(pl.lit("missing output"))
        .when(pl.col("output").list.len() == 0)
        .then(pl.lit("empty output"))
        .when(item_len_bad)
        .then(pl.lit("output item is not a [kind, text] pair"))
        .when(unknown_kind.is_not_null())
        .then(pl.format("unknown kind '{}'", unknown_kind))
        .when(empty_text)
        .then(pl.lit("empty text"))
        .when(newline_text)
        .then(pl.lit("newline inside item"))
        .when(pl.col("meta") == "__not_object__")
        .then(pl.lit("meta is not an object"))
        .when(pl.col("output").list.len() > MAX_ITEMS)
        .then(pl.format("too many output items ({} > {})", pl.col("output").list.len(), pl.lit(MAX_ITEMS)))
        .otherwise(None)
    )
    path = (
        pl.when(pl.col("_why").str.contains("query"))
        .then(pl.lit("$.query"))
        .when(pl.col("_why").str.contains("meta"))
        .then(pl.lit("$.meta"))
        .otherwise(pl.lit("$.output"))
    )
    marked = frame.with_columns(why.alias("_why")).with_columns(path.alias("_path"))
    bad = marked.filter(pl.col("_why").is_not_null())
    kept = marked.filter(pl.col("_why").is_null()).drop("_why", "_path")
    return kept, bad


def _read_parquet(path: Path, counts: FileCounts, stage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    try:
        table = pl.read_parquet(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    rows: list[tuple] = []
    rejects: list[tuple] = []
    for offset, row in enumerate(table.iter_rows(named=True)):
        line_no = offset + 1
        for key in ("meta", "extra"):
            if isinstance(row.get(key), str):
                with contextlib.suppress(json.JSONDecodeError):
                    decoded = json.loads(row[key])
                    if key == "extra" and isinstance(decoded, dict):
                        row.pop("extra")
                        for k, v in decoded.items():
                            row.setdefault(k, v)
                    else:
                        row[key] = decoded
        row = {
            k: v
            for k, v in row.items()
            if not k.startswith("_") and not (k in ("meta", "category", "extra") and v is None)
        }
        try:
            record = coerce_record(row)
        except RecordError as exc:
            rejects.append(
                _reject_row(str(path), line_no, stage, exc.reason, json.dumps(row, default=str), exc.path)
            )
            continue
        rows.append(_record_row(record, str(path), line_no))
    return _frame_from_rows(rows), _rejects_from_rows(rejects)


# ---------------------------------------------------------------- writing


_GROUP: contextvars.ContextVar[list[tuple[str, Path]] | None] = contextvars.ContextVar(
    "output_group", default=None
)


@contextlib.contextmanager
def output_group() -> Iterator[None]:
    """Every atomic_write inside lands together when the block succeeds, or none does: a run's
    output, ledger, summary, plan and report are never a mix of old and new."""
    if _GROUP.get() is not None:
        yield
        return
    pending: list[tuple[str, Path]] = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _GROUP.reset(token)
    try:
        for _, target in pending:  # what would stop a rename half-way, before the first one
            if target.is_dir():
                raise OutputError(f"{target}: is a directory; nothing was written")
        for tmp, target in pending:
            os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({describe_os_error(exc)})") from exc
    finally:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.*.tmp`` files a killed run left beside ``target`` (their writer
    is gone); a live writer's files stay."""
    prefix = f".{target.name}."
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent if str(target.parent) else "."):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[len(prefix) : -len(".tmp")].split(".", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def describe_os_error(exc: BaseException) -> str:
    """One short phrase for a failed write (polars' writers raise OSError without errno)."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "os error 28" in str(exc):
        return "disk full (no space left on device)"
    if code == errno.EDQUOT or "os error 122" in str(exc):
        return "disk quota exceeded"
    return getattr(exc, "strerror", None) or str(exc)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    Text written is redacted (no secret reaches a file). A failure (a full disk) removes the
    temporary file and raises OutputError naming ``path``; inside :func:`output_group` the
    rename waits for the whole group."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({describe_os_error(exc)})") from exc
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    group = _GROUP.get()
    try:
        # a lone surrogate that came in as a JSON escape goes out as one, not as an error
        text_options = {"encoding": "utf-8", "errors": "backslashreplace"}
        with os.fdopen(fd, "wb" if "b" in mode else "w", **({} if "b" in mode else text_options)) as handle:
            if "b" in mode:
                yield handle
            else:
                text = io.StringIO()
                yield text
                handle.write(redact(text.getvalue()))
            handle.flush()
            os.fsync(handle.fileno())
        if group is None:
            os.replace(tmp, target)
        else:
            group.append((tmp, target))
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OutputError(f"{target}: cannot write ({describe_os_error(exc)}); nothing was written") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _encode_lines(frame: pl.DataFrame) -> pl.Series:
    """One JSON object per row, built with polars string expressions (no Python per row)."""
    plain = [c for c in frame.columns if not c.startswith("_") and c not in ("category", "meta", "extra")]
    if not plain:
        raise ValueError("nothing to write: the frame has no record columns")
    core = pl.struct(plain).struct.json_encode()
    pieces = [core.str.strip_suffix("}")]
    if "category" in frame.columns:
        # a missing category is left out rather than written as null
        pair = pl.struct("category").struct.json_encode().str.slice(1).str.strip_suffix("}")
        pieces.append(
            pl.when(pl.col("category").is_not_null()).then(pl.lit(",") + pair).otherwise(pl.lit(""))
        )
    if "meta" in frame.columns:
        pieces.append(
            pl.when(pl.col("meta").is_not_null())
            .then(pl.lit(',"meta":') + pl.col("meta"))
            .otherwise(pl.lit(""))
        )
    if "extra" in frame.columns:
        inner = pl.col("extra").str.strip_chars().str.slice(1).str.strip_suffix("}")
        pieces.append(
            pl.when(pl.col("extra").is_not_null() & (inner.str.strip_chars() != ""))
            .then(pl.lit(",") + inner)
            .otherwise(pl.lit(""))
        )
    pieces.append(pl.lit("}"))
    return frame.select(pl.concat_str(pieces).alias("line")).get_column("line")


def write_records(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write records as .jsonl, .jsonl.gz or .parquet (by suffix), atomically."""
    target = Path(path)
    suffix = _suffix(target)
    if suffix == ".parquet":
        with atomic_write(target, "wb") as handle:
            frame.select([c for c in frame.columns if not c.startswith("_")]).write_parquet(handle)
        return target
    lines = _encode_lines(frame) if frame.height else pl.Series("line", [], dtype=pl.Utf8)
    payload = ("\n".join(lines.to_list()) + ("\n" if frame.height else "")).encode("utf-8")
    with atomic_write(target, "wb") as handle:
        handle.write(gzip.compress(payload, compresslevel=6) if suffix.endswith(".gz") else payload)
    return target


def frame_to_dicts(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Records as plain dicts (meta/extra decoded, bookkeeping columns dropped)."""
    if frame.height == 0:
        return []
    return [json.loads(line) for line in _encode_lines(frame).to_list()]


def rejects_from_frame(rejected: pl.DataFrame, stage: str) -> pl.DataFrame:
    """Ledger rows for a stage's rejected frame (input columns + ``_reason``)."""
    if rejected.height == 0:
        return empty_rejects()
    raw = _encode_lines(rejected.drop("_reason"))
    return pl.DataFrame(
        {
            "source": rejected.get_column("_source")
            if "_source" in rejected.columns
            else pl.repeat("<memory>", rejected.height, eager=True),
            "line": rejected.get_column("_line")
            if "_line" in rejected.columns
            else pl.repeat(None, rejected.height, dtype=pl.Int64, eager=True),
            "stage": pl.repeat(stage, rejected.height, eager=True),
            "reason": rejected.get_column("_reason"),
            "path": pl.repeat(None, rejected.height, dtype=pl.Utf8, eager=True),
            "raw": raw,
        },
        schema=REJECT_SCHEMA,
    )


def write_rejects(rejects: pl.DataFrame, path: str | Path) -> Path:
    """Write the ledger (JSONL: source, line, stage, reason, path, raw) atomically."""
    target = Path(path)
    with atomic_write(target, "wb") as handle:
        if rejects.height:
            redact_frame(rejects.select(list(REJECT_SCHEMA)), ["reason", "raw", "source"]).write_ndjson(
                handle
            )
    return target


def default_rejects_path(output: str | Path) -> Path:
    """``out/train.jsonl`` -> ``out/train.rejects.jsonl`` (beside the output)."""
    target = Path(output)
    name = target.name
    for suffix in (".jsonl.gz", ".jsonl", ".parquet", ".json", ".ndjson"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return target.with_name(f"{name}.rejects.jsonl")


def read_json_objects(
    path: str | Path, error: type[Exception] = ValueError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a small JSONL file (a BOM is dropped).

    A line that is not JSON, or not an object, raises ``error`` naming ``file:line``. This is for
    inputs that must be right as a whole (query lists, retrieval collections, train files);
    record files keep going and send bad rows to the ledger instead (:func:`read_records`).
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: not a JSON object")
            yield number, row


def read_query_lines(path: str | Path) -> list[str]:
    """A query list: one per line, ``#`` comments and blank lines ignored; JSONL records also accepted."""
    target = Path(path)
    check_readable(target, records=target.name.endswith((".jsonl", ".jsonl.gz", ".parquet")))
    if target.name.endswith((".jsonl", ".jsonl.gz", ".parquet")):
        return read_records([target]).frame.get_column("query").to_list()
    queries = []
    for line in target.read_text(encoding="utf-8-sig").splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            queries.append(text)
    return queries


# ---------------------------------------------------------------- curated files

CURATION_COLUMNS: dict[str, pl.DataType] = {
    "score": pl.Float64(),
    "rating": pl.Utf8(),
    "deductions": pl.List(pl.Utf8()),
    "flags": pl.List(pl.Utf8()),
    "facets": pl.List(pl.Utf8()),
    "category_reason": pl.Utf8(),
    "dup_group": pl.Utf8(),
    "split": pl.Utf8(),
    "leak": pl.Utf8(),
}
"""Columns stages add; on re-reading a curated file they come back from ``extra`` as columns."""


def lift_curation_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Turn curation keys kept in ``extra`` (score, flags, dup_group, split ...) back into columns,
    so a curated file can be fed to the next stage (``curate split`` after ``curate balance``)."""
    if "extra" not in frame.columns or frame.height == 0:
        return frame
    pattern = "|".join(f'"{name}"' for name in CURATION_COLUMNS)
    has = frame.get_column("extra").str.contains(pattern).fill_null(False)
    if not has.any():
        return frame
    present: set[str] = set()
    decoded: list[dict[str, Any]] = []
    rest: list[str | None] = []
    for text, hit in zip(frame.get_column("extra").to_list(), has.to_list()):
        if not hit:
            decoded.append({})
            rest.append(text)
            continue
        data = json.loads(text)
        lifted = {k: data.pop(k) for k in list(data) if k in CURATION_COLUMNS}
        present.update(lifted)
        decoded.append(lifted)
        rest.append(json.dumps(data, ensure_ascii=False) if data else None)
    columns = []
    for name in sorted(present):
        dtype = CURATION_COLUMNS[name]
        values = [row.get(name) for row in decoded]
        if name == "dup_group":
            values = [None if v is None else str(v) for v in values]
        columns.append(pl.Series(name, values, dtype=dtype, strict=False))
    return frame.with_columns(pl.Series("extra", rest, dtype=pl.Utf8), *columns)


def read_frame(paths: Sequence[str | Path], stage: str = "validate") -> ReadResult:
    """:func:`read_records` plus :func:`lift_curation_columns`: a curated file read back keeps its columns."""
    read = read_records(paths, stage=stage)
    read.frame = lift_curation_columns(read.frame)
    return read


INPUT_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.parquet")
"""What a directory given as input contributes (rejects ledgers ``*.rejects.jsonl`` excluded)."""
_GLOB_CHARS = frozenset("*?[")


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Input arguments to files: a directory gives its ``*.jsonl``, ``*.jsonl.gz`` and
    ``*.parquet`` files (not ledgers), a quoted glob its matches, both sorted; a plain path
    stays as given (the reader names a missing file). A directory or glob that matches nothing
    is an error, so a typo never reads zero rows silently."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                {
                    p
                    for pattern in INPUT_PATTERNS
                    for p in path.glob(pattern)
                    if p.is_file() and not p.name.endswith(".rejects.jsonl")
                }
            )
            if not found:
                raise InputError(f"{path}: directory holds no {', '.join(INPUT_PATTERNS)} files")
            out.extend(found)
        elif not path.exists() and _GLOB_CHARS & set(str(raw)):
            anchor = Path(path.anchor) if path.is_absolute() else Path()
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(raw)
            found = sorted(p for p in anchor.glob(pattern) if p.is_file())
            if not found:
                raise InputError(f"{raw}: no file matches this pattern")
            out.extend(found)
        else:
            out.append(path)
    return list(dict.fromkeys(out))
