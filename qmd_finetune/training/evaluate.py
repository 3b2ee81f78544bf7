"""``train eval``: batched greedy generation, scored with the reward, per query and per category."""

from __future__ import annotations

import html
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from qmd_finetune import quality
from qmd_finetune.io import read_json_objects
from qmd_finetune.reward import DEFAULT_RUBRIC, check_rubric, score
from qmd_finetune.training.models import ModelSource, load_model, load_tokenizer
from qmd_finetune.training.models import inspect_model as inspect
from qmd_finetune.training.prompts import PromptFormat, format_for, read_format

DEFAULT_CATEGORY = "uncategorized"
UNNAMED_REPORT_RUBRIC = "v1"
"""Reports written before rubrics were named were all scored with v1."""


@dataclass
class EvalQuery:
    query: str
    category: str


def read_eval_queries(path: str | Path) -> list[EvalQuery]:
    """A query list: one query per line; a ``# Heading`` line directly above queries names their category.

    JSONL files (one record or ``{"query", "category"}`` object per line) are accepted too.
    """
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"queries file not found: {target}")
    out: list[EvalQuery] = []
    if target.suffix == ".jsonl":
        for _, row in read_json_objects(target):
            query = row.get("query") or row.get("input")
            if isinstance(query, str) and query.strip():
                out.append(EvalQuery(query.strip(), row.get("category") or DEFAULT_CATEGORY))
        return out
    lines = target.read_text(encoding="utf-8-sig").splitlines()
    category = DEFAULT_CATEGORY
    for i, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            # A heading is a one-line comment block directly above queries; prose blocks are not.
            above = lines[i - 1].strip() if i else ""
            below = lines[i + 1].strip() if i + 1 < len(lines) else ""
            heading = text.lstrip("#").strip()
            if heading and not above and below and not below.startswith("#"):
                category = heading
            continue
        out.append(EvalQuery(text, category))
    return out


def generate(
    model: Any,
    tokenizer: Any,
    queries: list[str],
    fmt: PromptFormat,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    decoding: str = "safe",
    temperature: float | None = None,
    top_p: float = 1.0,
) -> list[str]:
    """Greedy completions with left padding; batches are length-sorted, results in input order.

    ``decoding`` (``qmd_finetune.decoding``): ``free``; ``safe`` never writes chat-template
    tokens and stops after the format's lines; ``strict`` also allows only valid line prefixes.
    A ``temperature`` samples instead (rejection sampling; seed torch first to repeat a run).
    """
    import torch
    from transformers import LogitsProcessorList

    from qmd_finetune.decoding import FormatConstraint

    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(
            fmt.messages(q), tokenize=False, add_generation_prompt=True, **fmt.chat_template_kwargs
        )
        for q in queries
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    eos_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    results: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        if temperature is not None
        else {"do_sample": False}
    )
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        width = enc["input_ids"].shape[1]
        processors = LogitsProcessorList(
            [FormatConstraint(tokenizer, [queries[i] for i in idx], width, decoding)]
            if decoding != "free"
            else []
        )
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                logits_processor=processors,
                **sampling,
            )
        for row, i in enumerate(idx):
            ids = out[row, width:].tolist()
            for pos, token in enumerate(ids):
                if token in eos_ids:
                    ids = ids[:pos]
                    break
            # Special tokens are kept: leaked chat markers must reach the reward as they are.
            results[i] = tokenizer.decode(ids, skip_special_tokens=False).strip()
    return results


def prompt_format(source: ModelSource) -> PromptFormat:
    saved = read_format(source.path)
    if saved is None and source.kind == "adapter" and source.base:
        saved = read_format(source.base)
    return saved or format_for(source.base_name or source.requested)


def argument_problems(
    model: str,
    queries: Path | None,
    compare: str | None = None,
    outputs: dict[str, Path | None] | None = None,
    numbers: dict[str, int | None] | None = None,
) -> list[str]:
    """Every problem with ``train eval``'s arguments, found without loading a model: a bad
    ``--compare`` must not surface only after the main evaluation has run for minutes."""
    from qmd_finetune.training.models import ModelLoadError

    problems: list[str] = []
    for flag, value in (numbers or {}).items():
        if value is not None and value < 1:
            problems.append(f"{flag} must be at least 1 (got {value})")
    try:
        inspect(model)
    except ModelLoadError as exc:
        problems.append(f"--model: {exc}")
    try:
        if queries is not None and not read_eval_queries(queries):
            problems.append(f"--queries: no queries in {queries}")
    except (FileNotFoundError, ValueError) as exc:
        problems.append(f"--queries: {exc}")
    if compare is not None:
        if compare.endswith(".json"):
            try:
                load_report(compare)
            except FileNotFoundError:
                problems.append(f"--compare: report not found: {compare}")
            except ValueError as exc:
                problems.append(f"--compare: {exc}")
        else:
            try:
                inspect(compare)
            except ModelLoadError as exc:
                problems.append(f"--compare: {exc}")
    for flag, path in (outputs or {}).items():
        if path is None:
            continue
        if path.is_dir():
            problems.append(f"{flag}: {path} is a directory")
        elif any(parent.exists() and not parent.is_dir() for parent in path.parents):
            problems.append(f"{flag}: {path}: a parent is a file, not a directory")
    return problems


def evaluate(
    model_name: str,
    queries_path: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    dtype: str = "auto",
    limit: int | None = None,
    decoding: str = "strict",
    rubric: str = DEFAULT_RUBRIC,
) -> dict[str, Any]:
    """Load exactly ``model_name`` (see models.inspect_model), generate, score with ``rubric``;
    returns the report."""
    rubric = check_rubric(rubric)
    queries = read_eval_queries(queries_path)[:limit] if limit else read_eval_queries(queries_path)
    if not queries:
        raise ValueError(f"no queries in {queries_path}")
    source = inspect(model_name)
    model, tokenizer, dtype_label = load_for_eval(source, dtype)
    fmt = prompt_format(source)
    start = time.monotonic()
    outputs = generate(
        model, tokenizer, [q.query for q in queries], fmt, batch_size, max_new_tokens, decoding
    )
    seconds = time.monotonic() - start
    report = build_report(
        model_name, source, queries, outputs, fmt, str(queries_path), seconds, dtype_label, rubric
    )
    report["decoding"] = decoding
    return report


def load_for_eval(source: Any, dtype: str) -> tuple[Any, Any, str]:
    """The merged model, its tokenizer and the name of its dtype for the report (``dtype``:
    auto | fp32 | bf16 | int8, see embedded.generation_dtype)."""
    from qmd_finetune.embedded import generation_dtype, quantize_int8

    torch_dtype, int8 = generation_dtype(dtype)
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype=torch_dtype, merge=True)
    if int8:
        return quantize_int8(model), tokenizer, "int8 (dynamic, per channel)"
    return model, tokenizer, str(torch_dtype)


def build_report(
    model_name: str,
    source: ModelSource | None,
    queries: list[EvalQuery],
    outputs: list[str],
    fmt: PromptFormat,
    queries_path: str,
    seconds: float,
    dtype: str,
    rubric: str = DEFAULT_RUBRIC,
) -> dict[str, Any]:
    results = [
        _scored({"query": q.query, "category": q.category, "output": text}, rubric)
        for q, text in zip(queries, outputs)
    ]
    return {
        "model": model_name,
        "loaded": source.describe() if source else model_name,
        "queries_file": queries_path,
        "prompt_format": fmt.to_dict(),
        "dtype": dtype,
        **_aggregate(results, rubric),
        "generation_seconds": round(seconds, 1),
        "results": results,
    }


def _scored(result: dict[str, Any], rubric: str) -> dict[str, Any]:
    s = score(result["query"], result["output"], rubric)
    gate = quality.reasons(quality.check_text(result["query"], result["output"]))
    return {
        **result,
        "percentage": s.percentage,
        "rating": s.rating,
        "deductions": s.deductions,
        "gate": gate,
    }


def _aggregate(results: list[dict[str, Any]], rubric: str) -> dict[str, Any]:
    by_category: dict[str, list[float]] = defaultdict(list)
    ratings: dict[str, int] = defaultdict(int)
    gate: dict[str, int] = defaultdict(
        int
    )  # answers failing each quality-gate rule, whatever the rubric says
    for r in results:
        by_category[r["category"]].append(r["percentage"])
        ratings[r["rating"]] += 1
        for reason in r["gate"]:
            gate[quality.rule_of(reason)] += 1
    templates = quality.template_answers([(r["query"], r["output"]) for r in results])
    for r, template in zip(results, templates):
        r["template"] = template
    return {
        "rubric": rubric,
        "n": len(results),
        "mean": round(mean(r["percentage"] for r in results), 2),
        "ratings": dict(ratings),
        "gate": dict(gate),
        # answers whose hyde is one passage shared by 3+ queries: the rubric rates them alone
        "template_answers": sum(templates),
        "categories": {c: {"n": len(v), "mean": round(mean(v), 2)} for c, v in by_category.items()},
    }


def rescore(report: dict[str, Any], rubric: str) -> dict[str, Any]:
    """The report with its stored outputs scored again under ``rubric`` (no model needed)."""
    results = [_scored(r, rubric) for r in report["results"]]
    return {**report, **_aggregate(results, rubric), "results": results}


def compare(report: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Deltas ``report - other``: overall, per category and per query (matched by query text).

    A saved report scored with another rubric is rescored from its outputs first, so both
    sides are scored alike."""
    rubric = report.get("rubric", UNNAMED_REPORT_RUBRIC)
    other_rubric = other.get("rubric", UNNAMED_REPORT_RUBRIC)
    if other_rubric != rubric:
        other = rescore(other, rubric)
    theirs = {r["query"]: r for r in other["results"]}
    per_query = [
        {
            "query": r["query"],
            "category": r["category"],
            "percentage": r["percentage"],
            "other": theirs[r["query"]]["percentage"],
            "delta": round(r["percentage"] - theirs[r["query"]]["percentage"], 1),
        }
        for r in report["results"]
        if r["query"] in theirs
    ]
    categories = {}
    for name, stats in report["categories"].items():
        if name in other["categories"]:
            categories[name] = {
                "mean": stats["mean"],
                "other": other["categories"][name]["mean"],
                "delta": round(stats["mean"] - other["categories"][name]["mean"], 2),
            }
    return {
        "other_model": other["model"],
        "rubric": rubric,
        "other_rescored_from": None if other_rubric == rubric else other_rubric,
        "mean": report["mean"],
        "other_mean": other["mean"],
        "delta": round(report["mean"] - other["mean"], 2),
        "categories": categories,
        "queries": per_query,
        "matched": len(per_query),
    }


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a train eval report (not JSON: {exc.msg})") from exc
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{path} is not a train eval report")
    return data


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: summary, categories, then every query with its output and deductions."""
    esc = html.escape
    comparison = report.get("compare")
    delta = {q["query"]: q["delta"] for q in comparison["queries"]} if comparison else {}
    cat_delta = comparison["categories"] if comparison else {}
    rows_cat = "".join(
        f"<tr><td>{esc(name)}</td><td>{stats['n']}</td><td>{stats['mean']:.1f}</td>"
        + (
            f"<td>{cat_delta[name]['delta']:+.1f}</td>"
            if name in cat_delta
            else ("<td></td>" if comparison else "")
        )
        + "</tr>"
        for name, stats in sorted(report["categories"].items())
    )
    rows_q = "".join(
        f"<tr class='{esc(r['rating'].lower())}'><td>{esc(r['query'])}</td><td>{esc(r['category'])}</td>"
        f"<td>{r['percentage']:.1f}</td>"
        + (
            f"<td>{delta[r['query']]:+.1f}</td>"
            if r["query"] in delta
            else ("<td></td>" if comparison else "")
        )
        + f"<td><pre>{esc(r['output'])}</pre></td><td>{esc('; '.join(r['deductions']))}</td></tr>"
        for r in report["results"]
    )
    delta_head = "<th>delta</th>" if comparison else ""
    summary = f"mean {report['mean']:.1f}% over {report['n']} queries (rubric {report.get('rubric', '?')})"
    if comparison:
        summary += f" (vs {esc(comparison['other_model'])}: {comparison['other_mean']:.1f}%, delta {comparison['delta']:+.1f})"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>train eval: {esc(report["model"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }}
pre {{ margin: 0; white-space: pre-wrap; max-width: 60em; }}
tr.excellent td:nth-child(3) {{ background: #d4f7d4; }}
tr.good td:nth-child(3) {{ background: #eef7c8; }}
tr.acceptable td:nth-child(3) {{ background: #f7eec8; }}
tr.poor td:nth-child(3), tr.failed td:nth-child(3) {{ background: #f7d4d4; }}
</style></head><body>
<h1>{esc(report["model"])}</h1>
<p>{esc(report["loaded"])}; {summary}; queries from {esc(report["queries_file"])}</p>
<h2>Categories</h2>
<table><tr><th>category</th><th>n</th><th>mean %</th>{delta_head}</tr>{rows_cat}</table>
<h2>Queries</h2>
<table><tr><th>query</th><th>category</th><th>%</th>{delta_head}<th>output</th><th>deductions</th></tr>{rows_q}</table>
</body></html>
"""
