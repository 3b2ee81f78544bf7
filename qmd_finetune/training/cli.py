"""``train``: prepare | sft | grpo | rft | eval | export. Thin: parse flags, call the library, print."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from qmd_finetune.cli_options import rubric_option
from qmd_finetune.redact import RedactedStream
from qmd_finetune.training.common import loss_summary
from qmd_finetune.training.config import (
    ConfigError,
    GRPORunConfig,
    RFTRunConfig,
    SFTRunConfig,
    config_to_dict,
    load_config,
    parse_overrides,
)
from qmd_finetune.training.models import ModelLoadError

app = typer.Typer(
    help="Train query-expansion models: prepare | sft | grpo | rft | eval | export.", no_args_is_help=True
)
console = Console(file=RedactedStream(), soft_wrap=True)
err = Console(file=RedactedStream("stderr"), soft_wrap=True)
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _quiet_libraries(threads: int | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _log(message: str) -> None:
    console.print(message, highlight=False)


def _default_config(name: str) -> Path | None:
    path = CONFIG_DIR / name
    return path if path.is_file() else None


@app.command()
def prepare(
    inputs: list[Path] = typer.Option(
        ..., "--input", "-i", help="Record JSONL files (repeat, or list after --input)."
    ),
    more: list[Path] = typer.Argument(None, help="More input files.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Dataset directory to write."),
    base_model: str = typer.Option("local/smollm2", help="Model family decides the prompt format."),
    val_split: float = typer.Option(
        0.1,
        help="Fraction of queries for validation (stratified by category), for rows without a split "
        "column; rows with split train/val/test keep it.",
    ),
    seed: int = typer.Option(42),
    only_variants: bool = typer.Option(
        False, "--only-variants", help="Add one /only:KIND variant per record."
    ),
    short_augment: int = typer.Option(
        0, "--short-augment", help="Add N extra short-query (<= 2 words) rows."
    ),
    prompt_template: str = typer.Option(None, help="Override the prompt; must contain {query}."),
) -> None:
    """Chat-formatted train/val JSONL (prompt/completion + messages) and dataset_info.json."""
    from qmd_finetune.training.prepare import prepare as run_prepare

    try:
        result = run_prepare(
            [*inputs, *(more or [])],
            output,
            base_model=base_model,
            val_split=val_split,
            seed=seed,
            with_only_variants=only_variants,
            short_augment_n=short_augment,
            prompt_template=prompt_template,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    counts = result.info["counts"]
    table = Table(title=f"train prepare -> {output}")
    for key in counts:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if result.info["reject_reasons"]:
        console.print(f"rejected: {result.info['reject_reasons']} (see {output}/rejects.jsonl)")


def _resolve(cls: type, config: Path | None, ctx: typer.Context) -> object:
    try:
        return load_config(cls, config, parse_overrides(list(ctx.args)))
    except ConfigError as exc:
        _fail(str(exc), code=2)


def _run_training(kind: str, ctx: typer.Context, config: Path | None, dry_run: bool, resume: bool) -> None:
    cls = SFTRunConfig if kind == "sft" else GRPORunConfig
    config = config or _default_config(f"{kind}.yaml")
    resolved = _resolve(cls, config, ctx)
    if dry_run:
        console.print(f"# train {kind}: resolved config (from {config or 'defaults'})", highlight=False)
        console.print(yaml.safe_dump(config_to_dict(resolved), sort_keys=False).rstrip(), highlight=False)
        return
    _quiet_libraries()
    try:
        if kind == "sft":
            from qmd_finetune.training.sft import run_sft

            info = run_sft(resolved, resume=resume, log=_log)
        else:
            from qmd_finetune.training.grpo import run_grpo

            info = run_grpo(resolved, resume=resume, log=_log)
    except (FileNotFoundError, ModelLoadError, ValueError) as exc:
        _fail(str(exc))
    console.print(
        f"[green]done[/green]: {info['global_step']} steps in {info['seconds']}s, "
        f"{loss_summary(info)}; outputs in {resolved.output_dir}",
        highlight=False,
    )


@app.command(context_settings=OVERRIDES)
def sft(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (default: configs/sft.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
) -> None:
    """Supervised LoRA fine-tuning (TRL SFTTrainer). Override any config key: --max_steps 2."""
    _run_training("sft", ctx, config, dry_run, resume)


@app.command(context_settings=OVERRIDES)
def grpo(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (default: configs/grpo.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
) -> None:
    """GRPO with the qmd reward on top of the SFT model (TRL GRPOTrainer, own LoRA)."""
    _run_training("grpo", ctx, config, dry_run, resume)


@app.command(context_settings=OVERRIDES)
def rft(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (default: configs/rft.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Rejection-sampling fine-tuning: sample, keep the best answer by the reward, SFT on it; repeat."""
    from qmd_finetune.training.rft import check, run_rft

    config = config or _default_config("rft.yaml")
    resolved = _resolve(RFTRunConfig, config, ctx)
    try:
        check(resolved)
    except (ConfigError, FileNotFoundError, ModelLoadError) as exc:
        _fail(str(exc), code=2)
    if dry_run:
        console.print(f"# train rft: resolved config (from {config or 'defaults'})", highlight=False)
        console.print(yaml.safe_dump(config_to_dict(resolved), sort_keys=False).rstrip(), highlight=False)
        return
    _quiet_libraries(resolved.torch_num_threads)
    try:
        summary = run_rft(resolved, log=_log)
    except (FileNotFoundError, ModelLoadError, ValueError) as exc:
        _fail(str(exc))
    for r in summary["rounds"]:
        console.print(
            f"round {r['round']}: kept {r['kept']}/{r['queries']} (mean best {r['mean_best_reward']}, "
            f"mean sample {r['mean_sample_reward']}), {r['global_step']} steps in {r['train_seconds']}s",
            highlight=False,
        )
    console.print(
        f"[green]done[/green]: {summary['final_model']} (rounds: {resolved.output_dir}/rounds.json)"
    )


@app.command("eval")
def evaluate_command(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Adapter dir, merged model dir, a train sft output dir (its merged/, else adapter/), or local/smollm2.",
    ),
    queries: Path = typer.Option(
        None, "--queries", "-q", help="Query list (# headings = categories) or JSONL."
    ),
    retrieval: Path = typer.Option(
        None,
        "--retrieval",
        help="Instead of --queries: a BEIR dir or a records JSONL (known-item); adds retrieval metrics.",
    ),
    compare: str = typer.Option(None, "--compare", help="Another model, or a report.json, to diff against."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the JSON report here."),
    html_path: Path = typer.Option(None, "--html", help="Write an HTML report here."),
    batch_size: int = typer.Option(8, help="Queries per generation batch."),
    max_new_tokens: int = typer.Option(256),
    dtype: str = typer.Option(
        "auto",
        help="auto (bf16 where supported) | fp32 | bf16 | int8 (dynamic, CPU: faster, about a point lower).",
    ),
    limit: int = typer.Option(None, help="Only the first N queries."),
    show: int = typer.Option(10, help="Print the N lowest-scoring queries."),
    threads: int = typer.Option(None, help="torch CPU threads (1 is fastest on a busy machine)."),
    decoding: str = typer.Option(
        "strict",
        help="free | safe (no chat-template tokens, stop after the format's lines) | strict (also "
        "only valid line prefixes, kind limits, no repeated line).",
    ),
    rubric: str = rubric_option(
        help="Rubric v1 | v2 (default v2); a --compare report.json in another is rescored."
    ),
) -> None:
    """Greedy generation on a query list, scored with the reward; per query and per category."""
    from qmd_finetune.training import evaluate as ev

    problems = ev.argument_problems(
        model,
        queries,
        compare,
        outputs={"--output": output, "--html": html_path},
        numbers={"--batch-size": batch_size, "--max-new-tokens": max_new_tokens, "--limit": limit},
    )
    if dtype not in {"auto", "fp32", "bf16", "int8"}:
        problems.append(f"--dtype must be auto, fp32, bf16 or int8, not {dtype!r}")
    if decoding not in {"free", "safe", "strict"}:
        problems.append(f"--decoding must be free, safe or strict, not {decoding!r}")
    if (queries is None) == (retrieval is None):
        problems.append("give --queries or --retrieval (exactly one)")
    collection = None
    if retrieval is not None:
        from qmd_finetune.training import retrieval as rt

        try:
            collection = rt.load_collection(retrieval).limit(limit)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(f"--retrieval: {exc}")
    if problems:
        _fail("\n".join(problems), code=2)
    _quiet_libraries(threads)
    try:

        def run(name: str) -> dict:
            if collection is not None:
                return rt.evaluate_model(
                    name, collection, batch_size, max_new_tokens, dtype, decoding, rubric=rubric
                )
            return ev.evaluate(name, queries, batch_size, max_new_tokens, dtype, limit, decoding, rubric)

        report = run(model)
        console.print(f"evaluated: {report['loaded']}", highlight=False)
        if compare:
            other = ev.load_report(compare) if compare.endswith(".json") else run(compare)
            report["compare"] = ev.compare(report, other)
            if "retrieval" in other:
                report["compare"]["retrieval"] = {"metrics": other["retrieval"]["metrics"]}
    except (FileNotFoundError, ModelLoadError, ValueError) as exc:
        _fail(str(exc))
    _print_report(report, show)
    if "retrieval" in report:
        for line in rt.table_lines(report["retrieval"], report.get("compare", {}).get("retrieval")):
            console.print(line, highlight=False, markup=False)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"report: {output}")
    if html_path:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(ev.render_html(report), encoding="utf-8")
        console.print(f"html: {html_path}")


def _print_report(report: dict, show: int) -> None:
    from qmd_finetune import quality

    comparison = report.get("compare")
    table = Table(
        title=f"{report['loaded']}: mean {report['mean']:.1f}% over {report['n']} queries (rubric {report['rubric']})"
    )
    table.add_column("category")
    table.add_column("n", justify="right")
    table.add_column("mean %", justify="right")
    if comparison:
        table.add_column("delta", justify="right")
    for name, stats in report["categories"].items():
        row = [name, str(stats["n"]), f"{stats['mean']:.1f}"]
        if comparison:
            delta = comparison["categories"].get(name, {}).get("delta")
            row.append("" if delta is None else f"{delta:+.1f}")
        table.add_row(*row)
    console.print(table)
    if report.get("template_answers"):
        console.print(
            f"template hyde in {report['template_answers']} of {report['n']} answers (one passage "
            f"for {quality.TEMPLATE_MIN_QUERIES}+ queries; the rubric scores each answer alone and does not see it)",
            highlight=False,
        )
    worst = sorted(report["results"], key=lambda r: r["percentage"])[:show]
    for r in worst:
        first = r["deductions"][0] if r["deductions"] else ""
        console.print(f"  {r['percentage']:5.1f}  {r['query']}  [dim]{first}[/dim]", highlight=False)
    if comparison:
        console.print(
            f"vs {comparison['other_model']}: {comparison['other_mean']:.1f}% -> {comparison['mean']:.1f}% "
            f"(delta {comparison['delta']:+.1f} over {comparison['matched']} queries)",
            highlight=False,
        )
        if comparison.get("other_rescored_from"):
            console.print(
                f"  (the compared report was scored with rubric {comparison['other_rescored_from']}; "
                f"rescored with {comparison['rubric']})",
                highlight=False,
            )


@app.command("export")
def export_command(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Adapter dir (merged on export), merged model dir, or a train sft output dir.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    gguf: bool = typer.Option(
        False, "--gguf", help="Also write model.gguf (gguf package, no llama.cpp needed)."
    ),
    gguf_type: str = typer.Option("f16", "--gguf-type", help="GGUF tensor type: f16, f32 or q8_0."),
    threads: int = typer.Option(None, help="torch CPU threads."),
) -> None:
    """Merged safetensors + tokenizer + Ollama Modelfile (+ GGUF with --gguf)."""
    from qmd_finetune.training.export import export
    from qmd_finetune.training.gguf_export import GGUF_TYPES
    from qmd_finetune.training.models import inspect_model

    if gguf_type not in GGUF_TYPES:
        _fail(f"--gguf-type must be one of {', '.join(GGUF_TYPES)} (got {gguf_type!r})", code=2)
    try:
        source = inspect_model(model)
    except ModelLoadError as exc:
        _fail(f"--model: {exc}", code=2)
    _quiet_libraries(threads)
    try:
        result = export(model, output, gguf=gguf, gguf_type=gguf_type)
    except (FileNotFoundError, ModelLoadError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"exported {source.describe()} to {result.output_dir} (Modelfile: {result.modelfile})")
    if result.gguf:
        console.print(f"gguf ({gguf_type}): {result.gguf}")
    console.print(f"ollama: cd {result.output_dir} && ollama create qmd-expander -f Modelfile")


if __name__ == "__main__":
    app()
