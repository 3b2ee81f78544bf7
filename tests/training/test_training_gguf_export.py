"""`train export --gguf`: a GGUF written with the gguf package that transformers reloads and
that answers exactly as the merged model does."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.training.cli import app

pytestmark = pytest.mark.slow
QUERIES = ["docker compose networking", "who is Marie Curie", "sourdough starter feeding"]


def _greedy(model, tokenizer, query: str) -> str:
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :])


def test_gguf_reloads_and_answers_like_the_merged_model(trained: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = tmp_path / "export"
    args = ["export", "--model", str(trained), "--output", str(out), "--gguf", "--gguf-type", "f32"]
    result = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "model.gguf").is_file() and "FROM ./model.gguf" in (out / "Modelfile").read_text()
    assert "gguf (f32)" in result.output and "its merged model" in " ".join(result.output.split())

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    alone = tmp_path / "gguf-only"  # nothing but the GGUF: tokenizer and template come from it
    alone.mkdir()
    (alone / "model.gguf").symlink_to(out / "model.gguf")
    reloaded = AutoModelForCausalLM.from_pretrained(alone, gguf_file="model.gguf", dtype=torch.float32)
    gguf_tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file="model.gguf")
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    assert gguf_tokenizer.eos_token == tokenizer.eos_token
    for query in QUERIES:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": query}], tokenize=False)
        assert gguf_tokenizer(prompt)["input_ids"] == tokenizer(prompt)["input_ids"]
        assert _greedy(reloaded, gguf_tokenizer, query) == _greedy(merged, tokenizer, query)


def test_gguf_type_is_checked_before_any_model_loads(trained: Path, tmp_path: Path) -> None:
    args = ["export", "--model", str(trained), "--output", str(tmp_path / "x"), "--gguf", "--gguf-type", "q4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--gguf-type must be one of f32, f16, q8_0" in result.output
    assert not (tmp_path / "x").exists()


def test_q8_0_gguf_is_a_quarter_of_f32_and_reloads(tmp_path: Path) -> None:
    import gguf

    from qmd_finetune.embedded import model_dir
    from qmd_finetune.training.gguf_export import write_gguf

    path = write_gguf(model_dir(), tmp_path / "m.gguf", "q8_0")
    reader = gguf.GGUFReader(str(path))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert "tokenizer.chat_template" in reader.fields and "tokenizer.ggml.merges" in reader.fields
