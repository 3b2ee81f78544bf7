"""The stage contract: ``frame -> StageResult(kept, rejected-with-reason, counts)``.

Every curation stage is a function ``run(frame: pl.DataFrame, **options) -> StageResult``.
``kept`` has the input's columns (a stage may add columns such as ``score`` or ``flags``);
``rejected`` has the input's columns plus ``_reason`` (Utf8). Stages never drop a row
silently: ``frame.height == kept.height + rejected.height``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

REASON = "_reason"


@dataclass
class StageResult:
    kept: pl.DataFrame
    rejected: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    """What the stage did besides rejecting, e.g. ``{"fixed_prefix_case": 12}``."""
    report: dict[str, Any] = field(default_factory=dict)
    """Stage-specific data for reports (duplicate clusters, deficits, leaks ...)."""

    def rejected_by_reason(self) -> dict[str, int]:
        if self.rejected.height == 0:
            return {}
        counts = self.rejected.group_by(REASON).len().sort("len", descending=True)
        return dict(zip(counts[REASON].to_list(), counts["len"].to_list()))


def empty_rejected(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.head(0).with_columns(pl.lit(None, pl.Utf8).alias(REASON))


def split_by_mask(frame: pl.DataFrame, reject_reason: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split on an expression that yields a reason (Utf8) for rows to reject and null to keep."""
    marked = frame.with_columns(reject_reason.alias(REASON))
    kept = marked.filter(pl.col(REASON).is_null()).drop(REASON)
    rejected = marked.filter(pl.col(REASON).is_not_null())
    return kept, rejected


def set_meta(frame: pl.DataFrame, key: str, value: Any) -> pl.DataFrame:
    """Set ``meta[key] = value`` on every row (``meta`` is a JSON object string, or null).

    Used to name the rubric of a row's score (``meta.score_rubric``). Each distinct meta
    string is decoded once, so the cost follows the number of distinct metas, not rows.
    """
    if frame.height == 0:
        return frame if "meta" in frame.columns else frame.with_columns(pl.lit(None, pl.Utf8).alias("meta"))
    if "meta" not in frame.columns:
        return frame.with_columns(pl.lit(json.dumps({key: value}, ensure_ascii=False)).alias("meta"))
    metas = frame.get_column("meta")
    distinct = metas.drop_nulls().unique().to_list()
    mapping = {text: json.dumps({**json.loads(text), key: value}, ensure_ascii=False) for text in distinct}
    return frame.with_columns(
        metas.replace_strict(mapping, default=None, return_dtype=pl.Utf8)
        .fill_null(json.dumps({key: value}, ensure_ascii=False))
        .alias("meta")
    )
