"""Format-safe decoding: which line prefixes stay open, when the answer may end, and a real model run."""

from __future__ import annotations

import pytest

from qmd_finetune.decoding import allowed_prefixes, max_lines, may_end, read_state
from qmd_finetune.records import parse_prefixed

EVAL = ["docker compose networking", "sourdough starter feeding /only:lex", "what is a bond yield"]


def test_hyde_only_opens_the_answer_and_kinds_close_at_their_limits() -> None:
    assert allowed_prefixes("q", read_state("")) == ["hyde: ", "lex: ", "vec: "]
    assert allowed_prefixes("q", read_state("lex: a\n")) == ["lex: ", "vec: "]
    three_lex = "hyde: h\nlex: a\nlex: b\nlex: c\n"
    assert allowed_prefixes("q", read_state(three_lex)) == ["vec: "]
    assert allowed_prefixes("q", read_state(three_lex + "vec: x\nvec: y\nvec: z\n")) == []


def test_only_mode_allows_only_its_kind_up_to_three_lines() -> None:
    assert allowed_prefixes("tls cert /only:lex", read_state("")) == ["lex: "]
    assert allowed_prefixes("tls cert /only:hyde", read_state("hyde: h\n")) == []
    assert allowed_prefixes("tls cert /only:vec", read_state("vec: a\nvec: b\n")) == ["vec: "]


def test_the_answer_may_end_once_it_has_lex_and_vec_or_its_only_kind() -> None:
    assert not may_end("q", read_state("hyde: h\nlex: a\n"))
    assert may_end("q", read_state("lex: a\nvec: b\n"))
    assert may_end("q /only:hyde", read_state("hyde: h\n"))


def test_safe_mode_ends_after_seven_lines_or_three_in_only_mode() -> None:
    assert max_lines("docker compose") == 7 and max_lines("docker compose /only:vec") == 3
    assert max_lines("docker compose /only:hyde") == 1


def test_state_counts_kinds_and_remembers_lines_case_insensitively() -> None:
    state = read_state("lex: Docker Net\nvec: how\nlex: doc")
    assert state.counts == {"lex": 1, "vec": 1} and state.lines == 2
    assert "lex: docker net" in state.seen and state.partial == "lex: doc"


def _lines(text: str) -> list[str]:
    assert "<|im_start|>" not in text and "<|endoftext|>" not in text
    return [line for line in text.replace("<|im_end|>", "").split("\n") if line]


@pytest.mark.slow
def test_safe_and_strict_generation_with_the_real_model() -> None:
    import torch

    from qmd_finetune.embedded import model_dir
    from qmd_finetune.training.evaluate import generate
    from qmd_finetune.training.models import inspect_model, load_model, load_tokenizer
    from qmd_finetune.training.prompts import format_for

    torch.set_num_threads(1)
    source = inspect_model(str(model_dir()))
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype=torch.float32, merge=True)
    fmt = format_for("local/smollm2")
    for query, text in zip(EVAL, generate(model, tokenizer, EVAL, fmt, 3, 48, decoding="safe")):
        assert len(_lines(text)) <= max_lines(query), text
    for query, text in zip(EVAL, generate(model, tokenizer, EVAL, fmt, 3, 48, decoding="strict")):
        lines = _lines(text)
        assert lines and all(line.startswith(("hyde: ", "lex: ", "vec: ")) for line in lines), text
        kinds = [line.split(":")[0] for line in lines]
        assert kinds.count("hyde") <= 1 and kinds.count("lex") <= 3 and kinds.count("vec") <= 3
        complete = lines[:-1]  # the last line may be cut by max_new_tokens
        assert len(set(complete)) == len(complete), text
        if "hyde" in kinds:
            assert kinds[0] == "hyde"
        if query.endswith("/only:lex"):
            assert set(kinds) == {"lex"}
        items, unknown = parse_prefixed("\n".join(lines))
        assert items and not unknown
