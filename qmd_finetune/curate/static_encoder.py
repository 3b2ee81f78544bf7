"""Static token embeddings distilled from all-MiniLM-L6-v2: a query vector without running the transformer.

Each wordpiece of the model's vocabulary is run through the model once, alone, as
``[CLS] token [SEP]``, and the mean of the three output vectors (the model's own pooling)
is its static vector (the model2vec recipe without PCA or weighting: neither helped on
the seeds). A text's vector is the mean of its wordpieces' static vectors, unit length.
Encoding is a tokenizer call and a table lookup, so a vector never depends on which other
texts are encoded with it. The table (30,522 x 384 float32, 47 MB) takes about 35
CPU-seconds to build and is built once per machine, then read from
``$QMD_FINETUNE_CACHE/categorize/static-<model identity>-<method>.npy``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from qmd_finetune.curate.encoder import SentenceEncoder, load_encoder
from qmd_finetune.embedded import cache_root

METHOD = "cls-token-sep-mean-v1"
"""Names how the table is computed; part of the cache key, so a new recipe never reads an old table."""


@dataclass
class StaticEncoder:
    """Wordpiece vectors of one model: ``encode(texts)`` gives unit-length float32 rows."""

    tokenizer: Any
    table: np.ndarray
    identity: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length mean of each text's wordpiece vectors ([CLS]/[SEP] only for an empty text)."""
        if not texts:
            return np.zeros((0, self.table.shape[1]), dtype=np.float32)
        ids = [e.ids[1:-1] or e.ids for e in self.tokenizer.encode_batch(list(texts))]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for row in ids for t in row), dtype=np.int64, count=int(lengths.sum()))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        sums = np.add.reduceat(self.table[flat], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def table_path(encoder: SentenceEncoder) -> Path:
    """Where the static table of ``encoder``'s model is cached."""
    return cache_root() / "categorize" / f"static-{encoder.identity}-{METHOD}.npy"


def build_table(encoder: SentenceEncoder, batch_size: int = 2048) -> np.ndarray:
    """Run every wordpiece through the model alone; mean-pool ``[CLS] token [SEP]`` (vocab x dim)."""
    import torch

    vocab = encoder.tokenizer.get_vocab_size()
    cls, sep = encoder.tokenizer.token_to_id("[CLS]"), encoder.tokenizer.token_to_id("[SEP]")
    table = np.zeros((vocab, encoder.dimension), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, batch_size):
            ids = torch.arange(start, min(start + batch_size, vocab))
            batch = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = encoder.model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            table[start : start + len(ids)] = hidden.mean(dim=1).numpy()
    return table


@lru_cache(maxsize=2)
def load_static_encoder(path: str | None = None) -> StaticEncoder:
    """The static encoder of the MiniLM model (table read from the cache, or built and cached once)."""
    encoder = load_encoder(path)
    target = table_path(encoder)
    table = None
    if target.exists():
        try:
            table = np.load(target)
        except (OSError, ValueError):
            table = None
        if table is not None and table.shape != (encoder.tokenizer.get_vocab_size(), encoder.dimension):
            table = None
    if table is None:
        table = build_table(encoder)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, table)
            os.replace(tmp, target)
        except OSError:
            pass  # a read-only cache only costs rebuilding the table in the next process
    return StaticEncoder(encoder.tokenizer, table, encoder.identity)
