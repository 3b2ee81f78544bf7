"""generate: query synthesis, expansion with any provider, and the offline dataset transform."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qmd_finetune.cli_options import rubric_option
from qmd_finetune.redact import RedactedStream

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console(file=RedactedStream())
err = Console(file=RedactedStream("stderr"), soft_wrap=True)


@app.command()
def queries(
    output: Path = typer.Option(
        ..., "--output", "-o", help="Where to write queries (.jsonl with category/facets, or .txt)."
    ),
    count: int = typer.Option(
        100, "--count", "-n", help="How many queries (split over categories by weight)."
    ),
    seed: int = typer.Option(0, help="Random seed; same seed + inputs = same queries."),
    from_plan: Path | None = typer.Option(
        None, "--from-plan", help="Generation plan JSON from `curate balance`."
    ),
    exclude: list[Path] = typer.Option(
        [], "--exclude", help="Dataset(s) whose queries must not be emitted (repeatable)."
    ),
    category: list[str] = typer.Option([], "--category", help="Only these categories (repeatable)."),
    templates: Path | None = typer.Option(None, help="Templates YAML (default: data/query_templates.yaml)."),
    taxonomy: Path | None = typer.Option(
        None, help="Taxonomy YAML for category weights (default: data/taxonomy.yaml)."
    ),
    today: str | None = typer.Option(
        None, help="Date temporal queries are relative to (YYYY-MM-DD; default: today)."
    ),
) -> None:
    """Synthesize search queries from the taxonomy, templates and word lists."""
    from qmd_finetune.generate import queries as q

    tpl = q.load_templates(templates, taxonomy)
    generator = q.QueryGenerator(tpl, seed=seed, today=dt.date.fromisoformat(today) if today else None)
    facet_counts = None
    if from_plan:
        try:
            plan = q.load_plan(from_plan, tpl)
        except q.PlanError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
        category_counts, facet_counts = dict(plan.categories), plan.facets
        extra = plan.total_needed - sum(category_counts.values())
        if extra > 0:  # facet deficits larger than the category ones: spread the rest by weight
            for name, n in generator.allocate_categories(extra, category or None).items():
                category_counts[name] = category_counts.get(name, 0) + n
        for name in plan.unknown:
            err.print(f"[yellow]warning:[/] plan category {name!r} has no templates; skipped")
    else:
        category_counts = generator.allocate_categories(count, category or None)
    excluded = q.read_existing_queries(exclude)
    made, report = generator.generate(category_counts, facet_counts, excluded)
    output.parent.mkdir(parents=True, exist_ok=True)
    from qmd_finetune.io import atomic_write

    with atomic_write(output, "w") as handle:
        for item in made:
            if output.suffix == ".txt":
                handle.write(item.query + "\n")
            else:
                handle.write(json.dumps(item.to_dict(seed), ensure_ascii=False) + "\n")
    table = Table(title=f"generate queries -> {output}")
    table.add_column("category")
    table.add_column("requested", justify="right")
    table.add_column("produced", justify="right")
    for name in sorted(report.requested):
        table.add_row(name, str(report.requested[name]), str(report.produced[name]))
    table.add_row("[bold]total", str(sum(report.requested.values())), str(len(made)))
    console.print(table)
    facets = ", ".join(f"{k} {v}" for k, v in sorted(report.facets.items()))
    console.print(f"facets: {facets or 'none'}; excluded-query collisions avoided: {report.excluded_hits}")
    if report.shortfall:
        err.print(f"[yellow]shortfall (word lists exhausted):[/] {report.shortfall}")


def default_concurrency(model: str) -> int:
    """Requests in flight when ``--concurrency`` is not given: 8, or for the embedded model
    two batches' worth, so that its batches fill (it writes more tokens per second in
    batches of 32 than of 8: docs/generate.md)."""
    from qmd_finetune.generate import local_llm

    return 2 * local_llm.MAX_BATCH if local_llm.is_local(model) else 8


@app.command()
def expand(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="LiteLLM model string: local/smollm2, ollama_chat/qwen3:1.7b (ollama/ is served the same way), anthropic/claude-..., openai/<name>.",
    ),
    queries_file: Path = typer.Option(
        ..., "--queries", "-q", help="Queries: text (one per line) or JSONL with query/category.", exists=True
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Records JSONL (appended; re-running resumes)."),
    rejects: Path | None = typer.Option(
        None, help="Rejects ledger (default: beside the output, out/x.jsonl -> out/x.rejects.jsonl)."
    ),
    prompt_file: str | None = typer.Option(
        None,
        "--prompt-file",
        help="Prompt file (instruction text, e.g. from `gepa optimize --save-prompt`); default: built-in expand_v1.",
    ),
    api_base: str | None = typer.Option(
        None, "--api-base", help="Server URL (Ollama, OpenAI-compatible, Anthropic proxy)."
    ),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        help="Environment variable holding the API key (default: ANTHROPIC_API_KEY / OPENAI_API_KEY).",
    ),
    client: str = typer.Option(
        "auto", help="auto | litellm: force LiteLLM for openai/ and anthropic/ models."
    ),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        "-c",
        help="Requests in flight (default 8; for local/ models 64, which they answer in batches).",
    ),
    rpm: float | None = typer.Option(None, "--rpm", help="Requests per minute limit."),
    tpm: float | None = typer.Option(
        None, "--tpm", help="Tokens per minute limit (estimated prompt + max_tokens)."
    ),
    timeout: float = typer.Option(60.0, "--timeout", help="Per-request timeout, seconds."),
    max_retries: int = typer.Option(5, "--max-retries", help="Retries on 429/5xx/timeouts/broken bodies."),
    max_tokens: int = typer.Option(400, "--max-tokens", help="Max completion tokens per request."),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Sampling temperature (default: the provider's; greedy for local/)."
    ),
    top_p: float | None = typer.Option(None, "--top-p"),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed sent to providers that take one."),
    max_cost: float | None = typer.Option(
        None, "--max-cost", help="Stop before spending more than this (USD, LiteLLM cost map)."
    ),
    max_tokens_total: int | None = typer.Option(
        None, "--max-tokens-total", help="Stop before using more tokens than this."
    ),
    price_in: float | None = typer.Option(
        None, "--price-in", help="Override input price, USD per 1M tokens."
    ),
    price_out: float | None = typer.Option(
        None, "--price-out", help="Override output price, USD per 1M tokens."
    ),
    min_score: float | None = typer.Option(
        None, "--min-score", help="Reject records scoring below this (0-100) under --rubric."
    ),
    quality_gate: bool = typer.Option(
        True,
        "--quality-gate/--no-quality-gate",
        help="Reject degenerate answers (repeats, too many lines, prompt copies ...) to the ledger.",
    ),
    rubric: str = rubric_option(help="Rubric v1 | v2 (default v2) for each record's score and --min-score."),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="SQLite response cache (default: beside the output, out/x.jsonl -> out/x.cache.sqlite).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the response cache."),
    batch: bool = typer.Option(
        False, "--batch", help="anthropic/ only: Message Batches API (half price, asynchronous)."
    ),
    poll_interval: float = typer.Option(30.0, "--poll-interval", help="Seconds between batch status checks."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N queries."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Expand queries into hyde/lex/vec records with any provider."""
    from qmd_finetune.generate.expand import ExpandConfig, run_expand
    from qmd_finetune.generate.providers import GenerationParams, served_note
    from qmd_finetune.generate.runner import RunnerConfig

    if concurrency is None:
        concurrency = default_concurrency(model)
    cfg = ExpandConfig(
        model=model,
        queries=queries_file,
        output=output,
        rejects=rejects,
        prompt_file=prompt_file,
        params=GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed),
        runner=RunnerConfig(
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            timeout=timeout,
            max_retries=max_retries,
            max_cost=max_cost,
            max_tokens_total=max_tokens_total,
            progress=progress,
        ),
        api_base=api_base,
        api_key_env=api_key_env,
        client=client,
        min_score=min_score,
        quality_gate=quality_gate,
        rubric=rubric,
        cache_path=cache,
        use_cache=not no_cache,
        batch=batch,
        poll_interval=poll_interval,
        limit=limit,
        price_in=price_in,
        price_out=price_out,
    )
    try:
        result = run_expand(cfg)
    except (ValueError, FileNotFoundError) as exc:  # InputError, OutputError, LockedError included
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    s = result.stats
    table = Table(title=f"generate expand: {model}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("queries", s.total),
        ("already done (resumed)", s.skipped),
        ("processed this run", s.done),
        ("records written", result.kept),
        ("score rubric", rubric),
        ("rejected", sum(result.rejected_by_stage.values())),
        ("requests (incl. retries)", s.requests),
        ("retries", s.retries),
        ("cache hits", s.cache_hits),
        ("prompt tokens", s.prompt_tokens),
        ("completion tokens", s.completion_tokens),
        ("cost (USD)", f"{s.cost:.6f}"),
        ("elapsed (s)", f"{s.elapsed:.1f}"),
        ("rate (/s)", f"{s.done / max(s.elapsed, 1e-9):.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    for stage, n in sorted(result.rejected_by_stage.items()):
        table.add_row(f"  rejected at {stage}", str(n))
    for reason, n in sorted(s.reasons.items(), key=lambda kv: -kv[1])[:5]:
        table.add_row(f"  {reason}", str(n))
    console.print(table)
    if note := served_note(model):
        console.print(f"note: {note}", highlight=False)
    if result.stale_lock_pid is not None:
        console.print(
            f"took over the output's lock from a run that is gone (PID {result.stale_lock_pid})",
            soft_wrap=True,
        )
    if result.repaired_bytes:
        console.print(
            f"repaired a partial trailing line ({result.repaired_bytes} bytes) from an interrupted run"
        )
    console.print(f"records: {result.output}  rejects: {result.rejects}")
    failed = result.rejected_by_stage.get("request", 0)
    if s.done and failed == s.done:
        err.print(
            f"[red]error:[/] all {failed} requests failed; their reasons and response bodies are in {result.rejects}"
        )
        raise typer.Exit(4)
    if s.stopped:
        console.print(f"[yellow]stopped:[/] {s.stopped}; run the same command again to resume")
        if s.stopped.startswith("interrupted"):
            # a signal asks to stop now: the interpreter's teardown (collecting ~750k objects
            # once the models are loaded) took 5-12 s on a loaded machine; outputs are closed
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
        raise typer.Exit(3)


@app.command()
def offline(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Local JSON/JSONL/CSV/Parquet file or directory, or a Hub dataset id."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Records JSONL."),
    rejects: Path | None = typer.Option(
        None, help="Rejects ledger (default: beside the output, out/x.jsonl -> out/x.rejects.jsonl)."
    ),
    mapping: str = typer.Option("auto", help="auto | records | expansions | columns."),
    query_column: str | None = typer.Option(None, "--query-column"),
    expansions_column: str | None = typer.Option(
        None, "--expansions-column", help="List (or newline text) of expansions -> lex/vec by form."
    ),
    output_column: str | None = typer.Option(
        None, "--output-column", help="Record-style output column (text or \\[kind, text] pairs)."
    ),
    lex_column: str | None = typer.Option(None, "--lex-column"),
    vec_column: str | None = typer.Option(None, "--vec-column"),
    hyde_column: str | None = typer.Option(None, "--hyde-column"),
    category_column: str | None = typer.Option(None, "--category-column"),
    data_format: str | None = typer.Option(
        None, "--format", help="json | csv | parquet (default: by file suffix)."
    ),
    split: str = typer.Option("train", help="Split to load for a Hub id."),
    limit: int | None = typer.Option(None, help="Only the first N rows."),
    hyde_model: str | None = typer.Option(
        None, "--hyde-model", help="Fill missing hyde lines with this model (e.g. local/smollm2)."
    ),
    api_base: str | None = typer.Option(None, "--api-base", help="Server URL for --hyde-model."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", help="Requests in flight for --hyde-model."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Map an existing dataset's rows to records (no model needed unless --hyde-model)."""
    from qmd_finetune.generate.offline import ColumnMapping, DatasetLoadError, transform

    columns = ColumnMapping(
        mapping=mapping,
        query=query_column,
        output=output_column,
        expansions=expansions_column,
        lex=lex_column,
        vec=vec_column,
        hyde=hyde_column,
        category=category_column,
    )
    try:
        result = transform(
            dataset,
            output,
            rejects=rejects,
            mapping=columns,
            data_format=data_format,
            split=split,
            limit=limit,
            hyde_model=hyde_model,
            hyde_options={"api_base": api_base, "concurrency": concurrency, "progress": progress},
        )
    except DatasetLoadError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"generate offline ({result.mapping})")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("rows in", str(result.rows))
    table.add_row("records written", str(result.kept))
    for stage, n in result.rejected.items():
        table.add_row(f"rejected at {stage}", str(n))
    if hyde_model:
        table.add_row("hyde filled", str(result.hyde_filled))
        table.add_row("hyde failed", str(result.hyde_failed))
    console.print(table)
    console.print(f"records: {output}")


if __name__ == "__main__":
    app()
