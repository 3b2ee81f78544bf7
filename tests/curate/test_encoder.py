"""encoder: the packaged all-MiniLM-L6-v2, loaded once, equal to its sentence-transformers recipe."""

from __future__ import annotations

import numpy as np

from qmd_finetune.curate.encoder import load_encoder, model_path

TEXTS = [
    "tmux split pane shortcut",
    "UFC fighter rankings",
    "how do I feed a sourdough starter every day",
    "",
]


def test_encoder_is_loaded_once_per_process():
    assert load_encoder() is load_encoder()


def test_encoder_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_path()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    vectors = load_encoder().encode(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(vectors, reference, atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_text_gets_the_same_vector_whatever_its_batch():
    encoder = load_encoder()
    alone = encoder.encode(TEXTS[:1])
    in_batch = encoder.encode([TEXTS[2], TEXTS[0], TEXTS[1]], batch_size=2)
    assert np.allclose(alone[0], in_batch[1], atol=1e-5)


def test_no_texts_give_an_empty_matrix():
    assert load_encoder().encode([]).shape == (0, 384)
