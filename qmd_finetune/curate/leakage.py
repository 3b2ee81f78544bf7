"""Leakage stage: find training rows whose query is (nearly) an eval query.

Queries are compared after a light normalization (lower case, only-mode suffix removed,
punctuation dropped, whitespace collapsed). An *exact* leak has the same normalized query;
a *near* leak has character 3-gram Jaccard similarity >= ``threshold`` with some eval
query (char n-grams because queries are 2-8 words: word shingles say nothing about them).
Similarities are exact, computed through an inverted index over the eval queries' n-grams,
so there is no LSH miss rate on a list of a few hundred eval queries.

Every leak is reported (``leak`` column and the stage report); with ``drop_leaks`` rows in
the train split (or all rows when there is no ``split`` column) are rejected.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from qmd_finetune.curate.stage import REASON, StageResult
from qmd_finetune.io import read_query_lines
from qmd_finetune.records import ONLY_RE

NGRAM = 3
DEFAULT_THRESHOLD = 0.8
_PUNCT_RE = re.compile(r"[^\w\s]+")
_SPACE_RE = re.compile(r"\s+")


def read_eval_queries(path: str | Path) -> list[str]:
    """One query per line; blank lines and ``#`` comments are skipped (records files work too)."""
    return read_query_lines(path)


def normalize_query(query: str) -> str:
    base = ONLY_RE.sub("", query)
    return _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", base.lower())).strip()


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    padded = f" {text} "
    if len(padded) <= n:
        return {padded}
    return {padded[i : i + n] for i in range(len(padded) - n + 1)}


class EvalIndex:
    """The eval queries, indexed for exact and near lookups."""

    def __init__(self, queries: list[str], threshold: float = DEFAULT_THRESHOLD) -> None:
        self.queries = queries
        self.threshold = threshold
        self.exact: dict[str, int] = {}
        self.grams: list[set[str]] = []
        self.postings: dict[str, list[int]] = {}
        for i, query in enumerate(queries):
            norm = normalize_query(query)
            self.exact.setdefault(norm, i)
            grams = ngrams(norm)
            self.grams.append(grams)
            for gram in grams:
                self.postings.setdefault(gram, []).append(i)

    def match(self, query: str) -> tuple[str, int, float] | None:
        """``("exact" | "near", eval index, similarity)`` for the best match, or None."""
        norm = normalize_query(query)
        if norm in self.exact:
            return "exact", self.exact[norm], 1.0
        grams = ngrams(norm)
        overlap: Counter[int] = Counter()
        for gram in grams:
            overlap.update(self.postings.get(gram, ()))
        best: tuple[float, int] | None = None
        for i, inter in overlap.items():
            similarity = inter / (len(grams) + len(self.grams[i]) - inter)
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, i)
        if best is None:
            return None
        return "near", best[1], round(best[0], 3)


def run(
    frame: pl.DataFrame,
    eval_queries: str | Path | list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    drop_leaks: bool = False,
) -> StageResult:
    """Mark rows whose query leaks an eval query; with ``drop_leaks`` reject the train ones."""
    if eval_queries is None:
        raise ValueError("leakage needs eval_queries (a file with one query per line, or a list)")
    queries = read_eval_queries(eval_queries) if isinstance(eval_queries, (str, Path)) else list(eval_queries)
    index = EvalIndex(queries, threshold)

    unique = frame.get_column("query").unique().to_list()
    found = {q: m for q in unique if (m := index.match(q)) is not None}
    leaks = [_describe(found.get(q), queries) for q in frame.get_column("query").to_list()]
    marked = frame.with_columns(pl.Series("leak", leaks, dtype=pl.Utf8))
    in_train = pl.col("split") == "train" if "split" in frame.columns else pl.lit(True)
    if drop_leaks:
        reason = (
            pl.when(pl.col("leak").is_not_null() & in_train)
            .then(pl.format("eval leak ({})", pl.col("leak").str.extract(r"^(\w+)")))
            .otherwise(pl.lit(None, pl.Utf8))
        )
        marked = marked.with_columns(reason.alias(REASON))
        kept = marked.filter(pl.col(REASON).is_null()).drop(REASON)
        rejected = marked.filter(pl.col(REASON).is_not_null())
    else:
        kept, rejected = marked, marked.head(0).with_columns(pl.lit(None, pl.Utf8).alias(REASON))

    leaked = marked.filter(pl.col("leak").is_not_null())
    by_split: dict[str, int] = {}
    if "split" in marked.columns and leaked.height:
        counts = leaked.group_by("split").len()
        by_split = dict(zip(counts["split"].to_list(), counts["len"].to_list()))
    report: dict[str, Any] = {
        "eval_queries": len(queries),
        "threshold": threshold,
        "exact": int(leaked.get_column("leak").str.starts_with("exact").sum()) if leaked.height else 0,
        "near": int(leaked.get_column("leak").str.starts_with("near").sum()) if leaked.height else 0,
        "by_split": by_split,
        "eval_queries_leaked": len({d.split(": ", 1)[1] for d in leaked.get_column("leak").to_list()}),
        "examples": leaked.select("query", "leak").head(50).to_dicts(),
        "dropped": rejected.height,
    }
    counts_out = {"leak_exact": report["exact"], "leak_near": report["near"]}
    return StageResult(kept=kept, rejected=rejected, counts=counts_out, report=report)


def _describe(match: tuple[str, int, float] | None, queries: list[str]) -> str | None:
    if match is None:
        return None
    kind, i, similarity = match
    return f"exact: {queries[i]}" if kind == "exact" else f"near {similarity:g}: {queries[i]}"
