"""Dataset statistics for `curate analyze`, the HTML report and the dataset card.

:func:`compute_stats` turns a frame of records into a JSON-able dict: counts, categories
(against balance targets when given), facet shares, items and lengths per kind, query
lengths, the score distribution with ratings and top deductions, clean flags, duplicate
clusters and example rows per category. :func:`print_stats` renders it in the terminal.
"""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from qmd_finetune.curate.balance import UNCATEGORIZED, load_targets, resolve_targets, target_gaps
from qmd_finetune.curate.score import deduction_kind
from qmd_finetune.records import KINDS, render
from qmd_finetune.reward import DEFAULT_RUBRIC

ONLY_PATTERN = r"(?i)\s+/only:(lex|vec|hyde)\s*$"
RATING_ORDER = ("Excellent", "Good", "Acceptable", "Poor", "Failed")
_BAR = "█"


def _value_counts(series: pl.Series) -> dict[str, int]:
    if series.len() == 0:
        return {}
    counts = series.value_counts(sort=True)
    name = series.name
    return {str(k): int(v) for k, v in zip(counts[name].to_list(), counts["count"].to_list())}


def nice_edges(lo: float, hi: float, bins: int = 20, integer: bool = False) -> np.ndarray:
    """Equal-width bin edges that cover ``[lo, hi]`` with a round width (1, 2, 2.5 or 5 x 10^k),
    about ``bins`` of them; integer data gets integer widths so no bin straddles a value."""
    span = max(hi - lo, 1.0)
    raw = span / max(bins, 1)
    magnitude = 10 ** np.floor(np.log10(raw))
    width = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        width = max(1.0, float(np.ceil(width)))
    start = np.floor(lo / width) * width
    # Integer data: [a, a+w) bins, the last edge past hi; else the last (closed) bin ends at or past hi.
    count = int((hi - start) // width) + 1 if integer else max(1, int(np.ceil((hi - start) / width - 1e-9)))
    return start + width * np.arange(count + 1)


def distribution(
    values: np.ndarray | list[float], bins: int | list[float] = 20, integer: bool = False
) -> dict[str, Any]:
    """Summary numbers and an equal-width histogram ``[[lo, hi, count], ...]`` fitted to the data.

    With ``bins`` an int the range ends at the 99.5th percentile when the sample is large;
    values beyond it are counted in ``above`` (shown as a note, never drawn as a bin of the
    same width). A list gives the edges."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return {"count": 0, "histogram": []}
    if isinstance(bins, int):
        hi = float(np.percentile(array, 99.5)) if array.size > 200 else float(array.max())
        edges = nice_edges(float(array.min()), hi, bins, integer)
    else:
        edges = np.asarray(bins, dtype=float)
    inside = array[(array >= edges[0]) & (array <= edges[-1])]
    counts, edges = np.histogram(inside, bins=edges)
    return {
        "count": int(array.size),
        "mean": round(float(array.mean()), 2),
        "min": float(array.min()),
        "p10": float(np.percentile(array, 10)),
        "median": float(np.median(array)),
        "p90": float(np.percentile(array, 90)),
        "max": float(array.max()),
        "histogram": [
            [round(float(lo), 2), round(float(hi), 2), int(c)]
            for lo, hi, c in zip(edges[:-1], edges[1:], counts)
        ],
        "above": int((array > edges[-1]).sum()),
        "below": int((array < edges[0]).sum()),
    }


def box_stats(values: np.ndarray) -> dict[str, float]:
    """Quartiles and whiskers (10th/90th percentile) for a box plot."""
    q = np.percentile(values, [10, 25, 50, 75, 90])
    return {
        "count": int(values.size),
        "mean": round(float(values.mean()), 2),
        "p10": float(q[0]),
        "q1": float(q[1]),
        "median": float(q[2]),
        "q3": float(q[3]),
        "p90": float(q[4]),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _normalized_query() -> pl.Expr:
    return pl.col("query").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _category_column(frame: pl.DataFrame) -> pl.Series:
    if "category" not in frame.columns:
        return pl.Series("category", [UNCATEGORIZED] * frame.height, dtype=pl.Utf8)
    return frame.get_column("category").fill_null(UNCATEGORIZED).replace("", UNCATEGORIZED)


def compute_stats(
    frame: pl.DataFrame,
    targets: dict[str, Any] | str | Path | None = None,
    examples: int = 3,
    score: bool = True,
    clusters: int = 10,
    rubric: str = DEFAULT_RUBRIC,
) -> dict[str, Any]:
    """Statistics of a record frame; scores rows first (with ``rubric``) when ``score`` and no score column."""
    scored_here = score and "score" not in frame.columns and frame.height > 0
    if scored_here:
        from qmd_finetune.reward import score_frame

        frame = score_frame(frame, rubric=rubric)
    stats: dict[str, Any] = {"rows": frame.height}
    if frame.height == 0:
        return stats
    norm = frame.select(_normalized_query().alias("q")).get_column("q")
    stats["unique_queries"] = int(norm.n_unique())
    stats["duplicate_rows"] = frame.height - stats["unique_queries"]
    if "_source" in frame.columns:
        stats["sources"] = _value_counts(frame.get_column("_source"))

    only = frame.get_column("query").str.extract(ONLY_PATTERN, 1).str.to_lowercase().fill_null("none")
    stats["only_mode"] = _value_counts(only)

    categories = _category_column(frame)
    stats["categories"] = _value_counts(categories.rename("category"))
    if targets is not None:
        spec = load_targets(targets) if isinstance(targets, (str, Path)) else targets
        resolved = resolve_targets(spec, frame.height)
        gaps = target_gaps(stats["categories"], resolved.categories, resolved.default)
        stats["category_targets"] = dict(sorted(gaps.items(), key=lambda item: -item[1]["count"]))
        stats["facet_targets"] = dict(resolved.facets)

    if "facets" in frame.columns:
        exploded = frame.select(pl.col("facets").explode().drop_nulls()).get_column("facets")
        stats["facets"] = {
            name: {"count": n, "share": round(n / frame.height, 4)}
            for name, n in _value_counts(exploded).items()
        }

    stats["items"] = _item_stats(frame)
    words = frame.select(pl.col("query").str.split(" ").list.len().alias("w")).get_column("w").to_numpy()
    stats["query_words"] = distribution(words, bins=20, integer=True)
    stats["query_chars"] = distribution(frame.get_column("query").str.len_chars().to_numpy())

    if "score" in frame.columns:
        rubric_name = rubric if scored_here else score_rubric_of(frame)
        stats["score"] = {"rubric": rubric_name, **_score_stats(frame, categories)}
    if "flags" in frame.columns:
        flags = frame.select(pl.col("flags").explode().drop_nulls()).get_column("flags")
        stats["flags"] = _value_counts(flags)
        stats["flagged_rows"] = int(frame.select((pl.col("flags").list.len() > 0).sum()).item())
        stats["flagged_examples"] = _flagged_examples(frame)
    if "split" in frame.columns:
        stats["splits"] = _value_counts(frame.get_column("split").fill_null("none"))
    stats["duplicates"] = _duplicate_clusters(frame, norm, clusters)
    stats["examples"] = _examples(frame, categories, examples)
    return stats


def _item_stats(frame: pl.DataFrame) -> dict[str, Any]:
    items = frame.select(pl.int_range(pl.len()).alias("row"), pl.col("output")).explode("output")
    items = items.filter(pl.col("output").is_not_null()).select(
        "row",
        pl.col("output").list.get(0).alias("kind"),
        pl.col("output").list.get(1).str.len_chars().alias("chars"),
    )
    out: dict[str, Any] = {}
    for kind in KINDS:
        of_kind = items.filter(pl.col("kind") == kind)
        per_row = of_kind.group_by("row").len()
        per_row_counts = Counter(per_row.get_column("len").to_list())
        per_row_counts[0] = frame.height - per_row.height
        out[kind] = {
            "items": of_kind.height,
            "rows_with": per_row.height,
            "per_row": {str(k): int(v) for k, v in sorted(per_row_counts.items())},
            "chars": distribution(of_kind.get_column("chars").to_numpy(), bins=24, integer=True),
        }
    if out["hyde"]["items"]:
        hyde = items.filter(pl.col("kind") == "hyde").get_column("chars")
        out["hyde"]["outside_50_200"] = int(((hyde < 50) | (hyde > 200)).sum())
    return out


def score_rubric_of(frame: pl.DataFrame) -> str:
    """The rubric named by the scored rows' ``meta.score_rubric``: one name, "mixed (v1, v2)" or "unknown"."""
    if "meta" not in frame.columns or frame.height == 0:
        return "unknown"
    names = (
        frame.filter(pl.col("score").is_not_null())
        .select(pl.col("meta").str.json_path_match("$.score_rubric").drop_nulls().unique().sort())
        .to_series()
        .to_list()
    )
    if not names:
        return "unknown"
    return names[0] if len(names) == 1 else f"mixed ({', '.join(names)})"


def _score_stats(
    frame: pl.DataFrame, categories: pl.Series, top: int = 12, worst: int = 10
) -> dict[str, Any]:
    scores = frame.get_column("score").drop_nulls().to_numpy()
    stats = distribution(scores, bins=20)
    stats["share_ge_70"] = round(float((scores >= 70).mean()), 4) if scores.size else 0.0
    if "rating" in frame.columns:
        ratings = _value_counts(frame.get_column("rating").fill_null("none"))
        stats["ratings"] = {name: ratings.get(name, 0) for name in RATING_ORDER}
    if "deductions" in frame.columns:
        counter: Counter[str] = Counter()
        for items in frame.get_column("deductions").to_list():
            counter.update({deduction_kind(d) for d in items or []})
        stats["top_deductions"] = counter.most_common(top)
    scored = frame.with_columns(categories.alias("_cat")).filter(pl.col("score").is_not_null())
    stats["by_category"] = {
        str(cat): box_stats(group.get_column("score").to_numpy())
        for (cat,), group in scored.group_by("_cat")
        if group.height
    }
    stats["worst"] = [_row_brief(row) for row in scored.sort("score").head(worst).iter_rows(named=True)]
    return stats


def _row_brief(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the report shows it: query, output text, score, deductions, flags, file:line."""
    return {
        "query": row["query"],
        "text": render([(k, t) for k, t in row["output"] or []]),
        "category": row.get("_cat", row.get("category")),
        "score": row.get("score"),
        "deductions": list(row.get("deductions") or []),
        "flags": list(row.get("flags") or []),
        "source": f"{row.get('_source')}:{row.get('_line')}" if row.get("_source") else "",
    }


def _flagged_examples(frame: pl.DataFrame, per_flag: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Rows that carry a clean flag and stayed in the data, a few per flag (worst scored first)."""
    flagged = frame.filter(pl.col("flags").list.len() > 0)
    if "score" in flagged.columns:
        flagged = flagged.sort("score", nulls_last=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in flagged.iter_rows(named=True):
        for flag in row["flags"]:
            bucket = out.setdefault(flag, [])
            if len(bucket) < per_flag:
                bucket.append(_row_brief(row))
    return out


def _duplicate_clusters(frame: pl.DataFrame, norm: pl.Series, top: int) -> dict[str, Any]:
    """Clusters of rows with their members: by ``dup_group`` when dedup grouped rows, else
    near-duplicate queries found as dedup finds them (MinHash over character 3-grams at
    dedup's default threshold), which includes exact copies; ``top=0`` only counts exact ones."""
    key, method = None, ""
    if "dup_group" in frame.columns:
        groups = frame.get_column("dup_group").cast(pl.Utf8)
        if groups.drop_nulls().is_duplicated().any():
            key, method = groups, "dup_group"
    if key is None and top == 0:
        key, method = norm, "normalized query"
    elif key is None:
        from qmd_finetune.curate import dedup

        threshold = inspect.signature(dedup.run).parameters["near_threshold"].default
        # dedup's own inputs: the query key without its only-mode suffix, compared within one mode
        keys = frame.select(dedup.query_key(pl.col("query")).alias("_key"))
        texts, modes = dedup._near_inputs(keys, np.arange(frame.height))
        labels, _ = dedup.near_duplicate_labels(texts, threshold=threshold, groups=modes)
        key = pl.Series("key", labels.astype(str))
        method = f"near-duplicate queries (char 3-gram Jaccard >= {threshold}, as dedup)"
    columns = {"key": key, "query": frame.get_column("query")}
    if "score" in frame.columns:
        columns["score"] = frame.get_column("score")
    grouped = (
        pl.DataFrame(columns)
        .filter(pl.col("key").is_not_null())
        .group_by("key")
        .agg(
            pl.len().alias("size"),
            pl.col("query").unique(maintain_order=True).head(8).alias("queries"),
            pl.col("query").n_unique().alias("distinct"),
        )
        .filter(pl.col("size") > 1)
        .sort(["size", "key"], descending=[True, False])
    )
    return {
        "method": method,
        "clusters": grouped.height,
        "rows_in_clusters": int(grouped.get_column("size").sum()) if grouped.height else 0,
        "largest": [
            {"key": k, "size": s, "queries": q, "distinct": d}
            for k, s, q, d in grouped.head(top).select("key", "size", "queries", "distinct").iter_rows()
        ],
    }


def _examples(
    frame: pl.DataFrame, categories: pl.Series, per_category: int
) -> dict[str, list[dict[str, Any]]]:
    work = frame.with_columns(categories.alias("_cat"))
    order, descending = [], []
    if "flags" in work.columns:  # clean rows first: a flagged template is a poor example
        work = work.with_columns((pl.col("flags").list.len().fill_null(0) > 0).alias("_flagged"))
        order, descending = ["_flagged"], [False]
    if "score" in work.columns:
        order, descending = [*order, "score"], [*descending, True]
    if order:
        work = work.sort(order, descending=descending, nulls_last=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for cat in sorted(work.get_column("_cat").unique().to_list()):
        rows = work.filter(pl.col("_cat") == cat).head(per_category)
        out[cat] = [
            {
                "query": row["query"],
                "text": render([(k, t) for k, t in row["output"]]),
                "score": row.get("score"),
            }
            for row in rows.iter_rows(named=True)
        ]
    return out


# ---------------------------------------------------------------- terminal


def _bar(value: float, top: float, width: int = 30) -> str:
    if top <= 0:
        return ""
    return _BAR * max(1 if value else 0, round(value / top * width))


def print_stats(console: Console, stats: dict[str, Any], title: str = "dataset") -> None:
    """The terminal report: counts, categories vs target, facets, lengths, scores, duplicates, examples."""
    rows = stats.get("rows", 0)
    overview = Table(title=f"{title}: overview", title_justify="left")
    overview.add_column("metric")
    overview.add_column("value", justify="right")
    overview.add_row("rows", str(rows))
    if not rows:
        console.print(overview)
        return
    overview.add_row("unique queries (normalized)", str(stats["unique_queries"]))
    overview.add_row("duplicate rows", str(stats["duplicate_rows"]))
    for mode, n in stats["only_mode"].items():
        overview.add_row(f"only-mode {mode}", str(n))
    if "flagged_rows" in stats:
        overview.add_row("rows with clean flags", str(stats["flagged_rows"]))
    for name, n in (stats.get("splits") or {}).items():
        overview.add_row(f"split {name}", str(n))
    console.print(overview)

    if stats.get("sources") and len(stats["sources"]) > 1:
        table = Table(title="sources", title_justify="left")
        table.add_column("file")
        table.add_column("rows", justify="right")
        for source, n in stats["sources"].items():
            table.add_row(source, str(n))
        console.print(table)

    table = Table(
        title="categories" + (" vs target" if "category_targets" in stats else ""), title_justify="left"
    )
    table.add_column("category")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    with_targets = "category_targets" in stats
    if with_targets:
        table.add_column("target", justify="right")
        table.add_column("gap", justify="right")
    table.add_column("")
    top = max(stats["categories"].values(), default=1)
    names = list(stats["category_targets"]) if with_targets else list(stats["categories"])
    for name in names:
        n = stats["categories"].get(name, 0)
        cells = [name, str(n), f"{n / rows:.1%}"]
        if with_targets:
            target = stats["category_targets"][name]["target"]
            gap = "" if target is None else f"{n - target:+d}"
            style = "red" if target is not None and n < target else "green"
            cells += ["-" if target is None else str(target), f"[{style}]{gap}[/{style}]" if gap else ""]
        cells.append(_bar(n, top))
        table.add_row(*cells)
    console.print(table)

    if stats.get("facets"):
        table = Table(title="facets", title_justify="left")
        for column in ("facet", "rows", "share", "target"):
            table.add_column(column, justify="left" if column == "facet" else "right")
        targets = stats.get("facet_targets") or {}
        for name, data in stats["facets"].items():
            table.add_row(name, str(data["count"]), f"{data['share']:.1%}", str(targets.get(name, "-")))
        console.print(table)

    table = Table(title="items per kind (length in characters)", title_justify="left")
    for column in ("kind", "items", "rows with", "mean", "p10", "median", "p90", "max", "per row"):
        table.add_column(column, justify="left" if column in ("kind", "per row") else "right")
    for kind, data in stats["items"].items():
        chars = data["chars"]
        per_row = " ".join(f"{k}:{v}" for k, v in data["per_row"].items())
        if not chars["count"]:
            table.add_row(kind, "0", "0", "", "", "", "", "", per_row)
            continue
        table.add_row(
            kind,
            str(data["items"]),
            str(data["rows_with"]),
            f"{chars['mean']:.0f}",
            f"{chars['p10']:.0f}",
            f"{chars['median']:.0f}",
            f"{chars['p90']:.0f}",
            f"{chars['max']:.0f}",
            per_row,
        )
    console.print(table)
    if stats["items"]["hyde"].get("outside_50_200"):
        console.print(f"hyde items outside 50-200 chars: {stats['items']['hyde']['outside_50_200']}")
    _print_histogram(console, "hyde length (chars)", stats["items"]["hyde"]["chars"].get("histogram", []))
    _print_histogram(console, "query length (words)", stats["query_words"].get("histogram", []), integer=True)

    if "score" in stats:
        s = stats["score"]
        console.print(
            f"[bold]score[/bold] (rubric {s.get('rubric', 'unknown')}): mean {s['mean']:.1f}, median {s['median']:.1f}, min {s['min']:.1f}, "
            f"max {s['max']:.1f}, share >= 70 {s['share_ge_70']:.1%}"
        )
        _print_histogram(console, "score histogram", s["histogram"], integer=True)
        if s.get("ratings"):
            console.print("ratings: " + ", ".join(f"{k} {v}" for k, v in s["ratings"].items()))
        if s.get("top_deductions"):
            table = Table(title="top deductions (rows)", title_justify="left")
            table.add_column("deduction")
            table.add_column("rows", justify="right")
            for reason, n in s["top_deductions"]:
                table.add_row(reason, str(n))
            console.print(table)

    if stats.get("flags"):
        table = Table(title="clean flags", title_justify="left")
        table.add_column("flag")
        table.add_column("rows", justify="right")
        for flag, n in list(stats["flags"].items())[:15]:
            table.add_row(flag, str(n))
        console.print(table)

    dups = stats["duplicates"]
    console.print(
        f"[bold]duplicate clusters[/bold] (by {dups['method']}): {dups['clusters']} clusters, "
        f"{dups['rows_in_clusters']} rows"
    )
    for cluster in dups["largest"][:5]:
        console.print(
            f"  {cluster['size']} x " + " | ".join(cluster["queries"][:3]), markup=False, highlight=False
        )

    console.print("[bold]examples per category[/bold] (best scored, unflagged first)")
    for cat, rows_ in stats["examples"].items():
        for example in rows_[:1]:
            score = f" [{example['score']:.1f}]" if example.get("score") is not None else ""
            console.print(f"  {cat}: {example['query']}{score}", markup=False, highlight=False)


def _print_histogram(
    console: Console, title: str, histogram: list[list[float]], integer: bool = False
) -> None:
    if not histogram:
        return
    top = max(c for _, _, c in histogram) or 1
    console.print(f"[bold]{title}[/bold]")
    for lo, hi, count in histogram:
        label = f"{lo:g}-{hi:g}" if not integer else f"{int(lo)}-{int(hi)}"
        console.print(f"  {label:>11} {count:>7} {_bar(count, top, 40)}", highlight=False)


def print_balance(console: Console, report: dict[str, Any]) -> None:
    """Categories and facets against their targets, and the generation plan."""
    if not report:
        return
    table = Table(title="balance: categories vs target", title_justify="left")
    for column in ("category", "before", "target", "kept", "deficit"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, row in report.get("categories", {}).items():
        target = "-" if row["target"] is None else str(row["target"])
        deficit = f"[red]{row['deficit']}[/red]" if row["deficit"] else "0"
        table.add_row(name, str(row["before"]), target, str(row["kept"]), deficit)
    console.print(table)
    if report.get("facets"):
        facets = Table(title="balance: facets vs target", title_justify="left")
        for column in ("facet", "target", "kept", "deficit"):
            facets.add_column(column, justify="left" if column == "facet" else "right")
        for name, row in report["facets"].items():
            facets.add_row(name, str(row["target"]), str(row["kept"]), str(row["deficit"]))
        console.print(facets)
    if report.get("warning"):
        console.print(f"[yellow]{report['warning']}[/yellow]")
    plan = report.get("plan") or {}
    console.print(f"generation plan: {plan.get('total_needed', 0)} more queries needed", highlight=False)


def print_explanations(console: Console, frame: pl.DataFrame, show: int = 20) -> None:
    """Categories per row with the reason categorize gave, and the categories' counts."""
    if "category_reason" not in frame.columns or frame.height == 0:
        console.print("[yellow]no category_reason column (run categorize)[/yellow]")
        return
    table = Table(title=f"categorize: why (first {min(show, frame.height)} rows)", title_justify="left")
    for column in ("query", "category", "facets", "reason"):
        table.add_column(column)
    facets = frame.get_column("facets").head(show).to_list() if "facets" in frame.columns else None
    for i, row in enumerate(frame.select("query", "category", "category_reason").head(show).iter_rows()):
        facet_text = ", ".join(facets[i] or []) if facets is not None else ""
        table.add_row(row[0], row[1] or "", facet_text, row[2] or "")
    console.print(table)
    kinds = frame.select(
        pl.col("category_reason").str.extract(r"^(\w+(?: \w+)?)", 1).fill_null("none").alias("how")
    ).get_column("how")
    console.print("assigned by: " + ", ".join(f"{k} {v}" for k, v in _value_counts(kinds).items()))
