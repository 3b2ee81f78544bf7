"""`curate`: validate, score and curate query-expansion datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from qmd_finetune.curate import summary
from qmd_finetune.io import InputError

app = typer.Typer(
    help="Validate, clean, deduplicate, score, balance and split query-expansion datasets.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

InputsOpt = typer.Option(
    ..., "--input", "-i", help="Input file(s): .jsonl, .jsonl.gz or .parquet (`--input a.jsonl b.jsonl`)."
)
MoreInputs = typer.Argument(None, hidden=True, help="More input files after --input.")
RejectsOpt = typer.Option(None, "--rejects", help="Rejects ledger path (JSONL). Default: beside the output.")


def input_files(inputs: list[Path], more: list[Path] | None) -> list[Path]:
    """`--input a b c` passes b and c as arguments; take them as inputs too."""
    return [*inputs, *(more or [])]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
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
    except InputError as exc:
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
) -> None:
    """Add score, rating and deductions to each record and print a summary."""
    try:
        result = summary.score_files(
            input_files(inputs, more), output, min_score=min_score, rejects_path=rejects, workers=workers
        )
    except InputError as exc:
        _fail(str(exc))
    summary.print_score_summary(console, result)
