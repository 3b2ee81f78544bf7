"""Categorize stage: a category and facets per row, each assignment explained.

The taxonomy lives in ``data/taxonomy.yaml`` (categories with ``weight``, ``keywords`` and
``patterns``; ``aliases``; ``non_topical`` labels; ``facets``). Per row:

- ``category``: an existing category is kept (mapped through ``aliases``) unless
  ``recategorize=True`` or it is ``non_topical`` (e.g. ``diverse_addon``, a label of where
  a row came from). Otherwise, with ``method="embedding"`` (the default), by meaning: the
  query's all-MiniLM-L6-v2 embedding is compared with labelled seed queries
  (``data/category_seeds.yaml`` plus the taxonomy's ``examples``); a category's score is the
  mean cosine similarity of its ``neighbors`` nearest seeds and the best score wins. Keywords
  only break near ties: a keyword category within ``tie_margin`` of the best wins. A best
  score under ``min_similarity`` assigns nothing from the query; then the lex/vec lines are
  tried (``use_output``), then the taxonomy's ``default``. ``method="keywords"`` is the
  previous rule (most keyword/pattern hits, ties to the category listed first).
- ``category_reason`` (Utf8): why, e.g. ``nearest technology examples 'vim delete all
  lines' 0.52, ... (score 0.47; next science 0.21) -> technology``, ``keyword 'docker' ->
  technology`` (keywords method), ``kept existing 'arts' (alias of arts_culture)``.
- ``facets`` (List(Utf8)): ``short_query``, ``temporal``, ``named_entity`` (the reward's
  entity rules, vectorized), ``only_mode``, ``personal_notes``.

No row is rejected. Queries are classified once per distinct query, only for rows that
need a category; the seed embeddings are cached on disk keyed by the seed texts and model.

Options (keyword, typed):

- ``taxonomy: str | Path | Taxonomy | None = None`` taxonomy file (default ``data/taxonomy.yaml``).
- ``recategorize: bool = False`` assign every row, ignoring existing categories.
- ``use_output: bool = True`` fall back to the lex/vec lines when the query gives no category.
- ``method: str = "embedding"`` ``embedding`` (the full model), ``cascade`` (static token
  vectors; the full model for rows whose static margin is under the seed file's
  ``cascade_margin`` unless the keyword rule names the same category), ``fast`` (static token vectors only) or ``keywords``.
- ``seeds: str | Path | None = None`` seed file (default ``data/category_seeds.yaml``).
- ``min_similarity: float | None = None`` override the seed file's ``min_similarity``.
- ``query_cache: bool = True`` keep full-model query vectors on disk across runs
  (:mod:`qmd_finetune.curate.vector_cache`); ``False`` encodes every query afresh.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from qmd_finetune.curate.clean import word_pattern
from qmd_finetune.curate.encoder import SentenceEncoder, load_encoder
from qmd_finetune.curate.stage import StageResult, empty_rejected
from qmd_finetune.embedded import cache_root
from qmd_finetune.resources import data_path
from qmd_finetune.reward import KEY_TERM_STOPWORDS

REASON_COLUMN = "category_reason"
FACETS = "facets"
FACET_NAMES = ("short_query", "temporal", "named_entity", "only_mode", "personal_notes")
_ONLY_SUFFIX = r"(?i)\s+/only:(lex|vec|hyde)\s*$"
_ENTITY_STRIP = ".,!?:;()[]\"'"


@dataclass
class Category:
    name: str
    weight: float
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


@dataclass
class Taxonomy:
    categories: list[Category]
    default: str
    aliases: dict[str, str]
    non_topical: set[str]
    facets: dict[str, dict[str, Any]]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def weights(self) -> dict[str, float]:
        return {c.name: c.weight for c in self.categories}

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Read and check a taxonomy file (bad regexes and unknown aliases fail here)."""
    source = Path(path) if path is not None else data_path("taxonomy.yaml")
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    categories = []
    for name, spec in (raw.get("categories") or {}).items():
        spec = spec or {}
        category = Category(
            name=str(name),
            weight=float(spec.get("weight", 0.0)),
            description=str(spec.get("description", "")),
            keywords=[str(k) for k in spec.get("keywords") or []],
            patterns=[str(p) for p in spec.get("patterns") or []],
            examples=[str(e) for e in spec.get("examples") or []],
        )
        for pattern in category.patterns:
            _check_regex(pattern, f"{source}: category {name}")
        categories.append(category)
    if not categories:
        raise ValueError(f"{source}: no categories")
    names = {c.name for c in categories}
    default = str(raw.get("default") or categories[-1].name)
    if default not in names:
        raise ValueError(f"{source}: default {default!r} is not a category")
    aliases = {str(k).lower(): str(v) for k, v in (raw.get("aliases") or {}).items()}
    for alias, target in aliases.items():
        if target not in names:
            raise ValueError(f"{source}: alias {alias!r} points at unknown category {target!r}")
    facets = {str(k): dict(v or {}) for k, v in (raw.get("facets") or {}).items()}
    for name, spec in facets.items():
        if name not in FACET_NAMES:
            raise ValueError(f"{source}: unknown facet {name!r} (known: {', '.join(FACET_NAMES)})")
        for pattern in spec.get("patterns") or []:
            _check_regex(str(pattern), f"{source}: facet {name}")
    non_topical = {str(x).lower() for x in raw.get("non_topical") or []}
    return Taxonomy(categories, default, aliases, non_topical, facets)


def _check_regex(pattern: str, where: str) -> None:
    try:
        re.compile(pattern.replace("(?i)", ""))
        pl.Series([""]).str.contains(pattern)
    except Exception as error:  # polars and Python report regex errors differently
        raise ValueError(f"{where}: bad pattern {pattern!r}: {error}") from None


# ---------------------------------------------------------------- matching


def _hits(text: pl.Expr, category: Category) -> tuple[pl.Expr, pl.Expr]:
    """(hit count, explanation such as "keywords 'a', 'b' + pattern '...'") of one category on ``text``."""
    counts: list[pl.Expr] = []
    labels: list[pl.Expr] = []
    if category.keywords:
        found = text.str.to_lowercase().str.extract_all(word_pattern(category.keywords))
        found = found.list.eval(pl.element().str.strip_chars(" ()[],.;:!?")).list.unique(maintain_order=True)
        n = found.list.len()
        quoted = found.list.head(4).list.eval(pl.lit("'") + pl.element() + pl.lit("'")).list.join(", ")
        counts.append(n)
        labels.append(
            pl.when(n == 1)
            .then(pl.lit("keyword ") + quoted)
            .when(n > 1)
            .then(pl.lit("keywords ") + quoted)
            .otherwise(pl.lit(None, pl.Utf8))
        )
    for pattern in category.patterns:
        hit = text.str.contains(pattern)
        counts.append(hit.cast(pl.UInt32))
        labels.append(pl.when(hit).then(pl.lit(f"pattern '{pattern}'")).otherwise(pl.lit(None, pl.Utf8)))
    if not counts:
        return pl.lit(0, pl.UInt32), pl.lit(None, pl.Utf8)
    return pl.sum_horizontal(counts).cast(pl.UInt32), pl.concat_str(
        labels, separator=" + ", ignore_nulls=True
    )


def _assign(texts: pl.Series, taxonomy: Taxonomy) -> pl.DataFrame:
    """Best category (or null), its hits and what matched, for each distinct text."""
    count_cols, label_cols = [], []
    for i, category in enumerate(taxonomy.categories):
        count, label = _hits(pl.col("t"), category)
        count_cols.append(count.alias(f"c{i}"))
        label_cols.append(label.alias(f"n{i}"))
    scored = texts.rename("t").to_frame().with_columns(count_cols + label_cols)
    counts = scored.select([f"c{i}" for i in range(len(taxonomy.categories))]).to_numpy()
    best = counts.argmax(axis=1)  # first maximum: ties go to the category listed first
    best_count = counts[np.arange(len(best)), best]
    matched = scored.select(
        pl.concat_list([f"n{i}" for i in range(len(taxonomy.categories))]).list.get(
            pl.Series(best), null_on_oob=True
        )
    ).to_series()
    names = pl.Series(taxonomy.names, dtype=pl.Utf8).gather(best)
    has = pl.Series(best_count > 0)
    return pl.DataFrame(
        {
            "t": texts,
            "category": names.zip_with(has, pl.Series([None] * len(best), dtype=pl.Utf8)),
            "matched": matched.zip_with(has, pl.Series([None] * len(best), dtype=pl.Utf8)),
            "hits": best_count.astype(np.int64),
        },
        schema={"t": pl.Utf8, "category": pl.Utf8, "matched": pl.Utf8, "hits": pl.Int64},
    )


METHODS = ("embedding", "cascade", "fast", "keywords")
TIE_MARKER = "breaks a near tie"
Classifier = Callable[[pl.Series], pl.DataFrame]
"""Distinct texts -> frame ``t``, ``category`` (null: none found), ``reason``, ``weak``
(best score under ``min_similarity``: the lex/vec lines decide when they are not weak)."""


def _keyword_classifier(tax: Taxonomy) -> Classifier:
    """The keyword rule as a classifier: most hits win; no hit -> no category."""

    def classify(texts: pl.Series) -> pl.DataFrame:
        assigned = _assign(texts, tax)
        return assigned.select(
            "t",
            "category",
            pl.when(pl.col("category").is_not_null())
            .then(pl.col("matched") + pl.lit(" -> ") + pl.col("category"))
            .otherwise(pl.lit("no keyword or pattern matched"))
            .alias("reason"),
            pl.lit(False).alias("weak"),
        )

    return classify


@dataclass
class Seeds:
    """Labelled seed queries and the settings chosen with them (``data/category_seeds.yaml``)."""

    texts: list[str]
    labels: np.ndarray
    categories: list[str]
    neighbors: int
    tie_margin: float
    min_similarity: float
    cascade_margin: float = 0.04

    def digest(self, model: str) -> str:
        """Names these seed texts under one model: the key of the seed-embedding cache."""
        payload = "\n".join([model, *(f"{c}\t{t}" for c, t in zip(self.labels, self.texts))])
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_seeds(path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> Seeds:
    """Read a seed file and add the taxonomy's ``examples``; unknown categories fail here."""
    tax = taxonomy or load_taxonomy()
    source = Path(path) if path is not None else data_path("category_seeds.yaml")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{source}: cannot read seeds: {error}") from None
    settings = raw.get("settings") or {}
    by_category: dict[str, list[str]] = {c.name: list(c.examples) for c in tax.categories}
    for name, queries in (raw.get("seeds") or {}).items():
        if name not in by_category:
            raise ValueError(
                f"{source}: seed category {name!r} is not in the taxonomy "
                f"(known: {', '.join(tax.names)}); pass seeds= for a custom taxonomy or method='keywords'"
            )
        by_category[str(name)].extend(str(q) for q in queries or [])
    categories = [name for name, queries in by_category.items() if queries]
    if not categories:
        raise ValueError(f"{source}: no seed queries")
    texts: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(categories):
        for query in dict.fromkeys(q.strip() for q in by_category[name] if q.strip()):
            texts.append(query)
            labels.append(index)
    neighbors = int(settings.get("neighbors", 5))
    if neighbors < 1:
        raise ValueError(f"{source}: settings.neighbors must be >= 1")
    return Seeds(
        texts=texts,
        labels=np.asarray(labels, dtype=np.int64),
        categories=categories,
        neighbors=neighbors,
        tie_margin=float(settings.get("tie_margin", 0.0)),
        min_similarity=float(settings.get("min_similarity", 0.0)),
        cascade_margin=float(settings.get("cascade_margin", 0.04)),
    )


_SEED_VECTORS: dict[str, np.ndarray] = {}


def seed_vectors(seeds: Seeds, encoder: SentenceEncoder) -> np.ndarray:
    """Embeddings of the seed texts: computed once, then read from memory or the on-disk cache."""
    key = seeds.digest(encoder.identity)
    if key in _SEED_VECTORS:
        return _SEED_VECTORS[key]
    path = cache_root() / "categorize" / f"seeds-{key}.npy"
    vectors = None
    if path.exists():
        try:
            vectors = np.load(path)
        except (OSError, ValueError):
            vectors = None
        if vectors is not None and vectors.shape != (len(seeds.texts), encoder.dimension):
            vectors = None
    if vectors is None:
        vectors = encoder.encode(seeds.texts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, vectors)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs re-encoding the seeds next time
    _SEED_VECTORS[key] = vectors
    return vectors


def category_scores(similarity: np.ndarray, seeds: Seeds) -> np.ndarray:
    """Per category, the mean similarity of its ``neighbors`` most similar seeds (rows x categories)."""
    scores = np.zeros((similarity.shape[0], len(seeds.categories)), dtype=np.float32)
    for index in range(len(seeds.categories)):
        columns = similarity[:, seeds.labels == index]
        k = min(seeds.neighbors, columns.shape[1])
        scores[:, index] = np.partition(columns, columns.shape[1] - k, axis=1)[:, -k:].mean(axis=1)
    return scores


def _examples(similarity: np.ndarray, seeds: Seeds, category: int, count: int = 3) -> str:
    columns = np.flatnonzero(seeds.labels == category)
    best = columns[np.argsort(-similarity[columns], kind="stable")[:count]]
    return ", ".join(f"'{seeds.texts[j]}' {similarity[j]:.2f}" for j in best)


def margins(scores: np.ndarray) -> np.ndarray:
    """Best minus second-best category score per row (how sure the row is)."""
    if scores.shape[1] < 2:
        return np.full(scores.shape[0], np.inf, dtype=np.float32)
    top2 = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


FAST_MARKER = "static vectors"


def cascade_sure(scores: np.ndarray, keyword_index: np.ndarray, margin: float) -> np.ndarray:
    """Rows the static vectors decide alone: margin at least ``margin``, or the keyword rule
    names the same best category (94% right on the seeds, leave-one-out)."""
    return (margins(scores) >= margin) | (keyword_index == scores.argmax(axis=1))


def _embedding_classifier(
    tax: Taxonomy,
    seeds: Seeds,
    min_similarity: float | None,
    method: str = "embedding",
    query_cache: bool = True,
) -> Classifier:
    """``embedding``: the full model; ``fast``: static token vectors; ``cascade``: fast, then the
    full model for rows :func:`cascade_sure` leaves to it."""
    from qmd_finetune.curate.static_encoder import load_static_encoder
    from qmd_finetune.curate.vector_cache import encode_cached

    encoder = load_encoder()

    def encode(values: list[str]) -> np.ndarray:
        return encode_cached(encoder, values)[0] if query_cache else encoder.encode(values)

    full_seeds = seed_vectors(seeds, encoder) if method != "fast" else None
    static = load_static_encoder() if method != "embedding" else None
    fast_seeds = static.encode(seeds.texts) if static is not None else None
    floor = seeds.min_similarity if min_similarity is None else float(min_similarity)
    index_of = {name: i for i, name in enumerate(seeds.categories)}

    def similarities(values: list[str], keyword_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seed similarities per value and whether they come from the full model."""
        if static is None:
            return encode(values) @ full_seeds.T, np.ones(len(values), dtype=bool)
        similarity = static.encode(values) @ fast_seeds.T
        full = np.zeros(len(values), dtype=bool)
        if full_seeds is not None:
            scores = category_scores(similarity, seeds)
            redo = np.flatnonzero(~cascade_sure(scores, keyword_index, seeds.cascade_margin))
            if len(redo):
                similarity[redo] = encode([values[i] for i in redo]) @ full_seeds.T
                full[redo] = True
        return similarity, full

    def classify(texts: pl.Series, chunk: int = 4096) -> pl.DataFrame:
        values = texts.to_list()
        keyword = _assign(texts, tax)
        keyword_category = keyword["category"].to_list()
        keyword_matched = keyword["matched"].to_list()
        categories: list[str] = []
        reasons: list[str] = []
        weak: list[bool] = []
        for start in range(0, len(values), chunk):
            keyword_index = np.array(
                [
                    index_of.get(k, -1) if k is not None else -1
                    for k in keyword_category[start : start + chunk]
                ],
                dtype=np.int64,
            )
            similarity, full = similarities(values[start : start + chunk], keyword_index)
            scores = category_scores(similarity, seeds)
            order = np.argsort(-scores, axis=1, kind="stable")
            for i in range(similarity.shape[0]):
                row = start + i
                best = int(order[i, 0])
                top = float(scores[i, best])
                chosen = best
                tie = keyword_category[row]
                if (
                    tie in index_of
                    and index_of[tie] != best
                    and float(scores[i, index_of[tie]]) >= top - seeds.tie_margin
                ):
                    chosen = index_of[tie]
                name = seeds.categories[chosen]
                nearest = _examples(similarity[i], seeds, chosen)
                # The floor is on the full model's scale; a static-vector decision was sure enough.
                is_weak = bool(full[i]) and top < floor
                under = f", under min_similarity {floor:.2f}" if is_weak else ""
                via = "" if full[i] else f" ({FAST_MARKER})"
                if chosen != best:
                    reasons.append(
                        f"{keyword_matched[row]} {TIE_MARKER} ({name} {scores[i, chosen]:.2f}, "
                        f"{seeds.categories[best]} {top:.2f}{under}); nearest {name} examples{via} {nearest} -> {name}"
                    )
                else:
                    runner = ""
                    if scores.shape[1] > 1:
                        second = int(order[i, 1])
                        runner = f"; next {seeds.categories[second]} {scores[i, second]:.2f}"
                    reasons.append(
                        f"nearest {name} examples{via} {nearest} (score {top:.2f}{under}{runner}) -> {name}"
                    )
                categories.append(name)
                weak.append(is_weak)
        return pl.DataFrame(
            {"t": texts, "category": categories, "reason": reasons, "weak": weak},
            schema={"t": pl.Utf8, "category": pl.Utf8, "reason": pl.Utf8, "weak": pl.Boolean},
        )

    return classify


def classifier(
    method: str = "embedding",
    taxonomy: Taxonomy | None = None,
    seeds: str | Path | Seeds | None = None,
    min_similarity: float | None = None,
    query_cache: bool = True,
) -> Classifier:
    """The function that categorizes distinct texts by ``method`` (model and seeds loaded here)."""
    tax = taxonomy or load_taxonomy()
    if method == "keywords":
        return _keyword_classifier(tax)
    if method not in METHODS:
        raise ValueError(f"unknown categorize method {method!r} (known: {', '.join(METHODS)})")
    seed_set = seeds if isinstance(seeds, Seeds) else load_seeds(seeds, tax)
    return _embedding_classifier(tax, seed_set, min_similarity, method, query_cache)


def nearest_examples(
    query: str, seeds: str | Path | Seeds | None = None, taxonomy: Taxonomy | None = None, count: int = 5
) -> list[dict[str, Any]]:
    """The seed queries most similar to ``query`` with their categories (for ``--explain``)."""
    seed_set = seeds if isinstance(seeds, Seeds) else load_seeds(seeds, taxonomy)
    encoder = load_encoder()
    similarity = encoder.encode([query])[0] @ seed_vectors(seed_set, encoder).T
    best = np.argsort(-similarity, kind="stable")[:count]
    return [
        {
            "example": seed_set.texts[j],
            "category": seed_set.categories[int(seed_set.labels[j])],
            "similarity": round(float(similarity[j]), 4),
        }
        for j in best
    ]


def entity_expr(base: pl.Expr) -> pl.Expr:
    """True when ``reward.extract_entities(base, rubric="v1")`` is non-empty (rules 1-4, vectorized).

    Rule 5 (a word after an entity) only adds entities once one exists, so it does not
    change whether there is any.
    """
    word = pl.element().str.strip_chars(_ENTITY_STRIP)
    length = word.str.len_chars()
    first = word.str.slice(0, 1)
    rest = word.str.slice(1)
    is_upper = (word == word.str.to_uppercase()) & (word != word.str.to_lowercase())
    first_upper = (first == first.str.to_uppercase()) & (first != first.str.to_lowercase())
    rule1 = is_upper & (length >= 2)
    rule2 = (
        (pl.int_range(pl.len()) > 0)
        & first_upper
        & ~word.str.to_lowercase().is_in(sorted(KEY_TERM_STOPWORDS))
    )
    rule3 = (length >= 2) & word.str.contains(r"[.+\-#@]")
    rule4 = (length > 1) & first_upper & (rest != rest.str.to_lowercase())
    words = base.str.extract_all(r"\S+")
    return words.list.eval((length > 0) & (rule1 | rule2 | rule3 | rule4)).list.any().fill_null(False)


def _facets(queries: pl.Series, taxonomy: Taxonomy) -> pl.DataFrame:
    """Facet flags for each distinct query."""
    specs = taxonomy.facets
    base = pl.col("q").str.replace(_ONLY_SUFFIX, "").str.strip_chars()
    exprs: list[pl.Expr] = []
    if "short_query" in specs:
        max_words = int(specs["short_query"].get("max_words", 2))
        exprs.append((base.str.extract_all(r"\S+").list.len() <= max_words).alias("short_query"))
    for name in ("temporal", "personal_notes"):
        if name in specs:
            spec = specs[name]
            tests = []
            if spec.get("keywords"):
                tests.append(base.str.contains(word_pattern([str(k) for k in spec["keywords"]])))
            tests.extend(base.str.contains(str(p)) for p in spec.get("patterns") or [])
            exprs.append((pl.any_horizontal(tests) if tests else pl.lit(False)).alias(name))
    if "named_entity" in specs:
        exprs.append(entity_expr(base).alias("named_entity"))
    if "only_mode" in specs:
        exprs.append(pl.col("q").str.contains(_ONLY_SUFFIX).alias("only_mode"))
    frame = queries.rename("q").to_frame().with_columns(exprs)
    names = [n for n in FACET_NAMES if n in frame.columns]
    if not names:
        return frame.with_columns(pl.lit([], pl.List(pl.Utf8)).alias(FACETS)).select("q", FACETS)
    joined = pl.concat_str(
        [pl.when(pl.col(n)).then(pl.lit(n)) for n in names], separator=",", ignore_nulls=True
    )
    facets = pl.when(joined == "").then(pl.lit([], pl.List(pl.Utf8))).otherwise(joined.str.split(","))
    return frame.select("q", facets.alias(FACETS))


# ---------------------------------------------------------------- the stage


def run(
    frame: pl.DataFrame,
    *,
    taxonomy: str | Path | Taxonomy | None = None,
    recategorize: bool = False,
    use_output: bool = True,
    method: str = "embedding",
    seeds: str | Path | Seeds | None = None,
    min_similarity: float | None = None,
    query_cache: bool = True,
) -> StageResult:
    """Set ``category``, ``category_reason`` and ``facets`` on every row; rejects nothing."""
    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
    if method not in METHODS:
        raise ValueError(f"unknown categorize method {method!r} (known: {', '.join(METHODS)})")
    columns = [c for c in frame.columns if c not in (REASON_COLUMN, FACETS)]
    data = frame.select(columns)
    if "category" not in data.columns:
        data = data.with_columns(pl.lit(None, pl.Utf8).alias("category"))
        columns.append("category")
    query = data["query"].fill_null("")
    base = query.str.replace(_ONLY_SUFFIX, "").str.strip_chars()
    names = set(tax.names)

    existing = data["category"].str.strip_chars()
    existing_lower = existing.str.to_lowercase()
    usable = existing.is_not_null() & (existing != "") & ~existing_lower.is_in(sorted(tax.non_topical))
    if recategorize:
        usable = pl.Series([False] * data.height)
    alias_target = existing_lower.replace_strict(tax.aliases, default=None, return_dtype=pl.Utf8)
    kept_category = pl.DataFrame({"a": alias_target, "e": existing}).select(pl.coalesce("a", "e")).to_series()
    kept_reason = (
        pl.DataFrame({"e": existing, "a": alias_target})
        .select(
            pl.when(pl.col("a").is_not_null() & (pl.col("a") != pl.col("e")))
            .then(
                pl.lit("kept existing '") + pl.col("e") + pl.lit("' (alias of ") + pl.col("a") + pl.lit(")")
            )
            .when(pl.col("e").is_in(sorted(names)))
            .then(pl.lit("kept existing category"))
            .otherwise(pl.lit("kept existing category (not in the taxonomy)"))
        )
        .to_series()
    )

    # Assign from the query, once per distinct base query of the rows that need a category.
    usable_np = usable.to_numpy()
    need = ~usable_np
    category = pl.Series([None] * data.height, dtype=pl.Utf8)
    reason = pl.Series([None] * data.height, dtype=pl.Utf8)
    from_output = np.zeros(data.height, dtype=bool)
    rows_needing = np.flatnonzero(need)
    if len(rows_needing):
        classify = classifier(method, tax, seeds, min_similarity, query_cache)
        wanted = base.gather(rows_needing)
        found = (
            wanted.rename("t")
            .to_frame()
            .join(classify(wanted.unique()), on="t", how="left", maintain_order="left")
        )
        category = category.scatter(rows_needing, found["category"])
        reason = reason.scatter(rows_needing, found["reason"])
        if use_output:
            weak = np.zeros(data.height, dtype=bool)
            weak[rows_needing] = found["weak"].fill_null(False).to_numpy()
            missing = np.flatnonzero((category.is_null().to_numpy() | weak) & need)
            if len(missing):
                texts = (
                    data["output"]
                    .gather(missing)
                    .list.eval(
                        pl.element()
                        .filter(pl.element().list.first().is_in(["lex", "vec"]))
                        .list.get(1, null_on_oob=True)
                    )
                    .list.join(" ; ")
                    .fill_null("")
                )
                from_texts = (
                    texts.rename("t")
                    .to_frame()
                    .join(classify(texts.unique()), on="t", how="left", maintain_order="left")
                )
                hit = (from_texts["category"].is_not_null() & ~from_texts["weak"]).to_numpy()
                rows = missing[hit]
                if len(rows):
                    hits = from_texts.filter(pl.Series(hit))
                    category = category.scatter(rows, hits["category"])
                    reason = reason.scatter(rows, "from lex/vec lines: " + hits["reason"])
                    from_output[rows] = True
    no_match = category.is_null().to_numpy() & need
    reason = (
        pl.DataFrame({"c": category, "r": reason})
        .select(
            pl.when(pl.col("c").is_null() & pl.col("r").is_not_null())
            .then(pl.col("r") + pl.lit(f" -> {tax.default}"))
            .otherwise(pl.col("r"))
        )
        .to_series()
    )
    category = category.fill_null(tax.default)

    final_category = (
        pl.DataFrame({"u": usable, "k": kept_category, "c": category})
        .select(pl.when(pl.col("u")).then(pl.col("k")).otherwise(pl.col("c")))
        .to_series()
    )
    final_reason = (
        pl.DataFrame({"u": usable, "k": kept_reason, "c": reason})
        .select(pl.when(pl.col("u")).then(pl.col("k")).otherwise(pl.col("c")))
        .to_series()
    )

    # Facets need the only-mode suffix, so they are computed per distinct full query.
    facet_frame = _facets(query.unique(), tax)
    facet_col = (
        query.rename("q").to_frame().join(facet_frame, on="q", how="left", maintain_order="left")[FACETS]
    )

    out = data.with_columns(
        final_category.alias("category"), final_reason.alias(REASON_COLUMN), facet_col.alias(FACETS)
    )
    kept = out.select(*columns, REASON_COLUMN, FACETS)
    alias_used = (
        usable_np & (alias_target.is_not_null() & (alias_target != existing)).fill_null(False).to_numpy()
    )
    counts = {
        "kept_existing": int(usable_np.sum()),
        "alias_mapped": int(alias_used.sum()),
        "assigned_from_query": int((~usable_np & ~from_output & ~no_match).sum()),
        "assigned_from_output": int(from_output.sum()),
        "assigned_default": int(no_match.sum()),
        "keyword_tiebreaks": int(final_reason.str.contains(TIE_MARKER, literal=True).fill_null(False).sum()),
        "by_static_vectors": int(final_reason.str.contains(FAST_MARKER, literal=True).fill_null(False).sum()),
    }
    facet_counts = (
        kept.select(pl.col(FACETS).explode().drop_nulls().value_counts(sort=True)).to_series().to_list()
    )
    for entry in facet_counts:
        counts[f"facet:{entry[FACETS]}"] = int(entry["count"])
    report = {"method": method, **_report(kept, tax)}
    return StageResult(kept=kept, rejected=empty_rejected(kept), counts=counts, report=report)


def _report(kept: pl.DataFrame, tax: Taxonomy, examples: int = 3) -> dict[str, Any]:
    if kept.height == 0:
        return {"categories": {}, "facets": {}}
    by_category = kept.group_by("category").agg(
        pl.len().alias("rows"),
        pl.col("query").head(examples).alias("examples"),
        pl.col(REASON_COLUMN).head(examples).alias("reasons"),
    )
    weights = tax.weights()
    total = kept.height
    categories = {
        row["category"]: {
            "rows": int(row["rows"]),
            "share": round(row["rows"] / total, 4),
            "target_share": weights.get(row["category"]),
            "examples": [{"query": q, "reason": r} for q, r in zip(row["examples"], row["reasons"])],
        }
        for row in by_category.sort("rows", descending=True).iter_rows(named=True)
    }
    facets = kept.select(pl.col(FACETS).explode().drop_nulls().value_counts(sort=True)).to_series().to_list()
    return {
        "categories": categories,
        "facets": {entry[FACETS]: int(entry["count"]) for entry in facets},
        "unknown_categories": sorted(set(categories) - set(tax.names)),
    }


def explain(
    query: str, category: str | None = None, taxonomy: str | Path | Taxonomy | None = None, **options: Any
) -> dict[str, Any]:
    """Category, reason, facets and (embedding method) the nearest seed queries of one query."""
    frame = pl.DataFrame(
        {"query": [query], "output": [[]], "category": [category]},
        schema={"query": pl.Utf8, "output": pl.List(pl.List(pl.Utf8)), "category": pl.Utf8},
    )
    row = run(frame, taxonomy=taxonomy, **options).kept.row(0, named=True)
    explained = {
        "query": query,
        "category": row["category"],
        "reason": row[REASON_COLUMN],
        "facets": row[FACETS],
    }
    if options.get("method", "embedding") != "keywords":
        base = re.sub(_ONLY_SUFFIX.replace("(?i)", ""), "", query, flags=re.IGNORECASE).strip()
        tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
        explained["neighbors"] = nearest_examples(base, options.get("seeds"), tax)
    return explained
