"""Balance stage: bring categories (and facets) towards a target distribution.

Targets come from a YAML file (``configs/targets.yaml``), a generation plan, or flags. A
target is a row count (an int) or a share of ``total`` (a float <= 1; ``total`` defaults to
the rows in). Shares are resolved once, against the stage's input, into row counts; groups
over their target are downsampled keeping the highest-scored rows (ties broken by a seeded
shuffle); groups under it are reported as deficits and written to a generation plan
(``{"categories": {...}, "facets": {...}, "total_needed": n, "targets": {...}}``) that
``generate queries --from-plan`` consumes. The plan's ``targets`` are the resolved row
counts: given back as targets (``--targets <plan>``) they balance the output again without
change, and ``curate analyze --targets <plan>`` reports the same deficits. Re-resolving the
shares against the smaller output instead would cut it again on every run.
Deficits are computed in one place, :func:`target_gaps`, for balance and analyze alike.

Facets overlap (a query can be short *and* temporal), so facet targets only downsample
rows whose category stays at or above its own target; facet deficits are reported and
planned but are not added to category deficits: ``total_needed`` is the larger of the
summed category deficits and the largest facet deficit, because new queries for a
deficit category can carry a missing facet too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from qmd_finetune.curate.stage import REASON, StageResult

UNCATEGORIZED = "uncategorized"
_ROW = "_balance_row"
_RANK = "_balance_rank"
_CAT = "_balance_category"


@dataclass
class Targets:
    """Resolved balance targets (absolute row counts)."""

    categories: dict[str, int] = field(default_factory=dict)
    facets: dict[str, int] = field(default_factory=dict)
    default: int | None = None
    """Target for categories not listed; None keeps them as they are."""
    total: int | None = None
    """The row count shares were resolved against."""

    def to_dict(self) -> dict[str, Any]:
        """A targets spec of row counts only: resolving it again gives the same targets."""
        return {
            "total": self.total,
            "categories": dict(self.categories),
            "facets": dict(self.facets),
            "default": self.default,
        }


class TargetsError(ValueError):
    pass


def load_targets(path: str | Path) -> dict[str, Any]:
    """A targets YAML, or a generation plan (JSON) whose resolved ``targets`` are reused as counts."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TargetsError(f"{path}: cannot read targets: {exc}") from exc
    if not isinstance(data, dict):
        raise TargetsError(f"{path}: targets must be a mapping")
    if "total_needed" in data:  # a generation plan written by balance
        if not isinstance(data.get("targets"), dict):
            raise TargetsError(f"{path}: this plan holds no resolved targets; pass the targets YAML")
        return data["targets"]
    return data


def taxonomy_targets(path: str | Path | None = None) -> dict[str, Any]:
    """Default targets: the taxonomy's category weights as shares (weight 0 = not targeted)."""
    from qmd_finetune.resources import data_path

    data = yaml.safe_load(Path(path or data_path("taxonomy.yaml")).read_text(encoding="utf-8")) or {}
    weights = {name: float(spec.get("weight") or 0) for name, spec in (data.get("categories") or {}).items()}
    return {"categories": {name: weight for name, weight in weights.items() if weight > 0}}


def parse_target_flags(values: list[str] | None) -> dict[str, float]:
    """``["technology=300", "health=0.1"]`` -> ``{"technology": 300, "health": 0.1}``."""
    out: dict[str, float] = {}
    for value in values or []:
        name, sep, number = value.partition("=")
        if not sep or not name.strip():
            raise TargetsError(f"target {value!r} is not NAME=N")
        try:
            out[name.strip()] = float(number) if "." in number else int(number)
        except ValueError as exc:
            raise TargetsError(f"target {value!r}: {number!r} is not a number") from exc
    return out


def resolve_targets(spec: dict[str, Any], rows: int) -> Targets:
    """Turn counts and shares into row counts. ``total`` (default ``rows``) scales shares."""
    unknown = set(spec) - {"total", "categories", "facets", "default"}
    if unknown:
        raise TargetsError(f"unknown keys in targets: {', '.join(sorted(unknown))}")
    total = spec.get("total") or rows
    if not isinstance(total, int) or total < 0:
        raise TargetsError(f"total must be a non-negative integer, got {total!r}")

    def count(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise TargetsError(f"target for {name!r} must be a non-negative number, got {value!r}")
        if isinstance(value, float) and value <= 1:
            return round(value * total)
        return int(value)

    categories = {str(k): count(str(k), v) for k, v in (spec.get("categories") or {}).items()}
    facets = {str(k): count(str(k), v) for k, v in (spec.get("facets") or {}).items()}
    default = spec.get("default")
    return Targets(categories, facets, None if default is None else count("default", default), total)


def target_gaps(
    counts: dict[str, int], targets: dict[str, int], default: int | None = None, names: Any = ()
) -> dict[str, dict[str, Any]]:
    """Per group (counted, targeted or named): ``count``, ``target`` (``default`` when not listed;
    None = not targeted) and ``deficit``. Balance and analyze both use it, so they agree."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(counts) | set(targets) | set(names)):
        count, target = counts.get(name, 0), targets.get(name, default)
        out[name] = {
            "count": count,
            "target": target,
            "deficit": 0 if target is None else max(0, target - count),
        }
    return out


def run(
    frame: pl.DataFrame,
    targets: dict[str, Any] | str | Path | None = None,
    categories: dict[str, float] | None = None,
    facets: dict[str, float] | None = None,
    total: int | None = None,
    default: float | None = None,
    seed: int = 0,
    plan: str | Path | None = None,
) -> StageResult:
    """Downsample groups over target (keeping the best-scored rows); report and plan deficits.

    ``targets`` is a targets mapping or a YAML path; ``categories``/``facets``/``total``/``default``
    (e.g. from flags) override its entries. ``plan`` writes the generation plan JSON there.
    """
    spec: dict[str, Any] = dict(load_targets(targets) if isinstance(targets, (str, Path)) else targets or {})
    spec["categories"] = {**(spec.get("categories") or {}), **(categories or {})}
    spec["facets"] = {**(spec.get("facets") or {}), **(facets or {})}
    if total is not None:
        spec["total"] = total
    if default is not None:
        spec["default"] = default
    resolved = resolve_targets(spec, frame.height)

    has_facets = "facets" in frame.columns
    score = pl.col("score") if "score" in frame.columns else pl.lit(0.0)
    # A slim frame (row id, category, score, facets) does the work; reasons join back by row id.
    work = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
        _category_expr(frame).alias(_CAT),
        score.cast(pl.Float64).fill_null(-1.0).alias("_balance_score"),
        *([pl.col("facets")] if has_facets else []),
    )
    rng = np.random.default_rng(seed)
    work = work.with_columns(pl.Series(_RANK, rng.permutation(work.height), dtype=pl.Int64))
    # Best first: highest score, then the seeded shuffle.
    work = work.sort(["_balance_score", _RANK], descending=[True, False])
    before = _counts(work, _CAT)

    # 1. categories: rows past the target of their category, best first, are dropped
    cat_target = {c: resolved.categories.get(c, resolved.default) for c in before}
    limits = pl.DataFrame(
        {_CAT: list(cat_target), "_cat_limit": list(cat_target.values())},
        schema={_CAT: pl.Utf8, "_cat_limit": pl.Int64},
    )
    work = work.join(limits, on=_CAT, how="left", maintain_order="left").with_columns(
        pl.int_range(pl.len()).over(_CAT).alias("_cat_pos")
    )
    over = pl.col("_cat_limit").is_not_null() & (pl.col("_cat_pos") >= pl.col("_cat_limit"))
    work = work.with_columns(
        pl.when(over).then(pl.lit("category over target: ") + pl.col(_CAT)).otherwise(None).alias(REASON)
    )

    # 2. facets: drop the worst holders of an over-target facet, never taking a category under
    #    its target. Worst first, category c can give up (count_c - target_c) rows.
    facet_report: dict[str, dict[str, int]] = {}
    if resolved.facets and has_facets:
        for facet, target in resolved.facets.items():
            alive = pl.col(REASON).is_null()
            holder = alive & pl.col("facets").list.contains(facet)
            have = int(work.select(holder.sum()).item())
            if have <= target:
                continue
            spare = (
                pl.when(pl.col("_cat_limit").is_null())
                .then(pl.lit(None, pl.Int64))
                .otherwise(alive.sum().over(_CAT) - pl.col("_cat_limit"))
            )
            worst_rank = (
                pl.when(holder)
                .then(holder.cast(pl.Int64).reverse().cum_sum().reverse().over(_CAT))
                .otherwise(None)
            )
            work = work.with_columns(spare.alias("_spare"), worst_rank.alias("_worst"))
            eligible = holder & (pl.col("_spare").is_null() | (pl.col("_worst") <= pl.col("_spare")))
            chosen = eligible & (eligible.cast(pl.Int64).reverse().cum_sum().reverse() <= have - target)
            work = work.with_columns(
                pl.when(chosen)
                .then(pl.lit(f"facet over target: {facet}"))
                .otherwise(pl.col(REASON))
                .alias(REASON)
            ).drop("_spare", "_worst")
        alive_rows = work.filter(pl.col(REASON).is_null())
        held = {f: alive_rows.filter(pl.col("facets").list.contains(f)).height for f in resolved.facets}
        facet_report = {
            f: {"target": g["target"], "kept": g["count"], "deficit": g["deficit"]}
            for f, g in target_gaps(held, resolved.facets).items()
        }

    remaining = work.filter(pl.col(REASON).is_null())
    gaps = target_gaps(_counts(remaining, _CAT), resolved.categories, resolved.default, before)
    category_report = {
        cat: {
            "before": before.get(cat, 0),
            "target": g["target"],
            "kept": g["count"],
            "deficit": g["deficit"],
        }
        for cat, g in gaps.items()
    }
    generation_plan = build_plan(category_report, facet_report, resolved)
    if plan is not None:
        write_plan(generation_plan, plan)

    reasons = work.select(_ROW, REASON).sort(_ROW).get_column(REASON)
    marked = frame.with_columns(reasons)
    kept = marked.filter(pl.col(REASON).is_null()).drop(REASON)
    rejected = marked.filter(pl.col(REASON).is_not_null())
    report: dict[str, Any] = {
        "targets": resolved.to_dict(),
        "categories": category_report,
        "facets": facet_report,
        "plan": generation_plan,
        "seed": seed,
    }
    if resolved.facets and not has_facets:
        report["warning"] = "facet targets given but the frame has no facets column (run categorize first)"
    counts = {"deficit_total": generation_plan["total_needed"]}
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=report)


def _category_expr(frame: pl.DataFrame) -> pl.Expr:
    if "category" not in frame.columns:
        return pl.lit(UNCATEGORIZED)
    return pl.col("category").fill_null(UNCATEGORIZED).replace("", UNCATEGORIZED)


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if frame.height == 0:
        return {}
    counts = frame.group_by(column).len()
    return dict(zip(counts[column].to_list(), counts["len"].to_list()))


def build_plan(
    category_report: dict[str, dict[str, Any]],
    facet_report: dict[str, dict[str, int]],
    targets: Targets | None = None,
) -> dict[str, Any]:
    """The generation plan: how many more queries each category/facet needs, and the row-count
    targets they were measured against (reusable as ``--targets``)."""
    cats = {name: r["deficit"] for name, r in category_report.items() if r["deficit"] > 0}
    facets = {name: r["deficit"] for name, r in facet_report.items() if r["deficit"] > 0}
    total = max(sum(cats.values()), max(facets.values(), default=0))
    plan: dict[str, Any] = {"categories": cats, "facets": facets, "total_needed": total}
    if targets is not None:
        plan["targets"] = targets.to_dict()
    return plan


def write_plan(plan: dict[str, Any], path: str | Path) -> Path:
    from qmd_finetune.io import atomic_write

    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    return path
