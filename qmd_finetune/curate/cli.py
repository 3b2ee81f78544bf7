"""`curate`: validate, score and curate query-expansion datasets."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from qmd_finetune.cli_options import rubric_option
from qmd_finetune.curate import summary
from qmd_finetune.curate.analyze import print_balance
from qmd_finetune.curate.pipeline import (
    PipelineConfig,
    PipelineError,
    PipelineRun,
    StageSpec,
    balance_config,
    load_config,
    plan_path,
    run_pipeline,
)
from qmd_finetune.curate.summary import print_run
from qmd_finetune.io import InputError, OutputError, expand_inputs
from qmd_finetune.locks import LockedError
from qmd_finetune.redact import RedactedStream


class _Command(TyperCommand):
    """Usage lines without the hidden positional that catches `--input a b c`."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class _Typer(typer.Typer):
    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    help="Validate, clean, deduplicate, score, balance and split query-expansion datasets.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(file=RedactedStream())

INPUT_HELP = (
    "Input file(s): .jsonl, .jsonl.gz or .parquet (`--input a.jsonl b.jsonl`); a directory reads the"
    " *.jsonl, *.jsonl.gz and *.parquet inside it, a quoted glob ('data/*.jsonl') its matches, sorted."
)
InputsOpt = typer.Option(..., "--input", "-i", metavar="PATH", help=INPUT_HELP)
MoreInputs = typer.Argument(None, hidden=True, help="More input files after --input.")
RejectsOpt = typer.Option(None, "--rejects", help="Rejects ledger path (JSONL). Default: beside the output.")
RubricOpt = rubric_option()


def input_files(inputs: list[Path], more: list[Path] | None) -> list[Path]:
    """`--input a b c` passes b and c as arguments; take them as inputs too. Directories and
    quoted globs become the files they hold."""
    try:
        return expand_inputs([*inputs, *(more or [])])
    except InputError as exc:
        _fail(str(exc))
        raise


def stage_default(stage: str, option: str) -> Any:
    """The stage's own default for an option, so a flag's default never drifts from the library's."""
    from qmd_finetune.curate.pipeline import stage_function

    return inspect.signature(stage_function(stage)).parameters[option].default


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def validate(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    show: int = typer.Option(10, "--show", help="How many invalid rows to print."),
    rejects: Path | None = typer.Option(None, "--rejects", help="Write the rejects ledger (JSONL) here."),
    allow_invalid: bool = typer.Option(False, "--allow-invalid", help="Exit 0 even when rows are invalid."),
) -> None:
    """Check rows against the record schema: per-file counts and the first invalid rows."""
    try:
        result = summary.validate_files(input_files(inputs, more), rejects)
    except (InputError, OutputError, LockedError) as exc:
        _fail(str(exc))
    summary.print_validation(console, result, show)
    if result.rejects.height and not allow_invalid:
        raise typer.Exit(1)
    if result.frame.height == 0 and result.rejects.height == 0:
        console.print("[yellow]no rows read[/yellow]")


@app.command()
def score(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = typer.Option(
        ..., "--output", "-o", help="Scored records (.jsonl, .jsonl.gz or .parquet)."
    ),
    min_score: float | None = typer.Option(
        None, "--min-score", help="Rows under this percentage go to the rejects ledger."
    ),
    rejects: Path | None = RejectsOpt,
    workers: int | None = typer.Option(None, "--workers", help="Processes for scoring (default: all cores)."),
    rubric: str = RubricOpt,
    modernize_only: bool = typer.Option(
        True, help="Rewrite the legacy 'q only: lex' spelling to 'q /only:lex' before scoring."
    ),
) -> None:
    """Add score, rating and deductions to each record and print a summary."""
    try:
        result = summary.score_files(
            input_files(inputs, more),
            output,
            min_score=min_score,
            rejects_path=rejects,
            workers=workers,
            rubric=rubric,
            modernize_only=modernize_only,
        )
    except (InputError, OutputError, LockedError) as exc:
        _fail(str(exc))
    summary.print_score_summary(console, result)


# ---------------------------------------------------------------- stages and the pipeline

OutputOpt = typer.Option(..., "--output", "-o", help="Output records (.jsonl, .jsonl.gz or .parquet).")
ReportOpt = typer.Option(None, "--report", help="Also write a self-contained HTML report of the run here.")


def _execute(config: PipelineConfig, command: str) -> PipelineRun:
    """Run a pipeline config and end with the per-stage table (in, kept, rejected by reason)."""
    try:
        run = run_pipeline(config, command=command)
    except (InputError, PipelineError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    print_run(console, run)
    if run.stages[0].kept == 0:
        console.print("[red]nothing valid was read[/red]")
        raise typer.Exit(1)
    return run


def _stage(
    name: str, inputs: list[Path], output: Path, rejects: Path | None, report: Path | None, **options
) -> PipelineRun:
    options = {k: v for k, v in options.items() if v is not None}
    config = PipelineConfig(inputs, output, [StageSpec(name, options)], rejects=rejects, report=report)
    return _execute(config, f"curate {name}")


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep:
            _fail(f"{what} {value!r} is not NAME=VALUE")
        out[key.strip()] = val.strip()
    return out


FixesOpt = typer.Option(
    None,
    "--fixes",
    help="Clean fixes to apply: a comma list (hyde_trim,lex_echo,lex_longer ...) or a preset (train).",
)
KeepFlaggedOpt = typer.Option(
    False,
    "--keep-flagged",
    help="Keep boilerplate, lex-filler and degenerate rows, flagged, instead of rejecting them.",
)


@app.command()
def normalize(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
    modernize_only: bool = typer.Option(
        True, help="Rewrite the legacy 'q only: lex' spelling to 'q /only:lex'."
    ),
    strip_artifacts: bool = typer.Option(
        True, help="Remove chat-template tokens, role lines and <think> blocks."
    ),
    hyde_first: bool = typer.Option(True, help="Order items hyde, lex, vec."),
) -> None:
    """Normalize whitespace, kind case, only-mode spelling and item order; reject rows left empty."""
    inputs = input_files(inputs, more)
    _stage(
        "normalize",
        inputs,
        output,
        rejects,
        report,
        modernize_only=modernize_only,
        strip_artifacts=strip_artifacts,
        hyde_first=hyde_first,
    )


@app.command()
def clean(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
    fix: bool = typer.Option(False, "--fix", help="Apply the fixes of rules whose action is 'fix'."),
    fixes: str | None = FixesOpt,
    keep_flagged: bool = KeepFlaggedOpt,
    category_floor: int | None = typer.Option(
        None, "--category-floor", help="Rows each input category keeps despite junk rejects (default 1)."
    ),
    rules: Path | None = typer.Option(None, "--rules", help="Rules YAML (default: data/clean_rules.yaml)."),
    action: list[str] | None = typer.Option(
        None, "--action", help="Override a rule's action: RULE=flag|fix|reject|off."
    ),
    boilerplate_min_queries: int | None = typer.Option(
        None, help="Queries sharing a text before it is boilerplate."
    ),
    hyde_min_chars: int | None = typer.Option(None, help="Shortest acceptable hyde (default 50)."),
    hyde_max_chars: int | None = typer.Option(None, help="Longest acceptable hyde (default 200)."),
) -> None:
    """Flag (or fix, or reject) everyday-sense terms, boilerplate, lex filler, echoes, missing kinds."""
    inputs = input_files(inputs, more)
    _stage(
        "clean",
        inputs,
        output,
        rejects,
        report,
        fix=fixes or fix,
        keep_flagged=keep_flagged,
        category_floor=category_floor,
        rules=None if rules is None else str(rules),
        actions=_pairs(action, "--action") or None,
        boilerplate_min_queries=boilerplate_min_queries,
        hyde_min_chars=hyde_min_chars,
        hyde_max_chars=hyde_max_chars,
    )


@app.command()
def dedup(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
    exact: bool = typer.Option(True, help="Exact duplicates of the normalized query (best score wins)."),
    near: bool = typer.Option(True, help="Near-duplicate queries (MinHash/LSH over character n-grams)."),
    near_method: str = typer.Option(
        stage_default("dedup", "near_method"),
        "--near-method",
        help="ordered (word order kept: 'test mock' != 'mock test'; typos, plurals, spacing merge) "
        "| jaccard (character 3-gram Jaccard alone, the old behaviour).",
    ),
    near_threshold: float = typer.Option(
        stage_default("dedup", "near_threshold"),
        "--near-threshold",
        help="ordered: 1 - typos/characters; jaccard: character n-gram Jaccard.",
    ),
    ngram: int = typer.Option(
        stage_default("dedup", "ngram"), "--ngram", help="Character n-gram size for near dedup."
    ),
    near_action: str = typer.Option(
        stage_default("dedup", "near_action"),
        "--near-action",
        help="reject | group (keep, label with dup_group).",
    ),
    near_keep: str = typer.Option(
        stage_default("dedup", "near_keep"),
        "--near-keep",
        help="Which row of a near cluster survives: frequent | score | first.",
    ),
    semantic: bool = typer.Option(
        False, "--semantic", help="Also dedup by sentence embeddings (all-MiniLM-L6-v2)."
    ),
    semantic_threshold: float = typer.Option(
        stage_default("dedup", "semantic_threshold"),
        "--semantic-threshold",
        help="Cosine similarity threshold.",
    ),
    dedup_items: bool = typer.Option(True, help="Remove items repeated inside one record."),
    keep: str = typer.Option(
        stage_default("dedup", "keep"), "--keep", help="Which row of an exact group survives: score | first."
    ),
    seed: int = typer.Option(stage_default("dedup", "seed"), "--seed"),
) -> None:
    """Remove duplicate queries (exact, near, optionally semantic) and repeated items."""
    inputs = input_files(inputs, more)
    _stage(
        "dedup",
        inputs,
        output,
        rejects,
        report,
        exact=exact,
        near=near,
        near_method=near_method,
        near_threshold=near_threshold,
        ngram=ngram,
        near_action=near_action,
        near_keep=near_keep,
        semantic=semantic,
        semantic_threshold=semantic_threshold,
        dedup_items=dedup_items,
        keep=keep,
        seed=seed,
    )


@app.command()
def categorize(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
    taxonomy: Path | None = typer.Option(
        None, "--taxonomy", help="Taxonomy YAML (default: data/taxonomy.yaml)."
    ),
    recategorize: bool = typer.Option(
        False, "--recategorize", help="Assign every row, ignoring existing categories."
    ),
    use_output: bool = typer.Option(
        True, help="Let the lex/vec lines decide when the query gives no (or only a weak) category."
    ),
    method: str = typer.Option(
        "embedding",
        "--method",
        help="embedding (MiniLM + seed queries), cascade (static token vectors, MiniLM for unsure rows), "
        "fast (static token vectors only) or keywords.",
    ),
    seeds: Path | None = typer.Option(
        None, "--seeds", help="Seed queries YAML (default: data/category_seeds.yaml)."
    ),
    min_similarity: float | None = typer.Option(
        None, "--min-similarity", help="Override the seed file's min_similarity (weak-match floor)."
    ),
    query_cache: bool = typer.Option(
        True, help="Keep the full model's query vectors on disk across runs (re-runs skip the encoder)."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Print why rows got their category (nearest seed queries, similarities)."
    ),
    show: int = typer.Option(20, "--show", help="Rows to explain with --explain."),
) -> None:
    """Set category (by meaning: nearest seed queries), category_reason and facets on every row."""
    inputs = input_files(inputs, more)
    run = _stage(
        "categorize",
        inputs,
        output,
        rejects,
        report,
        taxonomy=None if taxonomy is None else str(taxonomy),
        recategorize=recategorize,
        use_output=use_output,
        method=method,
        seeds=None if seeds is None else str(seeds),
        min_similarity=min_similarity,
        query_cache=query_cache,
    )
    if explain:
        from qmd_finetune.curate.analyze import print_explanations

        print_explanations(console, run.after, show)


@app.command()
def balance(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    targets: Path | None = typer.Option(
        None,
        "--targets",
        help="Targets YAML (categories/facets: count or share), or an earlier balance's plan JSON "
        "(its resolved counts: re-balancing that output changes nothing). Default: the taxonomy weights.",
    ),
    target: list[str] | None = typer.Option(
        None, "--target", help="Category target NAME=N (count) or NAME=0.1 (share)."
    ),
    facet_target: list[str] | None = typer.Option(
        None, "--facet-target", help="Facet target NAME=N or NAME=share."
    ),
    total: int | None = typer.Option(
        None, "--total", help="Rows the shares refer to (default: rows reaching balance)."
    ),
    plan: Path | None = typer.Option(
        None, "--plan", help="Generation plan JSON (default: <output>.plan.json)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for tie-breaking among equally scored rows."),
    min_score: float | None = typer.Option(None, "--min-score", help="Score stage threshold."),
    fix: bool = typer.Option(False, "--fix", help="Let clean apply its fixes."),
    fixes: str | None = FixesOpt,
    keep_flagged: bool = KeepFlaggedOpt,
    recategorize: bool = typer.Option(False, "--recategorize", help="Replace existing categories."),
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
    stage_only: bool = typer.Option(
        False, "--stage-only", help="Run only the balance stage (input already curated)."
    ),
    rubric: str = RubricOpt,
) -> None:
    """Run the default pipeline up to balance: normalize, clean, dedup, score, categorize, balance."""
    inputs = input_files(inputs, more)
    from qmd_finetune.curate.balance import TargetsError, parse_target_flags, taxonomy_targets

    try:
        categories = parse_target_flags(target)
        facets = parse_target_flags(facet_target)
    except TargetsError as exc:
        _fail(str(exc))
    balance_options = {"categories": categories or None, "facets": facets or None, "total": total}
    if targets is None and not categories:
        balance_options["targets"] = taxonomy_targets()
    stage_options: dict[str, dict] = {"balance": {k: v for k, v in balance_options.items() if v is not None}}
    if fix or fixes:
        stage_options["clean"] = {"fix": fixes or True}
    if keep_flagged:
        stage_options.setdefault("clean", {})["keep_flagged"] = True
    if recategorize:
        stage_options["categorize"] = {"recategorize": True}
    config = balance_config(
        inputs,
        output,
        targets=targets,
        plan=plan,
        seed=seed,
        min_score=min_score,
        rejects=rejects,
        report=report,
        stage_options=stage_options,
        rubric=rubric,
    )
    if stage_only:
        config.stages = [s for s in config.stages if s.name == "balance"]
    run = _execute(config, "curate balance")
    stage = run.stage("balance")
    if stage is not None:
        print_balance(console, stage.report)
        resolved = stage.report.get("targets") or {}
        console.print(
            f"targets resolved against {resolved.get('total', 0):,} rows; re-balance or analyze this output "
            f"with --targets {plan or plan_path(output)}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def split(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    fractions: str = typer.Option("0.8,0.1,0.1", "--fractions", help="train,val,test fractions."),
    seed: int = typer.Option(0, "--seed"),
    split_dir: Path | None = typer.Option(None, "--split-dir", help="Also write train/val/test files here."),
    group_column: str = typer.Option(
        "dup_group", "--group-column", help="Rows sharing it stay in one split."
    ),
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
) -> None:
    """Add a seeded train/val/test split, stratified by category and group-aware on dup_group."""
    inputs = input_files(inputs, more)
    _stage(
        "split",
        inputs,
        output,
        rejects,
        report,
        fractions=fractions,
        seed=seed,
        output_dir=None if split_dir is None else str(split_dir),
        group_column=group_column,
    )


@app.command()
def leakage(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    output: Path = OutputOpt,
    eval_queries: Path = typer.Option(..., "--eval", help="Eval queries: one per line, # comments."),
    threshold: float = typer.Option(0.8, "--threshold", help="Char 3-gram Jaccard for a near match."),
    drop_leaks: bool = typer.Option(False, "--drop-leaks", help="Reject leaking train rows."),
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
) -> None:
    """Find rows whose query (nearly) equals an eval query; report them, optionally reject from train."""
    inputs = input_files(inputs, more)
    run = _stage(
        "leakage",
        inputs,
        output,
        rejects,
        report,
        eval_queries=str(eval_queries),
        threshold=threshold,
        drop_leaks=drop_leaks,
    )
    stage = run.stage("leakage")
    if stage is not None:
        data = stage.report
        console.print(
            f"leaks: {data['exact']} exact, {data['near']} near, touching {data['eval_queries_leaked']} of "
            f"{data['eval_queries']} eval queries; dropped {data['dropped']}"
        )
        for example in data["examples"][:10]:
            console.print(f"  {example['query']}  <-  {example['leak']}", markup=False, highlight=False)


@app.command("run")
def run_config(
    config: Path = typer.Option(..., "--config", "-c", help="Pipeline YAML (input, output, stages ...)."),
    inputs: list[Path] | None = typer.Option(
        None, "--input", "-i", help="Override the config's input files."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Override the config's output."),
    rejects: Path | None = RejectsOpt,
    report: Path | None = ReportOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    rubric: str | None = rubric_option(
        None,
        "Scoring rubric v1 | v2 for the stages that score; overrides the config's `rubric:` (default v2).",
    ),
) -> None:
    """Run the stages of a pipeline config; ends with the per-stage table and the rows-in check."""
    import yaml

    try:
        resolved = load_config(
            config, input=inputs, output=output, rejects=rejects, report=report, rubric=rubric
        )
    except (PipelineError, OSError, ValueError) as exc:
        _fail(str(exc))
    if dry_run:
        console.print(yaml.safe_dump(resolved.to_dict(), sort_keys=False), highlight=False, markup=False)
        return
    run = _execute(resolved, f"curate run --config {config}")
    stage = run.stage("balance")
    if stage is not None:
        print_balance(console, stage.report)


@app.command()
def analyze(
    inputs: list[Path] = InputsOpt,
    more: list[Path] | None = MoreInputs,
    html: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the statistics as JSON here."),
    targets: Path | None = typer.Option(
        None,
        "--targets",
        help="Targets YAML, or a balance plan JSON (the counts balance used), for the category-vs-target view.",
    ),
    examples: int = typer.Option(3, "--examples", help="Example rows per category."),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Write the invalid rows read (ledger JSONL) here."
    ),
    rubric: str = rubric_option(help="Rubric v1 | v2 (default v2) scoring rows that carry no score yet."),
) -> None:
    """Counts, categories vs target, facets, lengths per kind, scores, deductions, duplicates, examples."""
    inputs = input_files(inputs, more)
    from qmd_finetune.curate.analyze import print_stats
    from qmd_finetune.curate.report import analyze_files

    try:
        stats = analyze_files(
            inputs,
            targets=targets,
            examples=examples,
            html=html,
            json_path=json_path,
            rejects=rejects,
            rubric=rubric,
        )
    except (InputError, ValueError) as exc:
        _fail(str(exc))
    print_stats(console, stats, title=", ".join(p.name for p in inputs))
    if stats.get("invalid_rows"):
        console.print(f"[yellow]{stats['invalid_rows']} invalid rows were not analyzed[/yellow]")
    for label, path in (("html", html), ("json", json_path), ("rejects", rejects)):
        if path is not None:
            console.print(f"wrote {label}: {path}", highlight=False)


@app.command()
def card(
    input_path: Path = typer.Option(
        ...,
        "--input",
        "-i",
        help="The curated file the card describes (a glob or folder must name one file).",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Card path (README.md)."),
    name: str | None = typer.Option(None, "--name", help="Dataset name (default: from the file name)."),
    license_id: str | None = typer.Option(
        None,
        "--license",
        help="License id for the front matter (default: the rows' meta.license, else unknown).",
    ),
    run_summary: Path | None = typer.Option(
        None, "--run-summary", help="Run summary JSON (default: <input>.run.json)."
    ),
    split_dir: Path | None = typer.Option(None, "--split-dir", help="Directory with train/val/test files."),
) -> None:
    """Write a Hugging Face dataset card: YAML front matter, statistics and provenance."""
    from qmd_finetune.curate.card import write_card

    found = input_files([input_path], None)
    if len(found) != 1:
        _fail(f"{input_path}: a card describes one file, this names {len(found)}")
    try:
        path = write_card(
            found[0],
            output,
            name=name,
            license_id=license_id,
            run_summary=run_summary,
            splits_dir=split_dir,
        )
    except (InputError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"wrote {path}", highlight=False)
