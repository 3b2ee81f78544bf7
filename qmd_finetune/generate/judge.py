"""Judging one answer of `generate expand`: parse, quality gate, score, schema check, and the
record line. Kept apart from :mod:`expand` so the judging worker process imports only this and
what it needs (no polars, no asyncio runner, no providers): it starts in about a fifth of the
time, and its start no longer competes with the first requests of a run for the CPU."""

from __future__ import annotations

import functools
import signal
from dataclasses import dataclass
from typing import Any

from qmd_finetune import quality
from qmd_finetune.records import Record, RecordError, coerce_record, parse_expansion
from qmd_finetune.redact import redacted_json
from qmd_finetune.reward import score


@dataclass(frozen=True)
class Checks:
    """What judging an answer needs, picklable for the worker process."""

    rubric: str
    quality_gate: bool
    min_score: float | None
    prompt_lines: Any
    secrets: list[str]  # masked in the record line, as JsonlAppender.append masks what it writes


def judge_answer(
    checks: Checks, query: str, category: str | None, text: str, meta: dict[str, Any]
) -> bytes | tuple[str, str]:
    """Parse, gate, score and schema-check one answer: its record as a JSONL line, or the
    ``(stage, reason)`` of its reject."""
    try:
        items = parse_expansion(text)
    except RecordError as exc:
        return "parse", exc.reason
    if checks.quality_gate:
        failures = quality.check(query, items, prompt=checks.prompt_lines)
        if failures:
            return "gate", "; ".join(quality.reasons(failures))
    result = score(query, "\n".join(f"{k}: {t}" for k, t in items), checks.rubric)
    if checks.min_score is not None and result.percentage < checks.min_score:
        return "score", f"score {result.percentage} < {checks.min_score:g} (rubric {checks.rubric})"
    data = Record(query=query, output=list(items), category=category, meta=meta).to_dict()
    data["score"] = result.percentage
    data["rating"] = result.rating
    problem = validate_record(data)
    if problem:
        return "validate", problem
    return (redacted_json(data, checks.secrets) + "\n").encode("utf-8")


def _worker_main(conn: Any, checks: Checks) -> None:
    """The judging process: a batch of rows in, their verdicts out, until None or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    while True:
        try:
            rows = conn.recv()
        except (EOFError, OSError):
            return
        if rows is None:
            return
        verdicts = [judge_answer(checks, *row) for row in rows]
        try:
            conn.send(verdicts)
        except OSError:  # the run stopped (interrupted) while this batch was judged
            return


# What ``python -c`` runs in the judging process: SIGINT is ignored before anything else (the
# parent decides when to stop), the parent's package root goes first on sys.path, then serve().
WORKER_CODE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path.insert(0, sys.argv[1]); "
    "from qmd_finetune.generate.judge import serve; serve(int(sys.argv[2]))"
)


def serve(fd: int) -> None:
    """The judging process's entry: the :class:`Checks` first, then batches, on the connected
    socket ``fd`` (the parent's ``multiprocessing.connection`` framing)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        checks = conn.recv()
    except (EOFError, OSError):
        return
    _worker_main(conn, checks)


@functools.cache
def _has_record_schema() -> bool:
    from qmd_finetune.resources import schema_path

    return schema_path("record").exists()


def validate_record(data: dict[str, Any]) -> str | None:
    """Check against schemas/record.schema.json; the record type's own rules when the schema is absent."""
    from qmd_finetune.resources import first_error

    if not _has_record_schema():
        try:
            coerce_record(data)
        except RecordError as exc:
            return f"{exc.reason} at {exc.path}"
        return None
    first = first_error("record", data)
    if first is None:
        return None
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.path)
    return f"schema: {first.message[:120]} at {path}"
