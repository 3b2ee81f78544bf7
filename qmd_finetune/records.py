"""The record type and the lex/vec/hyde text format.

A record is ``{"query": str, "output": [[kind, text], ...], "category"?: str, "meta"?: {...}}``.
Legacy shapes are accepted on read and turned into that form by :func:`coerce_record`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

KINDS: tuple[str, ...] = ("hyde", "lex", "vec")
KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}

Item = tuple[str, str]

ONLY_RE = re.compile(r"\s+/only:(lex|vec|hyde)\s*$", re.IGNORECASE)
# The spelling of qmd's older only-mode data ("query only: lex"); the rubric does not
# recognize it, so normalize rewrites it to the " /only:lex" form.
LEGACY_ONLY_RE = re.compile(r"\s+only:\s*(lex|vec|hyde)\s*$", re.IGNORECASE)
_PREFIX_RE = re.compile(r"^\s*(lex|vec|hyde)\s*:\s*(.*)$", re.IGNORECASE)
CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
"""C0/C1 control characters other than tab and line breaks (same syntax for re and polars)."""
INVISIBLE_CHARS = r"[\p{Cc}\p{Cf}\p{Z}\p{Co}\p{Cn}\x{115F}\x{1160}\x{3164}\x{FFA0}\x{2800}]"
"""Characters that show nothing (controls, format characters such as zero-width spaces and the
BOM, separators, private-use and unassigned code points, blank letters); polars syntax."""
CONTROL_RE = re.compile(CONTROL_CHARS)
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def has_visible_text(text: str) -> bool:
    """False for text made only of characters that show nothing (see INVISIBLE_CHARS)."""
    return any(ch.isprintable() and not ch.isspace() and ch not in _BLANK_LETTERS for ch in text)


class RecordError(ValueError):
    """A row that cannot become a record; ``reason`` is short and stable, ``path`` is a JSON path."""

    def __init__(self, reason: str, path: str = "$") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


@dataclass
class Record:
    query: str
    output: list[Item]
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    lowered_kinds: bool = field(default=False, compare=False, repr=False)
    """True when the input spelled a kind in upper case (``LEX``); the record holds ``lex``."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"query": self.query, "output": [[k, t] for k, t in self.output]}
        if self.category is not None:
            data["category"] = self.category
        if self.meta:
            data["meta"] = self.meta
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    def text(self) -> str:
        return render(self.output)


# ---------------------------------------------------------------- only mode


def only_mode(query: str) -> tuple[str, str | None]:
    """Split ``"q /only:lex"`` into ``("q", "lex")``; ``(query, None)`` when not only-mode."""
    match = ONLY_RE.search(query)
    if not match:
        return query, None
    return query[: match.start()].strip(), match.group(1).lower()


def with_only(query: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    base, _ = only_mode(query)
    return f"{base} /only:{kind}"


def modernize_only(query: str) -> tuple[str, bool]:
    """Rewrite the legacy ``"q only: lex"`` spelling to ``"q /only:lex"``; returns (query, changed)."""
    if ONLY_RE.search(query):
        return query, False
    match = LEGACY_ONLY_RE.search(query)
    if not match:
        return query, False
    return f"{query[: match.start()].strip()} /only:{match.group(1).lower()}", True


# ---------------------------------------------------------------- text format


def render(items: list[Item] | list[list[str]]) -> str:
    """Canonical text: hyde first, then lex, then vec; order within a kind kept."""
    ordered = sorted(((k, t) for k, t in items), key=lambda it: KIND_ORDER.get(it[0], len(KINDS)))
    return "\n".join(f"{kind}: {text}" for kind, text in ordered)


def canonical_order(items: list[Item]) -> list[Item]:
    return sorted(items, key=lambda it: KIND_ORDER.get(it[0], len(KINDS)))


def parse_prefixed(text: str) -> tuple[list[Item], list[str]]:
    """Parse ``kind: text`` lines leniently (any case, spaces around the colon).

    Returns the items and the non-empty lines that had no known prefix.
    """
    items: list[Item] = []
    unknown: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _PREFIX_RE.match(line)
        if match and match.group(2).strip():
            items.append((match.group(1).lower(), match.group(2).strip()))
        else:
            unknown.append(line)
    return items, unknown


THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def parse_expansion(text: str) -> list[Item]:
    """Parse a model's answer: prefixed lines, a JSON list of pairs, or a JSON object.

    JSON objects may map kinds to a string or a list of strings. Raises RecordError when
    nothing usable is found.
    """
    cleaned = THINK_RE.sub("", text).replace("<|im_end|>", "").strip()
    cleaned = _FENCE_RE.sub("", cleaned).strip()
    if cleaned[:1] in "[{":
        try:
            data = json.loads(cleaned)
        except json.JSONDecodeError:
            data = None
        if data is not None:
            items = _items_from_json(data)
            if items:
                return items
    items, _ = parse_prefixed(cleaned)
    if not items:
        raise RecordError("no lex:/vec:/hyde: items in response")
    return items


def _items_from_json(data: Any) -> list[Item]:
    items: list[Item] = []
    if isinstance(data, dict):
        for key in ("output", "expansion", "expansions", "items"):
            if key in data and not any(k in data for k in KINDS):
                return _items_from_json(data[key])
        for kind in KINDS:
            value = data.get(kind)
            values = value if isinstance(value, list) else [value]
            items.extend((kind, v.strip()) for v in values if isinstance(v, str) and v.strip())
        return items
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, (list, tuple)) and len(entry) == 2:
                kind, value = entry
            elif isinstance(entry, dict):
                kind, value = entry.get("type") or entry.get("kind"), entry.get("text") or entry.get("query")
            else:
                continue
            if isinstance(kind, str) and kind.lower() in KINDS and isinstance(value, str) and value.strip():
                items.append((kind.lower(), value.strip()))
    return items


# ---------------------------------------------------------------- coercion of input rows


def _check_item(kind: Any, text: Any, path: str) -> Item:
    if not isinstance(kind, str):
        raise RecordError("item kind is not a string", path + "[0]")
    if kind not in KINDS:
        if kind.lower() not in KINDS:
            raise RecordError(f"unknown kind {kind!r}", path + "[0]")
        kind = kind.lower()
    if not isinstance(text, str):
        raise RecordError("item text is not a string", path + "[1]")
    if not text.strip():
        raise RecordError("empty text", path + "[1]")
    if "\n" in text or "\r" in text:
        raise RecordError("newline inside item", path + "[1]")
    return kind, text


def _output_from_string(text: str) -> list[Item]:
    items, unknown = parse_prefixed(text)
    if unknown:
        raise RecordError(f"output line without lex:/vec:/hyde: prefix: {unknown[0][:60]!r}", "$.output")
    if not items:
        raise RecordError("empty output", "$.output")
    return items


def coerce_record(obj: Any) -> Record:
    """Turn one parsed JSON value into a Record, accepting the legacy shapes.

    Shapes: canonical ``{"query", "output": [[kind, text]]}``; ``{"input", "output": "<text>"}``;
    ``{"query", "searches": [{"type", "query"}]}``. Raises RecordError with a reason.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"JSON value is not an object ({type(obj).__name__})")
    data = dict(obj)
    query = data.pop("query", None)
    if query is None and "input" in data:
        query = data.pop("input")
    if query is None:
        raise RecordError("missing query", "$.query")
    if not isinstance(query, str):
        raise RecordError(f"query is not a string ({type(query).__name__})", "$.query")
    if not query.strip():
        raise RecordError("empty query", "$.query")
    if "\n" in query.strip() or "\r" in query.strip():
        raise RecordError("newline inside query", "$.query")
    if CONTROL_RE.search(query):
        raise RecordError("control character in query", "$.query")
    if not has_visible_text(query):
        raise RecordError("query has no visible characters", "$.query")

    if "output" in data:
        raw = data.pop("output")
        data.pop("searches", None)
        if isinstance(raw, str):
            items = _output_from_string(raw)
        elif isinstance(raw, list):
            items = []
            for i, entry in enumerate(raw):
                path = f"$.output[{i}]"
                if isinstance(entry, (list, tuple)) and len(entry) == 2:
                    items.append(_check_item(entry[0], entry[1], path))
                elif isinstance(entry, dict) and ("type" in entry or "kind" in entry):
                    items.append(
                        _check_item(
                            entry.get("type", entry.get("kind")), entry.get("text", entry.get("query")), path
                        )
                    )
                else:
                    raise RecordError("output item is not a [kind, text] pair", path)
        else:
            raise RecordError(f"output has wrong type ({type(raw).__name__})", "$.output")
    elif "searches" in data:
        raw = data.pop("searches")
        if not isinstance(raw, list):
            raise RecordError(f"searches has wrong type ({type(raw).__name__})", "$.searches")
        items = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict):
                raise RecordError("search is not an object", f"$.searches[{i}]")
            items.append(_check_item(entry.get("type"), entry.get("query"), f"$.searches[{i}]"))
    else:
        raise RecordError("missing output", "$.output")
    if not items:
        raise RecordError("empty output", "$.output")

    category = data.pop("category", None)
    if category is not None and not isinstance(category, str):
        raise RecordError("category is not a string", "$.category")
    meta = data.pop("meta", None) or {}
    if not isinstance(meta, dict):
        raise RecordError("meta is not an object", "$.meta")
    lowered = any(
        isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str) and entry[0] not in KINDS
        for entry in (raw if isinstance(raw, list) else [])
    )
    return Record(query=query, output=items, category=category, meta=meta, extra=data, lowered_kinds=lowered)
