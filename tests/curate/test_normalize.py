"""normalize: one spelling for every record; rows in == kept + rejected."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from qmd_finetune.curate import normalize
from qmd_finetune.io import FRAME_SCHEMA, read_records, records_to_frame

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qmd-reference"


def raw_frame(rows: list[tuple[str, list[list[str]]]]) -> pl.DataFrame:
    """A frame straight from (query, items), without io's validation (so bad spellings survive)."""
    n = len(rows)
    return pl.DataFrame(
        {
            "query": [q for q, _ in rows],
            "output": [items for _, items in rows],
            "category": [None] * n,
            "meta": [None] * n,
            "extra": [None] * n,
            "_source": ["mem.jsonl"] * n,
            "_line": list(range(1, n + 1)),
        },
        schema=FRAME_SCHEMA,
    )


def one(query: str, items: list[list[str]], **options) -> tuple[dict, normalize.StageResult]:
    result = normalize.run(raw_frame([(query, items)]), **options)
    assert result.kept.height + result.rejected.height == 1
    return (result.kept.row(0, named=True) if result.kept.height else {}), result


def test_query_whitespace_is_trimmed_and_collapsed():
    row, result = one("  docker   compose\tnetworking ", [["lex", "docker compose"]])
    assert row["query"] == "docker compose networking"
    assert result.counts["fixed_query_whitespace"] == 1


def test_uppercase_kind_is_lowercased_and_counted():
    row, result = one("auth config", [["LEX", "auth settings"], [" Vec ", "how to configure auth"]])
    assert row["output"] == [["lex", "auth settings"], ["vec", "how to configure auth"]]
    assert result.counts["fixed_kind_case"] == 2


def test_repeated_own_prefix_inside_text_is_removed():
    row, result = one("auth config", [["lex", "LEX: auth settings"], ["vec", "vec:how to configure auth"]])
    assert row["output"] == [["lex", "auth settings"], ["vec", "how to configure auth"]]
    assert result.counts["stripped_text_prefix"] == 2


@pytest.mark.parametrize(
    ("query", "expected", "counter"),
    [
        ("ssh key authentication only: lex", "ssh key authentication /only:lex", "modernized_only_mode"),
        ("ssh keys ONLY:Vec", "ssh keys /only:vec", "modernized_only_mode"),
        ("ssh keys /ONLY: Hyde", "ssh keys /only:hyde", "fixed_only_spelling"),
    ],
)
def test_only_mode_spellings_become_slash_only(query, expected, counter):
    row, result = one(query, [["lex", "ssh key"]])
    assert row["query"] == expected
    assert result.counts[counter] == 1


@pytest.mark.parametrize("query", ["ssh keys /only:lex", "the only: way to win", "lex only", "only: lex"])
def test_queries_that_are_not_legacy_only_mode_are_left_alone(query):
    row, result = one(query, [["lex", "ssh key"]])
    assert row["query"] == query
    assert result.counts["modernized_only_mode"] == 0


def test_modernize_only_can_be_turned_off():
    row, _ = one("ssh keys only: lex", [["lex", "ssh key"]], modernize_only=False)
    assert row["query"] == "ssh keys only: lex"


def test_chat_template_artifacts_and_think_blocks_are_stripped():
    row, result = one(
        "auth config",
        [
            ["hyde", "<think>the user wants auth</think> Auth config lives in one file. <|im_end|>"],
            ["lex", "<|im_start|>assistant\nauth settings<|endoftext|>"],
            ["vec", "how to configure auth"],
        ],
    )
    assert row["output"] == [
        ["hyde", "Auth config lives in one file."],
        ["lex", "auth settings"],
        ["vec", "how to configure auth"],
    ]
    assert result.counts["stripped_think_blocks"] == 1
    assert result.counts["stripped_chat_artifacts"] == 2


def test_a_lone_role_word_is_a_real_item_and_kept():
    row, _ = one("linux add user", [["lex", "user"], ["lex", "useradd"]])
    assert row["output"] == [["lex", "user"], ["lex", "useradd"]]


def test_empty_items_are_dropped_and_counted():
    row, result = one(
        "auth config", [["lex", "   "], ["lex", "<think>nothing</think>"], ["vec", "auth setup"]]
    )
    assert row["output"] == [["vec", "auth setup"]]
    assert result.counts["dropped_empty_items"] == 2


def test_hyde_comes_first_and_order_within_a_kind_is_kept():
    items = [["vec", "v1"], ["lex", "l1"], ["hyde", "h1"], ["lex", "l2"], ["vec", "v2"]]
    row, result = one("q", items)
    assert row["output"] == [["hyde", "h1"], ["lex", "l1"], ["lex", "l2"], ["vec", "v1"], ["vec", "v2"]]
    assert result.counts["reordered_hyde_first"] == 1
    row, _ = one("q", items, hyde_first=False)
    assert row["output"] == items


def test_record_with_nothing_usable_is_rejected_with_its_original_output():
    frame = raw_frame([("q", [["lex", " "], ["note", "x"]]), ("  ", [["lex", "a"]]), ("ok", [["lex", "a"]])])
    result = normalize.run(frame)
    assert result.kept["query"].to_list() == ["ok"]
    reasons = dict(zip(result.rejected["_line"].to_list(), result.rejected["_reason"].to_list()))
    assert reasons == {1: normalize.REJECT_NO_ITEMS, 2: normalize.REJECT_EMPTY_QUERY}
    assert result.rejected.filter(pl.col("_line") == 1)["output"].to_list() == [[["lex", " "], ["note", "x"]]]
    assert result.counts["dropped_unknown_kind_items"] == 1


def test_clean_records_pass_unchanged_and_normalize_is_idempotent():
    frame = records_to_frame(
        [
            {
                "query": "auth config",
                "output": [["hyde", "Auth lives in config."], ["lex", "auth"], ["vec", "auth setup"]],
            },
            {"query": "ssh keys only: lex", "output": [["lex", "ssh key"]]},
        ]
    )
    once = normalize.run(frame).kept
    twice = normalize.run(once)
    assert twice.kept.equals(once)
    assert sum(twice.counts.values()) == 0
    assert once.columns == frame.columns


def test_empty_frame():
    result = normalize.run(raw_frame([]))
    assert result.kept.height == 0 and result.rejected.height == 0


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_reference_data_rows_are_conserved_and_legacy_rows_modernized():
    frame = read_records(sorted(REFERENCE.glob("*.jsonl"))).frame
    result = normalize.run(frame)
    assert result.kept.height + result.rejected.height == frame.height
    assert result.counts["modernized_only_mode"] > 0
    assert not result.kept["query"].str.contains(r"\sonly:\s*(lex|vec|hyde)$").any()
    kinds = result.kept["output"].list.eval(pl.element().list.first().str.slice(0, 1)).list.join("")
    assert kinds.str.contains(r"^h*l*v*$").all()


def test_null_query_and_null_output_are_rejected_as_read():
    frame = raw_frame([("auth", [["lex", "auth file"]])])
    frame = pl.concat(
        [
            frame,
            frame.with_columns(pl.lit(None, pl.Utf8).alias("query"), pl.lit(2, pl.Int64).alias("_line")),
            frame.with_columns(
                pl.lit(None, pl.List(pl.List(pl.Utf8))).alias("output"), pl.lit(3, pl.Int64).alias("_line")
            ),
        ]
    )
    result = normalize.run(frame)
    assert result.kept["_line"].to_list() == [1]
    assert result.rejected["_reason"].to_list() == [normalize.REJECT_EMPTY_QUERY, normalize.REJECT_NO_ITEMS]
    assert result.rejected["query"].to_list() == [None, "auth"]
