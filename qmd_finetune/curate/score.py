"""Score stage: the reward as a curation filter.

Adds ``score`` (percentage), ``rating`` and ``deductions`` with :func:`reward.score_frame`
(the one scorer, never forked) under ``rubric`` (default v2), names the rubric in every
row's ``meta.score_rubric`` and the stage report, and rejects rows under ``min_score``.
"""

from __future__ import annotations

import polars as pl

from qmd_finetune.curate.stage import REASON, StageResult, empty_rejected, set_meta, split_by_mask
from qmd_finetune.curate.summary import deduction_kind, score_stats
from qmd_finetune.reward import DEFAULT_RUBRIC, check_rubric, score_frame

SCORE_COLUMNS = ("score", "rating", "deductions")


def run(
    frame: pl.DataFrame,
    min_score: float | None = None,
    workers: int | None = None,
    rubric: str = DEFAULT_RUBRIC,
) -> StageResult:
    """Score every row; with ``min_score`` rows scoring below it are rejected."""
    rubric = check_rubric(rubric)
    scored = score_frame(frame.drop([c for c in SCORE_COLUMNS if c in frame.columns]), workers, rubric)
    scored = set_meta(scored, "score_rubric", rubric)
    if min_score is None:
        kept, rejected = scored, empty_rejected(scored)
    else:
        reason = (
            pl.when(pl.col("score") < min_score)
            .then(pl.lit(f"score below {min_score:g}"))
            .otherwise(pl.lit(None, pl.Utf8))
        )
        kept, rejected = split_by_mask(scored, reason)
    counts = {f"rating_{name.lower()}": n for name, n in _value_counts(scored, "rating").items()}
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=score_stats(scored, rubric=rubric))


def _value_counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if frame.height == 0:
        return {}
    counts = frame.get_column(column).value_counts(sort=True)
    return dict(zip(counts[column].to_list(), counts["count"].to_list()))


__all__ = ["REASON", "SCORE_COLUMNS", "deduction_kind", "run"]
