"""Full-model query embeddings kept on disk across runs (SQLite, one file per model build).

Re-running categorize on the same or overlapping data is common (a pipeline re-run, a
new file next to old ones); a query the full model has embedded before is read back
instead of re-encoded. Float32 encoding does not depend on the batch (to about 1e-5), so
a cached vector gives the category a fresh one would. The file grows by about 1.6 KB per
distinct query; delete it to reclaim space.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qmd_finetune.curate.encoder import SentenceEncoder
from qmd_finetune.embedded import cache_root

_CHUNK = 500


def cache_path(encoder: SentenceEncoder) -> Path:
    """The SQLite file holding ``encoder``'s query vectors."""
    return cache_root() / "categorize" / f"queries-{encoder.identity}.sqlite"


def encode_cached(encoder: SentenceEncoder, texts: Sequence[str]) -> tuple[np.ndarray, int]:
    """Unit vectors of ``texts`` (read from the cache where present, else encoded and stored), and the hit count."""
    out = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
    if not texts:
        return out, 0
    unique = list(dict.fromkeys(texts))
    found: dict[str, bytes] = {}
    connection = None
    try:
        connection = _connect(cache_path(encoder))
        for start in range(0, len(unique), _CHUNK):
            part = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(part))
            rows = connection.execute(f"SELECT text, vector FROM query WHERE text IN ({marks})", part)
            found.update((t, v) for t, v in rows if isinstance(v, bytes) and len(v) == 4 * encoder.dimension)
    except (sqlite3.Error, OSError):
        found = {}  # an unusable cache only costs re-encoding
    hits = len(found)
    missing = [t for t in unique if t not in found]
    if missing:
        vectors = encoder.encode(missing)
        found.update((t, v.tobytes()) for t, v in zip(missing, vectors))
        if connection is not None:
            with contextlib.suppress(sqlite3.Error), connection:  # read-only or full disk: still returned
                connection.executemany(
                    "INSERT OR REPLACE INTO query (text, vector) VALUES (?, ?)",
                    [(t, found[t]) for t in missing],
                )
    if connection is not None:
        connection.close()
    for i, text in enumerate(texts):
        out[i] = np.frombuffer(found[text], dtype=np.float32)
    return out, hits


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS query (text TEXT PRIMARY KEY, vector BLOB NOT NULL)")
    return connection
