"""``generate offline``: turn an existing dataset (local files or a Hub id) into records, no model needed.

Mappings:
- ``records``: rows that already are records (``query``/``input`` + ``output`` or ``searches``);
- ``expansions``: the public query-expansion shape ``{"query", "expansions": [str, ...]}``:
  each expansion becomes ``lex`` (short keyword form) or ``vec`` (a sentence/question);
  hyde is omitted, or written by ``--hyde-model``;
- ``columns``: explicit ``--lex-column``/``--vec-column``/``--hyde-column`` (lists or newline text);
- ``auto`` (default): the first of the above that fits the columns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmd_finetune.records import KINDS, Record, RecordError, coerce_record

FORMATS = {".json": "json", ".jsonl": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}
QUESTION_WORDS = frozenset(
    "what how why when where which who whom whose is are can does do should could would will".split()
)
LEX_MAX_WORDS = 5


class DatasetLoadError(RuntimeError):
    pass


@dataclass
class ColumnMapping:
    mapping: str = "auto"
    query: str | None = None
    output: str | None = None
    expansions: str | None = None
    lex: str | None = None
    vec: str | None = None
    hyde: str | None = None
    category: str | None = None


@dataclass
class OfflineResult:
    rows: int
    kept: int
    rejected: Counter = field(default_factory=Counter)
    mapping: str = ""
    hyde_filled: int = 0
    hyde_failed: int = 0


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes"}
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def load_rows(dataset: str, split: str = "train", data_format: str | None = None) -> Any:
    """A ``datasets.Dataset`` from a local file/dir (JSON, JSONL, CSV, Parquet) or a Hub id."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(dataset)
    if path.exists():
        files = (
            [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS)
        )
        if not files:
            raise DatasetLoadError(f"no .json/.jsonl/.csv/.parquet files in {path}")
        kinds = Counter(FORMATS.get(p.suffix.lower()) for p in files)
        fmt = data_format or kinds.most_common(1)[0][0]
        if fmt is None:
            raise DatasetLoadError(f"cannot tell the format of {path}; pass --format json|csv|parquet")
        chosen = (
            [str(p) for p in files if FORMATS.get(p.suffix.lower()) == fmt] if path.is_dir() else [str(path)]
        )
        return datasets.load_dataset(fmt, data_files=chosen, split="train")
    if _hub_offline():
        raise DatasetLoadError(
            f"{dataset!r} is not a local path and the Hugging Face Hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE "
            "is set): download the dataset where the network allows, then pass the local file or directory"
        )
    try:
        return datasets.load_dataset(dataset, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for network failures
        raise DatasetLoadError(
            f"could not load {dataset!r} from the Hub: {type(exc).__name__}: {exc}"
        ) from exc


def classify_expansion(text: str) -> str:
    """``lex`` for a short keyword form, ``vec`` for a sentence or question."""
    words = text.split()
    if not words:
        return "lex"
    if text.rstrip().endswith(("?", ".", "!")) or words[0].lower() in QUESTION_WORDS:
        return "vec"
    return "lex" if len(words) <= LEX_MAX_WORDS else "vec"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed if str(v).strip()]
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    return [str(value).strip()]


def resolve_mapping(columns: list[str], mapping: ColumnMapping) -> ColumnMapping:
    cols = set(columns)
    resolved = ColumnMapping(**vars(mapping))
    resolved.query = mapping.query or next(
        (c for c in ("query", "input", "question", "prompt") if c in cols), None
    )
    resolved.category = mapping.category or ("category" if "category" in cols else None)
    if resolved.query is None:
        raise DatasetLoadError(f"no query column (have: {', '.join(columns)}); pass --query-column")
    if mapping.mapping != "auto":
        if mapping.mapping == "expansions":
            resolved.expansions = mapping.expansions or "expansions"
        return resolved
    if mapping.lex or mapping.vec or mapping.hyde:
        resolved.mapping = "columns"
    elif mapping.expansions or "expansions" in cols:
        resolved.mapping = "expansions"
        resolved.expansions = mapping.expansions or "expansions"
    elif mapping.output or "output" in cols or "searches" in cols:
        resolved.mapping = "records"
        resolved.output = mapping.output or ("output" if "output" in cols else None)
    elif any(k in cols for k in KINDS):
        resolved.mapping = "columns"
        resolved.lex, resolved.vec, resolved.hyde = (k if k in cols else None for k in KINDS[1:] + KINDS[:1])
    else:
        raise DatasetLoadError(
            f"cannot map columns {', '.join(columns)}: pass --mapping and --expansions-column/--lex-column/..."
        )
    return resolved


def _lex_vec_hyde(m: ColumnMapping) -> tuple[str | None, str | None, str | None]:
    return m.lex, m.vec, m.hyde


def row_to_record(row: dict[str, Any], m: ColumnMapping) -> Record:
    query = row.get(m.query) if m.query else None
    category = row.get(m.category) if m.category else None
    category = category if isinstance(category, str) and category.strip() else None
    if m.mapping == "records":
        data = dict(row)
        if m.output and m.output != "output":
            data["output"] = data.pop(m.output)
        if m.query and m.query not in ("query", "input"):
            data["query"] = data.pop(m.query)
        record = coerce_record({k: v for k, v in data.items() if v is not None})
        record.extra = {}
        return record
    if not isinstance(query, str) or not query.strip():
        raise RecordError("missing query", "$.query")
    items: list[tuple[str, str]] = []
    if m.mapping == "expansions":
        for text in _as_list(row.get(m.expansions or "expansions")):
            items.append((classify_expansion(text), " ".join(text.split())))
    else:
        lex_col, vec_col, hyde_col = _lex_vec_hyde(m)
        for kind, column in (("hyde", hyde_col), ("lex", lex_col), ("vec", vec_col)):
            if column:
                items.extend((kind, " ".join(t.split())) for t in _as_list(row.get(column)))
    record = coerce_record({"query": query.strip(), "output": [list(i) for i in items], "category": category})
    return record


def transform(
    dataset: str,
    output: Path,
    rejects: Path | None = None,
    mapping: ColumnMapping | None = None,
    data_format: str | None = None,
    split: str = "train",
    limit: int | None = None,
    hyde_model: str | None = None,
    hyde_options: dict[str, Any] | None = None,
) -> OfflineResult:
    from qmd_finetune.io import atomic_write, default_rejects_path

    rows = load_rows(dataset, split=split, data_format=data_format)
    resolved = resolve_mapping(list(rows.column_names), mapping or ColumnMapping())
    result = OfflineResult(rows=0, kept=0, mapping=resolved.mapping)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    records: list[Record] = []
    reject_rows: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            break
        result.rows += 1
        try:
            record = row_to_record(row, resolved)
        except RecordError as exc:
            result.rejected["map"] += 1
            raw = json.dumps(row, ensure_ascii=False, default=str)
            reject_rows.append(
                {
                    "source": dataset,
                    "line": index + 1,
                    "stage": "map",
                    "reason": exc.reason,
                    "path": exc.path,
                    "raw": raw[:4000],
                }
            )
            continue
        record.meta = {
            **record.meta,
            "source": "offline",
            "dataset": dataset,
            "mapping": resolved.mapping,
            "created": created,
        }
        records.append(record)
    if hyde_model:
        filled, failed = fill_hyde(records, hyde_model, **(hyde_options or {}))
        result.hyde_filled, result.hyde_failed = filled, failed
    with atomic_write(output, "w") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    result.kept = len(records)
    rejects_file = rejects or default_rejects_path(output)
    with atomic_write(rejects_file, "w") as handle:
        for row in reject_rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return result


_HYDE_RE = re.compile(r"^\s*hyde\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def fill_hyde(
    records: list[Record],
    model: str,
    api_base: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 8,
    timeout: float = 60.0,
    max_tokens: int = 120,
    temperature: float = 0.3,
    cache_path: Path | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Add a generated hyde line (first) to every record that has none; returns (filled, failed)."""
    from qmd_finetune.generate.cache import ResponseCache
    from qmd_finetune.generate.prompts import HYDE_PROMPT, load_prompt
    from qmd_finetune.generate.providers import GenerationParams, ProviderConfig, make_provider, pricing_for
    from qmd_finetune.generate.runner import Job, Outcome, Runner, RunnerConfig

    prompt = load_prompt(None, default=HYDE_PROMPT)
    targets = [r for r in records if not any(k == "hyde" for k, _ in r.output)]
    config = ProviderConfig(model=model, api_base=api_base, api_key_env=api_key_env)
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature)
    counts = {"filled": 0, "failed": 0}

    def handle(outcome: Outcome) -> str | None:
        record: Record = outcome.job.payload
        match = _HYDE_RE.search(outcome.response.text) if outcome.response else None
        text = " ".join(match.group(1).split()) if match else ""
        if not text:
            counts["failed"] += 1
            return outcome.error or "no hyde: line in response"
        record.output = [("hyde", text), *record.output]
        record.meta = {**record.meta, "hyde_model": model, "hyde_prompt_sha": prompt.sha}
        counts["filled"] += 1
        return None

    async def go() -> None:
        cache = ResponseCache(cache_path) if cache_path else None
        runner = Runner(
            make_provider(config, concurrency),
            model,
            params,
            RunnerConfig(concurrency=concurrency, timeout=timeout, progress=progress),
            pricing_for(model),
            cache,
        )
        jobs = [Job(key=r.query, messages=prompt.messages(r.query), payload=r) for r in targets]
        try:
            await runner.run(jobs, handle)
        finally:
            if cache is not None:
                cache.close()

    if targets:
        asyncio.run(go())
    return counts["filled"], counts["failed"]
