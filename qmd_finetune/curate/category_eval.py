"""Measure categorization against hand-labelled queries: accuracy, per-category recall and confusions.

The labelled file is TSV with a ``query<TAB>category`` header; ``#`` lines are comments.
Both methods of :mod:`qmd_finetune.curate.categorize` run through the stage itself
(``recategorize=True``, ``use_output=False``), so the measured rule is the shipped one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from qmd_finetune.curate import categorize


def read_labelled(path: str | Path, taxonomy: categorize.Taxonomy | None = None) -> list[tuple[str, str]]:
    """(query, category) pairs; a malformed line or unknown category fails naming file:line."""
    tax = taxonomy or categorize.load_taxonomy()
    names = set(tax.names)
    pairs: list[tuple[str, str]] = []
    header_seen = False
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        if not header_seen:
            if line.split("\t") != ["query", "category"]:
                raise ValueError(f"{path}:{number}: expected the header 'query<TAB>category'")
            header_seen = True
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip():
            raise ValueError(f"{path}:{number}: expected 'query<TAB>category'")
        if fields[1] not in names:
            raise ValueError(f"{path}:{number}: unknown category {fields[1]!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


def predict(queries: list[str], method: str = "embedding", **options: Any) -> list[str]:
    """The category the stage gives each query when it must assign one from the query alone."""
    frame = pl.DataFrame(
        {"query": queries, "output": [[] for _ in queries]},
        schema={"query": pl.Utf8, "output": pl.List(pl.List(pl.Utf8))},
    )
    kept = categorize.run(frame, recategorize=True, use_output=False, method=method, **options).kept
    return kept["category"].to_list()


def summarize(pairs: list[tuple[str, str]], predicted: list[str]) -> dict[str, Any]:
    """Accuracy, per-category recall/precision with the commonest confusions, and the errors."""
    labels = [label for _, label in pairs]
    correct = sum(p == t for p, t in zip(predicted, labels))
    per_category: dict[str, dict[str, Any]] = {}
    for category in sorted(set(labels) | set(predicted)):
        rows = [p for p, t in zip(predicted, labels) if t == category]
        hits = sum(p == category for p in rows)
        claimed = sum(p == category for p in predicted)
        wrong = Counter(p for p in rows if p != category)
        per_category[category] = {
            "n": len(rows),
            "correct": hits,
            "recall": round(hits / len(rows), 3) if rows else None,
            "precision": round(hits / claimed, 3) if claimed else None,
            "confused_with": dict(wrong.most_common(3)),
        }
    return {
        "n": len(pairs),
        "correct": correct,
        "accuracy": round(correct / len(pairs), 4) if pairs else 0.0,
        "per_category": per_category,
        "errors": [{"query": q, "label": t, "predicted": p} for (q, t), p in zip(pairs, predicted) if p != t],
    }


def evaluate(
    path: str | Path, methods: tuple[str, ...] = categorize.METHODS, **options: Any
) -> dict[str, dict[str, Any]]:
    """One summary per method on the labelled file."""
    pairs = read_labelled(path)
    queries = [q for q, _ in pairs]
    return {method: summarize(pairs, predict(queries, method, **options)) for method in methods}


def leave_one_out(
    seeds: categorize.Seeds | None = None,
    neighbors: tuple[int, ...] = (1, 3, 5, 7, 9),
    tie_margins: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.05),
) -> dict[str, Any]:
    """Seed accuracy with each seed classified by the others, per setting: how the settings are chosen.

    Also the 1st, 2nd and 5th percentiles of each seed's best leave-one-out score (the
    ``min_similarity`` candidates) at the file's ``neighbors``.
    """
    import numpy as np

    tax = categorize.load_taxonomy()
    seed_set = seeds or categorize.load_seeds(taxonomy=tax)
    vectors = categorize.seed_vectors(seed_set, categorize.load_encoder())
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    keyword = categorize._assign(pl.Series(seed_set.texts), tax)["category"].to_list()
    keyword_index = np.array(
        [seed_set.categories.index(k) if k in seed_set.categories else -1 for k in keyword]
    )
    rows = np.arange(len(seed_set.texts))
    grid: dict[str, float] = {}
    for k in neighbors:
        trial = categorize.Seeds(**{**seed_set.__dict__, "neighbors": k})
        scores = categorize.category_scores(similarity, trial)
        best = scores.argmax(axis=1)
        top = scores[rows, best]
        for margin in tie_margins:
            chosen = best.copy()
            near = (keyword_index >= 0) & (scores[rows, np.maximum(keyword_index, 0)] >= top - margin)
            chosen[near] = keyword_index[near]
            grid[f"neighbors={k} tie_margin={margin}"] = round(float(np.mean(chosen == seed_set.labels)), 4)
    own = categorize.category_scores(similarity, seed_set).max(axis=1)
    return {
        "seeds": len(seed_set.texts),
        "accuracy": grid,
        "best_score_percentiles": {str(p): round(float(np.percentile(own, p)), 3) for p in (1, 2, 5)},
    }


def cascade_leave_one_out(
    seeds: categorize.Seeds | None = None,
    margins: tuple[float, ...] = (0.0, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08),
) -> dict[str, Any]:
    """Per ``cascade_margin``: seed leave-one-out accuracy and the share re-encoded by the full model.

    Each seed is classified by the others with static vectors; those the cascade is not
    sure of (static margin under the candidate, keyword rule naming another category) go to
    the full model (classified by the others' full vectors). Margin 0 is the static path
    alone. This is how ``cascade_margin`` is chosen.
    """
    import numpy as np

    from qmd_finetune.curate.static_encoder import load_static_encoder

    tax = categorize.load_taxonomy()
    seed_set = seeds or categorize.load_seeds(taxonomy=tax)
    keyword = categorize._assign(pl.Series(seed_set.texts), tax)["category"].to_list()
    keyword_index = np.array(
        [seed_set.categories.index(k) if k in seed_set.categories else -1 for k in keyword]
    )
    rows = np.arange(len(seed_set.texts))

    def decide(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        scores = categorize.category_scores(similarity, seed_set)
        best = scores.argmax(axis=1)
        top = scores[rows, best]
        near = (keyword_index >= 0) & (
            scores[rows, np.maximum(keyword_index, 0)] >= top - seed_set.tie_margin
        )
        chosen = best.copy()
        chosen[near] = keyword_index[near]
        return chosen, scores

    fast, fast_scores = decide(load_static_encoder().encode(seed_set.texts))
    full, _ = decide(categorize.seed_vectors(seed_set, categorize.load_encoder()))
    result: dict[str, Any] = {
        "seeds": len(seed_set.texts),
        "full_model": round(float(np.mean(full == seed_set.labels)), 4),
    }
    for candidate in margins:
        redo = ~categorize.cascade_sure(fast_scores, keyword_index, candidate)
        chosen = np.where(redo, full, fast)
        result[f"cascade_margin={candidate}"] = {
            "accuracy": round(float(np.mean(chosen == seed_set.labels)), 4),
            "full_model_share": round(float(np.mean(redo)), 4),
        }
    return result
