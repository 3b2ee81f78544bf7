"""Record parsing, rendering, legacy shapes and only-mode helpers."""

from __future__ import annotations

import pytest

from qmd_finetune.records import (
    RecordError,
    coerce_record,
    modernize_only,
    only_mode,
    parse_expansion,
    parse_prefixed,
    render,
    with_only,
)


def test_render_puts_hyde_first_then_lex_then_vec_keeping_order_within_kind() -> None:
    items = [("lex", "b1"), ("vec", "v1"), ("hyde", "h"), ("lex", "b2")]
    assert render(items) == "hyde: h\nlex: b1\nlex: b2\nvec: v1"


def test_parse_prefixed_is_lenient_about_case_and_spacing() -> None:
    items, unknown = parse_prefixed("LEX : auth  \n\n Vec: how to auth\nnot a line\nhyde:   \n")
    assert items == [("lex", "auth"), ("vec", "how to auth")]
    assert unknown == ["not a line", "hyde:"]


@pytest.mark.parametrize(
    "text",
    [
        "lex: auth config\nvec: how to configure auth",
        '[["lex", "auth config"], ["vec", "how to configure auth"]]',
        '{"lex": ["auth config"], "vec": "how to configure auth"}',
        '```json\n[["lex", "auth config"], ["vec", "how to configure auth"]]\n```',
        "<think>hmm</think>\nlex: auth config\nvec: how to configure auth<|im_end|>",
        '[{"type": "lex", "query": "auth config"}, {"type": "vec", "query": "how to configure auth"}]',
    ],
)
def test_parse_expansion_accepts_every_answer_shape(text: str) -> None:
    assert parse_expansion(text) == [("lex", "auth config"), ("vec", "how to configure auth")]


def test_parse_expansion_without_items_is_an_error() -> None:
    with pytest.raises(RecordError, match="no lex:/vec:/hyde: items"):
        parse_expansion("Sure! Here are some ideas about auth.")


def test_only_mode_helpers() -> None:
    assert only_mode("auth config /only:LEX") == ("auth config", "lex")
    assert only_mode("auth config/only:lex") == ("auth config/only:lex", None)
    assert with_only("auth /only:vec", "hyde") == "auth /only:hyde"
    assert modernize_only("ssh keys only: lex") == ("ssh keys /only:lex", True)
    assert modernize_only("ssh keys /only:lex") == ("ssh keys /only:lex", False)
    assert modernize_only("the only: way") == ("the only: way", False)


def test_coerce_record_reads_both_legacy_shapes() -> None:
    legacy_text = coerce_record({"input": "q", "output": "lex: a b\nvec: c d e"})
    assert (legacy_text.query, legacy_text.output) == ("q", [("lex", "a b"), ("vec", "c d e")])
    searches = coerce_record({"query": "q", "searches": [{"type": "hyde", "query": "passage"}]})
    assert searches.output == [("hyde", "passage")]


def test_coerce_record_keeps_category_meta_and_extra_fields() -> None:
    record = coerce_record(
        {"query": "q", "output": [["lex", "a"]], "category": "tech", "meta": {"m": 1}, "is_short": True}
    )
    assert record.to_dict() == {
        "query": "q",
        "output": [["lex", "a"]],
        "category": "tech",
        "meta": {"m": 1},
        "is_short": True,
    }


@pytest.mark.parametrize(
    ("obj", "reason", "path"),
    [
        ({"query": "q", "output": [["lex", 3]]}, "item text is not a string", "$.output[0][1]"),
        ({"query": "q", "output": [["foo", "x"]]}, "unknown kind 'foo'", "$.output[0][0]"),
        ({"query": "q", "searches": "lex: a"}, "searches has wrong type (str)", "$.searches"),
        ({"query": "q", "output": [["lex", "a"]], "meta": "x"}, "meta is not an object", "$.meta"),
        ({"query": "q", "output": [["lex", "a"]], "category": 3}, "category is not a string", "$.category"),
    ],
)
def test_coerce_record_errors_name_reason_and_json_path(obj: dict, reason: str, path: str) -> None:
    with pytest.raises(RecordError) as info:
        coerce_record(obj)
    assert (info.value.reason, info.value.path) == (reason, path)
