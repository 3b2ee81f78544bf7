"""A Hugging Face dataset card (README.md) for a curated file: YAML front matter, stats, provenance.

Provenance comes from the rows themselves (``meta.source`` / ``meta.model``), from the run
summary a pipeline wrote beside its output (``<output>.run.json``: inputs and per-stage
counts) and from the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
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


def front_matter(
    name: str, rows: int, data_files: dict[str, str], license_id: str, split_rows: dict[str, int]
) -> dict[str, Any]:
    features = [
        {"name": "query", "dtype": "string"},
        {"name": "output", "sequence": {"sequence": "string"}},
        {"name": "category", "dtype": "string"},
    ]
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
            "splits": [{"name": split, "num_examples": n} for split, n in split_rows.items()],
        },
    }


def build_card(
    input_path: str | Path,
    name: str | None = None,
    license_id: str = "mit",
    run_summary: str | Path | None = None,
    splits_dir: str | Path | None = None,
    description: str | None = None,
) -> str:
    """The README.md text for ``input_path`` (a curated .jsonl/.jsonl.gz/.parquet file)."""
    path = Path(input_path)
    read = read_frame([path])
    frame = read.frame
    stats = compute_stats(frame, examples=1)
    name = name or path.name.split(".")[0].replace("_", " ").replace("-", " ")

    data_files: dict[str, str] = {"train": path.name}
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
            data_files = {s: f"{directory.name}/{p.name}" for s, p in found.items()}
            split_rows = {s: rows_per_file[s] for s in found}
    elif "split" in frame.columns:
        split_rows_all = stats.get("splits", {})
        stats["split_note"] = ", ".join(f"{k}: {v}" for k, v in split_rows_all.items())

    summary_file = Path(run_summary) if run_summary else summary_path(path)
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.exists() else None

    header = yaml.safe_dump(
        front_matter(name, frame.height, data_files, license_id, split_rows),
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
        "```json",
        json.dumps(_example_record(frame), ensure_ascii=False),
        "```",
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

    lines += ["", "## Provenance", ""]
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
        f'ds = load_dataset("json", data_files="{path.name}")'
        if path.suffix != ".parquet"
        else f'ds = load_dataset("parquet", data_files="{path.name}")',
        "```",
        "",
    ]
    return "\n".join(lines)


def _example_record(frame: pl.DataFrame) -> dict[str, Any]:
    if frame.height == 0:
        return {"query": "auth config", "output": [["lex", "authentication configuration"]]}
    row = frame.row(0, named=True)
    record: dict[str, Any] = {"query": row["query"], "output": row["output"]}
    if row.get("category"):
        record["category"] = row["category"]
    return record


def _version() -> str:
    try:
        return metadata.version("qmd-finetune")
    except metadata.PackageNotFoundError:
        return "(source tree)"


def write_card(input_path: str | Path, output: str | Path, **options: Any) -> Path:
    text = build_card(input_path, **options)
    with atomic_write(output) as handle:
        handle.write(text)
    return Path(output)
