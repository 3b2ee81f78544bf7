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
        assert lines and all(line.startswith(("hyde: ", "lex: ", "vec: ")) for line in lines[:-1]), text
        # the last line may be cut by max_new_tokens, even inside its prefix ("l")
        assert any(lines[-1].startswith(p) or p.startswith(lines[-1]) for p in ("hyde: ", "lex: ", "vec: "))
        lines = [line for line in lines if line.startswith(("hyde: ", "lex: ", "vec: "))]
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


@pytest.fixture(scope="module")
def constraint_for():
    from transformers import AutoTokenizer

    from qmd_finetune.decoding import FormatConstraint
    from qmd_finetune.embedded import model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    built = FormatConstraint(tokenizer, [], 0, "strict")

    def run(query: str, text: str):
        import torch

        built.queries = [query]
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        return built(ids, torch.zeros((1, len(built.pieces)))), built

    return run


def test_strict_lex_and_vec_lines_may_not_end_as_an_echo_of_the_query(constraint_for) -> None:
    import torch

    for text in ("lex: auth", "lex: auth token", "hyde: Tokens.\nvec: Auth "):
        scores, c = constraint_for("auth", text)
        assert torch.isinf(scores[0, c.breaks]).all() and torch.isinf(scores[0, c.eos]), text
        assert torch.isfinite(scores[0]).any()  # the line goes on
    scores, c = constraint_for("auth", "lex: auth token refresh flow")  # 10+ characters more: no echo
    assert torch.isfinite(scores[0, c.breaks]).any()  # a plain line break may end it
    scores, c = constraint_for("auth /only:lex", "lex: auth login")  # only mode: echo of "auth"
    assert torch.isinf(scores[0, c.breaks]).all()
    scores, c = constraint_for("auth", "hyde: auth")  # a hyde passage is not checked for echoes
    assert torch.isfinite(scores[0, c.breaks]).any()


def test_strict_a_runaway_line_must_end_at_its_character_limit(constraint_for) -> None:
    import torch

    from qmd_finetune.decoding import LINE_CHARS

    loop = "hyde: " + "cache: { " * (LINE_CHARS["hyde"] // 9 + 1)
    scores, c = constraint_for("redis caching", loop)
    finite = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert finite and set(finite) <= set(c.breaks.tolist())  # no eos: lex and vec still missing
    scores, c = constraint_for("redis caching", "lex: redis cache\nvec: " + "how to cache " * 13)
    finite = set(torch.isfinite(scores[0]).nonzero().flatten().tolist())
    assert c.eos in finite and finite <= set(c.breaks.tolist()) | {c.eos}


def test_strict_a_lex_or_vec_line_may_not_grow_into_an_earlier_one(constraint_for) -> None:
    import torch

    earlier = "hyde: Compose networks connect services.\nlex: docker compose networking\n"
    scores, c = constraint_for("docker compose networking", earlier + "lex: Docker Compose")
    networking = c._by_piece[" networking"]
    assert torch.isinf(scores[0, networking]).all()  # case-insensitive: the copy is not finished
    assert torch.isfinite(scores[0, c._by_piece[" volumes"]]).all()
    assert torch.isfinite(scores[0, c.breaks]).any()  # it may still end short of the earlier line
    scores, c = constraint_for("docker compose networking", earlier + "lex: docker compose net")
    assert torch.isinf(scores[0, c._by_piece["working"]]).all()  # piece by piece, the same
    # another kind is not compared
    scores, c = constraint_for("docker compose networking", earlier + "vec: docker compose")
    assert torch.isfinite(scores[0, networking]).all()
