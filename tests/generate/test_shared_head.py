"""The shared-head decoder: the same logits as the model's own forward pass, the same answers
as the generic cache path, a fallback for other architectures, even batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke

from qmd_finetune.generate import local_llm, shared_head
from qmd_finetune.generate.prompts import load_prompt

QUERIES = ("docker compose networking", "who is Marie Curie", "how do vaccines train the immune system")


def _prepared(eng: local_llm.EmbeddedEngine) -> list:
    prompt = load_prompt()
    return [eng._prepare(local_llm._plain_messages(prompt.messages(q))) for q in QUERIES]


@pytest.mark.slow
def test_logits_match_the_full_forward_pass_with_padding_steps_and_dropped_rows(monkeypatch):
    """Rows of different tail lengths (left padding), two decoding steps (the second one past
    the buffers' first room, so they grow), a row dropped."""
    import torch

    eng = local_llm.engine()
    eng.load()
    model = eng._model
    assert shared_head.supports(model)
    decoder = shared_head.SharedHeadDecoder(model)
    rows = _prepared(eng)
    assert len({len(r.tail) for r in rows}) > 1, "the test needs tails of different lengths"
    head = decoder.head(list(rows[0].head))
    width = max(len(r.tail) for r in rows)
    ids = torch.full((len(rows), width), eng._tokenizer.pad_token_id)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row.tail) :] = torch.tensor(row.tail)
        valid[i, width - len(row.tail) :] = True
    positions = (head.length + valid.long().cumsum(1) - 1).clamp(min=head.length)
    monkeypatch.setattr(shared_head, "INITIAL_ROOM", width)
    state = decoder.rows(head, len(rows), width + 4)
    assert state.keys[0].shape[2] == width
    sequences = [list(r.head) + r.tail for r in rows]

    def reference(seq: list[int]) -> torch.Tensor:
        return model(input_ids=torch.tensor([seq])).logits[0, -1].float()

    with torch.inference_mode():
        logits = state.step(ids, positions, valid)
        for i, seq in enumerate(sequences):
            assert torch.allclose(logits[i], reference(seq), atol=1e-3), i
        # greedy next token, one step for all rows
        token = logits.argmax(-1)
        logits = state.step(token[:, None], positions[:, -1:] + 1)
        for i, seq in enumerate(sequences):
            seq.append(int(token[i]))
            assert torch.allclose(logits[i], reference(seq), atol=1e-3), i
        assert state.keys[0].shape[2] == width + 4  # grew: doubled, capped at the capacity
        # the middle row finishes and leaves the batch
        keep = torch.tensor([0, 2])
        state.select(keep)
        token = logits.argmax(-1)[keep]
        logits = state.step(token[:, None], positions[keep, -1:] + 2)
        for j, i in enumerate(keep.tolist()):
            sequences[i].append(int(token[j]))
            assert torch.allclose(logits[j], reference(sequences[i]), atol=1e-3), i
        with pytest.raises(ValueError, match="holds"):
            state.step(token[:, None].repeat(1, 8), positions[keep, -1:] + 3)


@pytest.mark.slow
def test_answers_equal_the_generic_cache_path():
    eng = local_llm.engine()
    eng.load()
    prompt = load_prompt()
    # and one conversation with no prompt head to share (a lone user turn)
    conversations = [prompt.messages(q) for q in QUERIES] + [
        [{"role": "user", "content": "git rebase vs merge"}]
    ]
    for decoding in ("free", "strict"):
        params = local_llm.GenParams(max_new_tokens=24, decoding=decoding)
        shared = [c.text for c in eng.generate(conversations, params)]
        decoder, heads = eng._decoder, dict(eng._heads)
        try:
            eng._decoder = None
            eng._heads.clear()
            generic = [c.text for c in eng.generate(conversations, params)]
        finally:
            eng._decoder = decoder
            eng._heads.clear()
            eng._heads.update(heads)
        assert shared == generic, decoding
        assert all(shared), decoding


@pytest.mark.slow
def test_a_model_of_another_architecture_uses_the_generic_path(tmp_path: Path):
    """A (tiny, random) Qwen2 model trained elsewhere: not shared-head, still answered."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from qmd_finetune import embedded

    tokenizer = AutoTokenizer.from_pretrained(embedded.model_dir())
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model_dir = tmp_path / "qwen-tiny"
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    queries = tmp_path / "q.txt"
    queries.write_text("git rebase vs merge\n")
    out = tmp_path / "out.jsonl"
    result = invoke(
        ["expand", "--model", f"local/{model_dir}", "--queries", str(queries), "--output", str(out)]
        + ["--max-tokens", "24", "--no-progress", "--no-quality-gate", "--min-score", "0"]
    )
    assert result.exit_code == 0, result.output
    eng = local_llm._ENGINES[str(model_dir.resolve())]
    assert not shared_head.supports(eng._model) and eng._decoder is None
    rejects = out.with_name("out.rejects.jsonl")
    kept = out.read_text().splitlines() if out.exists() else []
    rejected = rejects.read_text().splitlines() if rejects.exists() else []
    assert len(kept) + len(rejected) == 1
    assert all(json.loads(line) for line in kept + rejected)


def test_batches_are_even_and_hold_one_prompt_head():
    def row(head: tuple[int, ...], tail: int) -> local_llm._Prepared:
        return local_llm._Prepared(head, [0] * tail, "q")

    rows = [row((1,), n % 7) for n in range(50)] + [row((2,), 3) for _ in range(5)]
    batches = local_llm._batches(rows, 32)
    assert sorted(len(b) for b in batches) == [5, 25, 25]
    assert sorted(i for b in batches for i in b) == list(range(55))
    for batch in batches:
        assert len({rows[i].head for i in batch}) == 1
        tails = [len(rows[i].tail) for i in batch]
        assert tails == sorted(tails)
    assert [len(b) for b in local_llm._batches(rows[:33], 32)] == [17, 16]
    assert [len(b) for b in local_llm._batches(rows[:8], 32)] == [8]
