"""``train prepare``: records -> chat-formatted train/val JSONL that TRL's SFTTrainer takes as is.

Each row has a conversational ``prompt`` / ``completion`` pair (completion-only loss) and the
full ``messages`` list, plus ``query`` (read by the GRPO reward) and ``category``.

A ``split`` column written by ``curate split`` is honoured: train/val/test rows go to
``train.jsonl``/``val.jsonl``/``test.jsonl`` and a test query never reaches training. Rows
without a split are split here, seeded and stratified by category; a query (case-insensitive)
never lands in two files.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmd_finetune.records import KINDS, Record, RecordError, coerce_record, only_mode, parse_prefixed, render
from qmd_finetune.training.prompts import PromptFormat, format_for, strip_think

SHORT_QUERY_WORDS = 2
SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}


@dataclass
class PrepareResult:
    output_dir: Path
    info: dict[str, Any]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Assigned:
    """Records per split file, after honouring an existing ``split`` column."""

    train: list[Record]
    val: list[Record]
    test: list[Record]
    honoured: int
    unsplit: int
    dropped: list[dict[str, Any]]


def assign_splits(records: list[Record], val_split: float, seed: int) -> Assigned:
    """Honour each record's ``split`` (train/val/test); split the rest here.

    A query that has a test row anywhere is kept out of train and val, and a query with a val
    row is kept out of train, so an evaluation query is never trained on.
    """
    labelled: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    unsplit: list[Record] = []
    dropped: list[dict[str, Any]] = []
    for record in records:
        value = record.extra.get("split")
        if value is None or value == "":
            unsplit.append(record)
        elif isinstance(value, str) and value.strip().lower() in SPLIT_NAMES:
            labelled[SPLIT_NAMES[value.strip().lower()]].append(record)
        else:
            dropped.append({"query": record.query, "reason": f"unknown split {value!r} (train, val or test)"})
    train_new, val_new = split_records(unsplit, val_split, seed) if unsplit else ([], [])
    test = labelled["test"]
    val = labelled["val"] + val_new
    held_test = {_key(r) for r in test}
    held_val = {_key(r) for r in val} - held_test
    kept_val = []
    for record in val:
        if _key(record) in held_test:
            dropped.append({"query": record.query, "reason": "query also in the test split"})
        else:
            kept_val.append(record)
    train = []
    for record in labelled["train"] + train_new:
        if _key(record) in held_test or _key(record) in held_val:
            side = "test" if _key(record) in held_test else "val"
            dropped.append({"query": record.query, "reason": f"query also in the {side} split"})
        else:
            train.append(record)
    honoured = sum(len(v) for v in labelled.values())
    return Assigned(train, kept_val, test, honoured, len(unsplit), dropped)


def _key(record: Record) -> str:
    return only_mode(record.query)[0].strip().lower()


def read_input(paths: list[str | Path]) -> tuple[list[Record], list[dict[str, Any]]]:
    """Records from JSONL files (any accepted legacy shape); unreadable rows come back as rejects."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input not found: {path}")
    try:
        from qmd_finetune.io import frame_to_dicts, read_records

        result = read_records([Path(p) for p in paths])
        records = [coerce_record(row) for row in frame_to_dicts(result.frame)]
        rejects = [
            {"file": r.get("source"), "line": r.get("line"), "reason": r.get("reason")}
            for r in result.rejects.to_dicts()
        ]
        return records, rejects
    except (ImportError, ValueError, AttributeError, TypeError):
        # io is the shared reader; while it is unavailable or changing, read JSONL line by line.
        return _read_jsonl_lines(paths)


def _read_jsonl_lines(paths: list[str | Path]) -> tuple[list[Record], list[dict[str, Any]]]:
    records: list[Record] = []
    rejects: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    records.append(coerce_record(json.loads(line)))
                except json.JSONDecodeError as exc:
                    rejects.append({"file": str(path), "line": lineno, "reason": f"invalid JSON: {exc.msg}"})
                except RecordError as exc:
                    rejects.append({"file": str(path), "line": lineno, "reason": exc.reason})
    return records, rejects


def target_text(items: list[tuple[str, str]]) -> str:
    """The assistant target: hyde first, then lex, then vec; never a think block."""
    return strip_think(render(items))


def make_row(
    query: str, items: list[tuple[str, str]], fmt: PromptFormat, category: str | None, origin: str
) -> dict:
    target = target_text(items)
    parsed, unknown = parse_prefixed(target)
    if not target or unknown or not parsed:
        raise RecordError("empty or invalid target")
    prompt = fmt.messages(query)
    completion = [{"role": "assistant", "content": target}]
    row: dict[str, Any] = {
        "prompt": prompt,
        "completion": completion,
        "messages": prompt + completion,
        "query": query,
        "category": category or "",
        "origin": origin,
    }
    if fmt.chat_template_kwargs:
        row["chat_template_kwargs"] = dict(fmt.chat_template_kwargs)
    return row


def stratum(record: Record) -> str:
    _, only = only_mode(record.query)
    if only:
        return f"only:{only}"
    return record.category or "uncategorized"


def split_records(records: list[Record], val_split: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Seeded split, stratified by category; all rows of one query stay together.

    A query is case-folded and taken without its only-mode suffix, so ``x`` and ``x /only:lex``
    land on the same side.
    """
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[_key(record)].append(record)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        by_stratum[stratum(members[0])].append(key)
    rng = random.Random(seed)
    val_keys: set[str] = set()
    for name in sorted(by_stratum):
        keys = sorted(by_stratum[name])
        rng.shuffle(keys)
        n_val = round(len(keys) * val_split) if len(keys) > 1 else 0
        val_keys.update(keys[:n_val])
    train = [r for r in records if _key(r) not in val_keys]
    val = [r for r in records if _key(r) in val_keys]
    return train, val


def only_variants(records: list[Record], seed: int) -> list[tuple[str, list[tuple[str, str]], str | None]]:
    """One ``/only:KIND`` variant per normal record, kinds rotated (seeded) so all three appear."""
    rng = random.Random(seed + 1)
    out = []
    for i, record in enumerate(records):
        _, only = only_mode(record.query)
        if only:
            continue
        available = [k for k in KINDS if any(kind == k for kind, _ in record.output)]
        if not available:
            continue
        start = (i + rng.randrange(len(KINDS))) % len(KINDS)
        kind = next(
            KINDS[(start + j) % len(KINDS)]
            for j in range(len(KINDS))
            if KINDS[(start + j) % len(KINDS)] in available
        )
        items = [(k, t) for k, t in record.output if k == kind]
        out.append((f"{record.query.strip()} /only:{kind}", items, record.category))
    return out


def short_augment(records: list[Record], n: int, seed: int) -> list[Record]:
    """``n`` extra copies of short-query rows (<= 2 words), drawn round-robin in seeded order."""
    short = [r for r in records if len(only_mode(r.query)[0].split()) <= SHORT_QUERY_WORDS]
    if not short or n <= 0:
        return []
    rng = random.Random(seed + 2)
    order = short[:]
    rng.shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def prepare(
    inputs: list[str | Path],
    output_dir: str | Path,
    base_model: str = "local/smollm2",
    val_split: float = 0.1,
    seed: int = 42,
    with_only_variants: bool = False,
    short_augment_n: int = 0,
    prompt_template: str | None = None,
) -> PrepareResult:
    if not 0 <= val_split < 1:
        raise ValueError("--val-split must be in [0, 1)")
    fmt = format_for(base_model, prompt_template)
    records, rejects = read_input(inputs)
    rows_in = len(records) + len(rejects)
    valid: list[Record] = []
    for record in records:
        if not target_text(record.output):
            rejects.append({"query": record.query, "reason": "empty target"})
            continue
        valid.append(record)
    if not valid:
        raise ValueError(f"no valid records in {', '.join(map(str, inputs))} ({len(rejects)} rejected)")

    assigned = assign_splits(valid, val_split, seed)
    rejects.extend(assigned.dropped)
    warnings: list[str] = []
    if assigned.honoured and assigned.unsplit:
        warnings.append(
            f"{assigned.unsplit} of {len(valid)} rows have no split column; they were split here "
            f"(--val-split {val_split}), the other {assigned.honoured} keep their split"
        )
    train_records, val_records = assigned.train, assigned.val
    if not train_records:
        raise ValueError(f"no training rows in {', '.join(map(str, inputs))} (all rows are val or test)")
    train_rows = [make_row(r.query, r.output, fmt, r.category, "record") for r in train_records]
    val_rows = [make_row(r.query, r.output, fmt, r.category, "record") for r in val_records]
    test_rows = [make_row(r.query, r.output, fmt, r.category, "record") for r in assigned.test]
    n_only = n_short = 0
    if with_only_variants:
        for query, items, category in only_variants(train_records, seed):
            train_rows.append(make_row(query, items, fmt, category, "only_variant"))
            n_only += 1
        for query, items, category in only_variants(val_records, seed):
            val_rows.append(make_row(query, items, fmt, category, "only_variant"))
    if short_augment_n:
        for r in short_augment(train_records, short_augment_n, seed):
            train_rows.append(make_row(r.query, r.output, fmt, r.category, "short_augment"))
            n_short += 1
    random.Random(seed + 3).shuffle(train_rows)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "train.jsonl", train_rows)
    _write_jsonl(out / "val.jsonl", val_rows)
    test_path = out / "test.jsonl"
    if test_rows:
        _write_jsonl(test_path, test_rows)
    elif test_path.exists():
        test_path.unlink()
    info = {
        "inputs": [str(p) for p in inputs],
        "base_model": base_model,
        "prompt_format": fmt.to_dict(),
        "seed": seed,
        "val_split": val_split,
        "counts": {
            "rows_in": rows_in,
            "valid": len(valid),
            "rejected": len(rejects),
            "train": len(train_rows),
            "val": len(val_rows),
            "test": len(test_rows),
            "only_variants": n_only,
            "short_augment": n_short,
        },
        "train_categories": dict(sorted(Counter(stratum_of_row(r) for r in train_rows).items())),
        "val_categories": dict(sorted(Counter(stratum_of_row(r) for r in val_rows).items())),
        "reject_reasons": dict(Counter(r["reason"] for r in rejects).most_common()),
        "split_source": {"from_input": assigned.honoured, "split_here": assigned.unsplit},
        "warnings": warnings,
    }
    _atomic_text(out / "dataset_info.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    if rejects:
        _write_jsonl(out / "rejects.jsonl", rejects)
    return PrepareResult(out, info, rejects, warnings)


def stratum_of_row(row: dict[str, Any]) -> str:
    _, only = only_mode(row["query"])
    return f"only:{only}" if only else (row["category"] or "uncategorized")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    _atomic_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
