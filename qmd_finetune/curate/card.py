"""A Hugging Face dataset card (README.md) for a curated file: YAML front matter, stats, provenance.

The front matter's features are what ``datasets`` itself infers from the files the card
lists (every column written, JSONL or Parquet), so ``load_dataset(<card folder>)`` loads
them; data file paths are relative to the card's folder. The license comes from
``--license`` or the rows' ``meta.license``. Provenance comes from the rows themselves
(``meta.source`` / ``meta.model``), from the run summary a pipeline wrote beside its output
(``<output>.run.json``: inputs and per-stage counts) and from the file's SHA-256. Examples
are the best-scored rows without clean flags.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from qmd_finetune.curate.analyze import compute_stats
from qmd_finetune.curate.pipeline import summary_path
from qmd_finetune.io import atomic_write, read_frame

SPLIT_NAMES = ("train", "val", "test")
UNKNOWN_LICENSE = "unknown"
EXAMPLES = 3


class CardError(ValueError):
    """The card's files cannot be described (or would not load)."""


def size_category(rows: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    for bound, name in bounds:
        if rows < bound:
            return name
    return "1M<n<10M"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _meta_counts(frame: pl.DataFrame, key: str) -> dict[str, int]:
    if "meta" not in frame.columns:
        return {}
    values = (
        frame.select(pl.col("meta").str.json_path_match(f"$.{key}").alias("v")).get_column("v").drop_nulls()
    )
    return dict(Counter(values.to_list()).most_common(20))


def loaded_features(files: dict[str, Path]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The features ``datasets`` infers for these data files, merged over the files, as YAML,
    and each split's size in bytes as loaded.

    Each file is loaded on its own (a column that is empty in one split infers as ``null``
    there); a column takes the first type that is not ``null``. Declaring the merged features
    in the card lets ``load_dataset(<card folder>)`` load every split (a split lacking a column
    gets it as nulls)."""
    import datasets

    datasets.disable_progress_bars()
    merged: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="qmd-card-") as cache:
        for split, path in files.items():
            builder = "parquet" if path.suffix == ".parquet" else "json"
            try:
                loaded = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache)
            except Exception as exc:  # datasets raises many types; the card must name the file
                cause = exc.__cause__ or exc
                raise CardError(f"{path}: datasets cannot load it ({type(cause).__name__}: {cause})") from exc
            for name, feature in loaded.features.items():
                if name not in merged or "null" in repr(merged[name]):
                    merged[name] = feature
            sizes[split] = int(loaded.data.nbytes)
            del loaded
    return datasets.Features(merged)._to_yaml_list(), sizes


def license_of(frame: pl.DataFrame, given: str | None) -> tuple[str, str]:
    """``(license id, where it came from)``: the flag, else the rows' single ``meta.license``."""
    if given:
        return given, "--license"
    found = _meta_counts(frame, "license")
    if len(found) == 1:
        return next(iter(found)), "the rows' meta.license"
    if len(found) > 1:
        return "other", "the rows' meta.license (several: " + ", ".join(found) + ")"
    return UNKNOWN_LICENSE, "nothing (no --license and no meta.license in the rows)"


def front_matter(
    name: str,
    rows: int,
    data_files: dict[str, str],
    license_id: str,
    split_rows: dict[str, int],
    features: list[dict[str, Any]],
    split_bytes: dict[str, int],
) -> dict[str, Any]:
    return {
        "pretty_name": name,
        "license": license_id,
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["query-expansion", "information-retrieval", "hyde", "qmd", "synthetic"],
        "size_categories": [size_category(rows)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": path} for split, path in data_files.items()],
            }
        ],
        "dataset_info": {
            "features": features,
            "splits": [
                {"name": split, "num_bytes": split_bytes.get(split, 0), "num_examples": n}
                for split, n in split_rows.items()
            ],
        },
    }


def build_card(
    input_path: str | Path,
    name: str | None = None,
    license_id: str | None = None,
    run_summary: str | Path | None = None,
    splits_dir: str | Path | None = None,
    description: str | None = None,
    card_dir: str | Path | None = None,
) -> str:
    """The README.md text for ``input_path`` (a curated .jsonl/.jsonl.gz/.parquet file);
    data file paths are relative to ``card_dir`` (default: the file's folder)."""
    path = Path(input_path)
    read = read_frame([path])
    frame = read.frame
    stats = compute_stats(frame, examples=1, clusters=0)
    name = name or path.name.split(".")[0].replace("_", " ").replace("-", " ")
    folder = Path(card_dir) if card_dir is not None else path.parent
    license_id, license_from = license_of(frame, license_id)

    files: dict[str, Path] = {"train": path}
    split_rows: dict[str, int] = {"train": frame.height}
    if splits_dir is not None:
        directory = Path(splits_dir)
        found = {
            s: directory / f"{s}{path.suffix}"
            for s in SPLIT_NAMES
            if (directory / f"{s}{path.suffix}").exists()
        }
        rows_per_file = {s: read_frame([p]).frame.height for s, p in found.items()}
        found = {s: p for s, p in found.items() if rows_per_file[s]}  # an empty split cannot be loaded
        if found:
            files = found
            split_rows = {s: rows_per_file[s] for s in found}
    elif "split" in frame.columns:
        split_rows_all = stats.get("splits", {})
        stats["split_note"] = ", ".join(f"{k}: {v}" for k, v in split_rows_all.items())

    summary_file = Path(run_summary) if run_summary else summary_path(path)
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.exists() else None

    data_files = {
        s: Path(os.path.relpath(p.resolve(), folder.resolve())).as_posix() for s, p in files.items()
    }
    features, split_bytes = loaded_features(files) if frame.height else ([], {})
    header = yaml.safe_dump(
        front_matter(name, frame.height, data_files, license_id, split_rows, features, split_bytes),
        sort_keys=False,
        allow_unicode=True,
    )
    lines = ["---", header.rstrip(), "---", "", f"# {name}", ""]
    lines += [
        description
        or (
            "Training data for small query-expansion models (qmd-style hybrid search). Each row maps a "
            "search query to expansion lines: `hyde:` (a short passage that would answer it), `lex:` "
            "(keyword variants for BM25) and `vec:` (natural-language rephrasings for vector search). "
            "A query ending in ` /only:lex`, ` /only:vec` or ` /only:hyde` asks for one kind only."
        ),
        "",
        "## Record format",
        "",
        "- `query`: the search query; `output`: `[kind, text]` pairs, hyde first, then lex, then vec.",
        "- `category`: topic from the project taxonomy (when categorized).",
    ]
    extra_columns = [
        c for c in ("score", "rating", "deductions", "flags", "facets", "split") if c in frame.columns
    ]
    if extra_columns:
        lines.append(
            "- Curation columns: "
            + ", ".join(f"`{c}`" for c in extra_columns)
            + " (`score` is the qmd reward percentage, 0-100)."
        )
    lines.append(
        "- Every column of the files is listed in the front matter's `dataset_info.features`: "
        + ", ".join(f"`{f['name']}`" for f in features)
        + "."
    )
    examples = best_examples(frame)
    if examples:
        lines += ["", "## Examples", "", "The best-scored rows without clean flags, one per category:", ""]
        for record in examples:
            lines += ["```json", json.dumps(record, ensure_ascii=False, indent=1), "```", ""]
    lines += ["", "## Statistics", "", "| metric | value |", "|---|---:|"]
    lines.append(f"| rows | {frame.height:,} |")
    if frame.height:
        lines.append(f"| unique queries (normalized) | {stats['unique_queries']:,} |")
        for kind, data in stats["items"].items():
            chars = data["chars"]
            if chars["count"]:
                lines.append(f"| {kind} items (median chars) | {data['items']:,} ({chars['median']:.0f}) |")
        for mode, n in stats["only_mode"].items():
            if mode != "none":
                lines.append(f"| only-mode `{mode}` rows | {n:,} |")
        if "score" in stats:
            s = stats["score"]
            lines.append(f"| score rubric | {s.get('rubric', 'unknown')} |")
            lines.append(f"| mean score | {s['mean']:.1f} |")
            lines.append(f"| share score >= 70 | {s['share_ge_70']:.1%} |")
            for rating, n in (s.get("ratings") or {}).items():
                if n:
                    lines.append(f"| rating {rating} | {n:,} |")
        for split, n in (stats.get("splits") or {}).items():
            lines.append(f"| split `{split}` | {n:,} |")
        lines += ["", "### Categories", "", "| category | rows | share |", "|---|---:|---:|"]
        for cat, n in stats["categories"].items():
            lines.append(f"| {cat} | {n:,} | {n / frame.height:.1%} |")
        if stats.get("facets"):
            lines += ["", "### Facets", "", "| facet | rows | share |", "|---|---:|---:|"]
            for facet, data in stats["facets"].items():
                lines.append(f"| {facet} | {data['count']:,} | {data['share']:.1%} |")

    lines += ["", "## License and provenance", ""]
    lines.append(f"- License `{license_id}`, from {license_from}.")
    lines.append(f"- File: `{path.name}`, SHA-256 `{sha256(path)}`.")
    lines.append(
        f"- Card written {datetime.now(timezone.utc).strftime('%Y-%m-%d')} by qmd-finetune {_version()}."
    )
    sources = _meta_counts(frame, "source")
    models = _meta_counts(frame, "model")
    if sources:
        lines.append(
            "- Row sources (`meta.source`): " + ", ".join(f"{k} ({v:,})" for k, v in sources.items()) + "."
        )
    if models:
        lines.append(
            "- Generator models (`meta.model`): "
            + ", ".join(f"`{k}` ({v:,})" for k, v in models.items())
            + "."
        )
    if summary:
        lines.append(
            f"- Curated with `{summary.get('command', 'curate run')}` on {summary.get('finished') or summary.get('started', '?')}:"
        )
        lines += ["", "| input file | rows | valid | invalid |", "|---|---:|---:|---:|"]
        for f in summary.get("inputs", []):
            lines.append(f"| {Path(f['path']).name} | {f['rows']:,} | {f['valid']:,} | {f['invalid']:,} |")
        lines += ["", "| stage | in | kept | rejected | top reasons |", "|---|---:|---:|---:|---|"]
        for s in summary.get("stages", []):
            reasons = "; ".join(f"{r}: {n}" for r, n in list((s.get("rejected_by_reason") or {}).items())[:3])
            lines.append(
                f"| {s['name']} | {s['in']:,} | {s['kept']:,} | {s['rejected']:,} | {reasons.replace('|', '/')} |"
            )
        lines.append("")
        lines.append(
            f"Rows in {summary['rows_in']:,} = kept {summary['kept']:,} + rejected {summary['rejected']:,}; "
            "every rejected row is in the run's rejects ledger with its stage, reason and source line."
        )
    else:
        lines.append("- No run summary found beside the file; the curation steps are not recorded here.")
    lines += [
        "",
        "## Intended use and limitations",
        "",
        "Supervised fine-tuning and GRPO of small models that expand search queries. Rows were filtered "
        "and scored with a heuristic reward (format, diversity, hyde length, key-term and entity "
        "preservation); a high score does not guarantee factual hyde passages. Synthetic rows may carry "
        "the biases of the models that wrote them.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("path/to/this/folder")  # the folder holding this README',
        "```",
        "",
    ]
    return "\n".join(lines)


def best_examples(frame: pl.DataFrame, count: int = EXAMPLES) -> list[dict[str, Any]]:
    """Up to ``count`` records (query, output, category, score): the best-scored rows without
    clean flags, from different categories where there are enough."""
    if frame.height == 0:
        return []
    work = frame
    if "flags" in work.columns:
        work = work.filter(pl.col("flags").list.len().fill_null(0) == 0)
    if "score" in work.columns:
        work = work.sort("score", descending=True, nulls_last=True)
    rows = work.head(2000).to_dicts()
    best_per_category: dict[Any, dict[str, Any]] = {}
    for row in rows:
        best_per_category.setdefault(row.get("category"), row)
    chosen = list(best_per_category.values())[:count]
    chosen += [row for row in rows if row not in chosen][: count - len(chosen)]
    records = []
    for row in chosen:
        record: dict[str, Any] = {"query": row["query"], "output": row["output"]}
        record.update({key: row[key] for key in ("category", "score") if row.get(key) is not None})
        records.append(record)
    return records


def _version() -> str:
    try:
        return metadata.version("qmd-finetune")
    except metadata.PackageNotFoundError:
        return "(source tree)"


def write_card(input_path: str | Path, output: str | Path, **options: Any) -> Path:
    """Write the card; its data file paths are relative to the card's folder."""
    options.setdefault("card_dir", Path(output).parent)
    text = build_card(input_path, **options)
    with atomic_write(output) as handle:
        handle.write(text)
    return Path(output)
