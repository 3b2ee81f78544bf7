"""Small record builders shared by the curate tests (real frames through io.records_to_frame)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from qmd_finetune.io import records_to_frame

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qmd-reference"


def good(query: str, category: str | None = None, **extra: Any) -> dict[str, Any]:
    """A record that scores well for ``query`` (keeps its words, natural vec, 50-200 char hyde)."""
    record: dict[str, Any] = {
        "query": query,
        "output": [
            ["hyde", f"A short practical passage that explains {query} with one concrete worked example."],
            ["lex", f"{query} reference"],
            ["lex", f"{query} examples list"],
            ["vec", f"how does {query} work in practice for most people"],
            ["vec", f"a beginner friendly explanation of {query} and related ideas"],
        ],
    }
    if category is not None:
        record["category"] = category
    record.update(extra)
    return record


def echo(query: str, category: str | None = None) -> dict[str, Any]:
    """A weak record: lex echoes the query, no hyde."""
    record: dict[str, Any] = {"query": query, "output": [["lex", query], ["vec", query]]}
    if category is not None:
        record["category"] = category
    return record


def frame(records: list[dict[str, Any]], **columns: list[Any]) -> pl.DataFrame:
    out = records_to_frame(records, source="mem.jsonl")
    for name, values in columns.items():
        out = out.with_columns(pl.Series(name, values))
    return out


def write_jsonl(path: Path, records: list[dict[str, Any] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
