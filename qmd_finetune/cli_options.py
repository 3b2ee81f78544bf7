"""Command-line options shared by the ``curate``, ``generate``, ``gepa`` and ``train`` CLIs."""

from __future__ import annotations

from typing import Any

import typer

from qmd_finetune.reward import DEFAULT_RUBRIC, RUBRICS, check_rubric


def _check_rubric(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_rubric(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def rubric_option(default: str | None = DEFAULT_RUBRIC, help: str = "") -> Any:
    """``--rubric v1|v2``; an unknown name is a usage error (exit 2) listing the valid ones."""
    names = " | ".join(RUBRICS)
    return typer.Option(
        default,
        "--rubric",
        callback=_check_rubric,
        help=help or f"Scoring rubric: {names} (v2 = qmd's current rubric; v1 = the seed's reward-spec.md).",
    )
