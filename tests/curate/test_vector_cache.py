"""vector_cache: full-model query vectors read back from SQLite across runs, never wrong when the cache is bad."""

from __future__ import annotations

import numpy as np

from qmd_finetune.curate import categorize, vector_cache
from qmd_finetune.curate.encoder import load_encoder
from qmd_finetune.io import records_to_frame

QUERIES = ["sourdough starter feeding", "tmux split pane shortcut", "sourdough starter feeding"]


def test_query_vectors_are_read_back_on_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path))
    encoder = load_encoder()
    first, hits = vector_cache.encode_cached(encoder, QUERIES)
    assert hits == 0 and vector_cache.cache_path(encoder).exists()
    second, hits = vector_cache.encode_cached(encoder, QUERIES)
    assert hits == 2
    assert np.array_equal(first, second)
    assert np.allclose(second, encoder.encode(QUERIES), atol=1e-5)


def test_a_corrupt_cache_file_only_costs_re_encoding(tmp_path, monkeypatch):
    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path))
    encoder = load_encoder()
    path = vector_cache.cache_path(encoder)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database" * 100)
    vectors, hits = vector_cache.encode_cached(encoder, QUERIES)
    assert hits == 0
    assert np.allclose(vectors, encoder.encode(QUERIES), atol=1e-5)


def test_stage_without_query_cache_writes_no_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path))
    frame = records_to_frame([{"query": "tmux split pane shortcut", "output": [["lex", "tmux panes"]]}])
    categorize.run(frame, recategorize=True, query_cache=False)
    assert not vector_cache.cache_path(load_encoder()).exists()
    categorize.run(frame, recategorize=True)
    assert vector_cache.cache_path(load_encoder()).exists()
