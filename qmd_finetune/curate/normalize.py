"""Normalize stage: one spelling for every record, so later stages compare like with like.

What it does (each fix is counted in ``StageResult.counts``):

- query: trim and collapse runs of whitespace (``fixed_query_whitespace``);
  the old only-mode spelling ``"q only: lex"`` becomes ``"q /only:lex"``
  (``modernized_only_mode``) and ``"q /ONLY: Lex"`` becomes ``"q /only:lex"``
  (``fixed_only_spelling``);
- items: kinds lower-cased (``fixed_kind_case``), a repeated own prefix inside the text
  removed (``["lex", "LEX: foo"]`` -> ``["lex", "foo"]``, ``stripped_text_prefix``),
  chat-template artifacts (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, bare role
  lines such as ``assistant``) and ``<think>...</think>`` blocks removed
  (``stripped_chat_artifacts``, ``stripped_think_blocks``), whitespace trimmed and collapsed
  (``fixed_item_whitespace``), items left empty or of an unknown kind dropped
  (``dropped_empty_items``, ``dropped_unknown_kind_items``);
- order: hyde first, then lex, then vec, order within a kind kept (``reordered_hyde_first``).

A record whose query is empty, or with no usable item left, is rejected.

Why ``/only:lex`` wins over ``only: lex``: the rubric (reward-spec section 1.3) and the
training prompts recognize only the ``\\s+/only:(lex|vec|hyde)`` suffix; a legacy row left
as is would be scored as a normal query that lacks two kinds, and would teach the model a
spelling nobody asks for. The rewrite keeps the row's meaning, so it is a fix, not a reject.

Options (all keyword, typed):

- ``modernize_only: bool = True`` rewrite the legacy only-mode spelling.
- ``strip_artifacts: bool = True`` remove chat-template tokens, role lines and think blocks.
- ``hyde_first: bool = True`` put items in canonical kind order.

Counts are rows for the query fixes and items for the item fixes.
"""

from __future__ import annotations

import polars as pl

from qmd_finetune.curate.stage import REASON, StageResult
from qmd_finetune.records import KIND_ORDER, KINDS

REJECT_EMPTY_QUERY = "empty query after normalize"
REJECT_NO_ITEMS = "no usable items after normalize"

_WS = r"\s+"
_LEGACY_ONLY = r"(?i)\s+only:\s*{kind}\s*$"
_ONLY_VARIANT = r"(?i)\s*/\s*only\s*:\s*{kind}\s*$"
_CHAT_TOKENS = r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id)\|>"
_ROLE_LINE = r"(?m)^\s*(?:system|user|assistant)\s*$"
_THINK_BLOCK = r"(?s)<think>.*?</think>|<think>.*$|</think>"
_OWN_PREFIX = r"(?i)^\s*{kind}\s*:\s*"

_ROW = "_nrow"
_POS = "_npos"


def normalize_query(query: pl.Expr) -> pl.Expr:
    """Trimmed query with single spaces (the exact-dedup key adds case folding on top)."""
    return query.str.replace_all(_WS, " ").str.strip_chars()


def _modernize_only(query: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(query with the legacy suffix rewritten, query with a sloppy /only: suffix fixed)."""
    legacy = query
    for kind in KINDS:
        legacy = legacy.str.replace(_LEGACY_ONLY.format(kind=kind), f" /only:{kind}")
    variant = legacy
    for kind in KINDS:
        variant = variant.str.replace(_ONLY_VARIANT.format(kind=kind), f" /only:{kind}")
    return legacy, variant


def run(
    frame: pl.DataFrame,
    *,
    modernize_only: bool = True,
    strip_artifacts: bool = True,
    hyde_first: bool = True,
) -> StageResult:
    """Normalize queries and items; reject rows with an empty query or no usable item."""
    columns = frame.columns
    counts: dict[str, int] = {}
    data = frame.with_row_index(_ROW)

    # ---- query
    query = normalize_query(pl.col("query").fill_null(""))
    data = data.with_columns(query.alias("_q0"))
    counts["fixed_query_whitespace"] = int((data["_q0"] != frame["query"].fill_null("")).sum())
    if modernize_only:
        legacy, variant = _modernize_only(pl.col("_q0"))
        data = data.with_columns(legacy.alias("_q1")).with_columns(variant.alias("_q2"))
        counts["modernized_only_mode"] = int((data["_q1"] != data["_q0"]).sum())
        counts["fixed_only_spelling"] = int((data["_q2"] != data["_q1"]).sum())
        data = data.with_columns(pl.col("_q2").alias("query")).drop("_q0", "_q1", "_q2")
    else:
        data = data.with_columns(pl.col("_q0").alias("query")).drop("_q0")

    # ---- items: one row per item, fixed with vectorized string expressions, then regrouped
    items = (
        data.select(_ROW, "output")
        .explode("output")
        .with_columns(pl.int_range(pl.len()).over(_ROW).alias(_POS))
        .filter(pl.col("output").is_not_null())
        .select(
            _ROW,
            _POS,
            pl.col("output").list.get(0, null_on_oob=True).alias("_kind0"),
            pl.col("output").list.get(1, null_on_oob=True).alias("_text0"),
        )
    )
    kind = pl.col("_kind0").fill_null("").str.strip_chars().str.to_lowercase()
    items = items.with_columns(kind.alias("kind"))
    counts["fixed_kind_case"] = int((items["kind"] != items["_kind0"].fill_null("")).sum())

    text = pl.col("_text0").fill_null("")
    own_prefix = pl.lit(None, pl.Utf8)
    for k in KINDS:
        own_prefix = (
            pl.when(pl.col("kind") == k)
            .then(text.str.replace(_OWN_PREFIX.format(kind=k), ""))
            .otherwise(own_prefix)
        )
    items = items.with_columns(pl.coalesce(own_prefix, text).alias("_text1"))
    counts["stripped_text_prefix"] = int((items["_text1"] != items["_text0"].fill_null("")).sum())

    if strip_artifacts:
        items = items.with_columns(pl.col("_text1").str.replace_all(_THINK_BLOCK, " ").alias("_text2"))
        counts["stripped_think_blocks"] = int((items["_text2"] != items["_text1"]).sum())
        items = items.with_columns(
            pl.col("_text2")
            .str.replace_all(_CHAT_TOKENS, "\n")
            .str.replace_all(_ROLE_LINE, " ")
            .alias("_text3")
        )
        counts["stripped_chat_artifacts"] = int((items["_text3"] != items["_text2"]).sum())
    else:
        items = items.with_columns(pl.col("_text1").alias("_text3"))

    items = items.with_columns(pl.col("_text3").str.replace_all(_WS, " ").str.strip_chars().alias("text"))
    changed_ws = (items["text"] != items["_text3"]) & (items["text"].str.len_chars() > 0)
    counts["fixed_item_whitespace"] = int(changed_ws.sum())

    known = pl.col("kind").is_in(list(KINDS))
    counts["dropped_unknown_kind_items"] = int(items.select((~known).sum()).item())
    counts["dropped_empty_items"] = int(items.select((known & (pl.col("text") == "")).sum()).item())
    items = items.filter(known & (pl.col("text") != ""))

    if hyde_first:
        order = pl.col("kind").replace_strict(KIND_ORDER, default=len(KINDS), return_dtype=pl.Int32)
        items = items.with_columns(order.alias("_order"))
        out_of_order = items.group_by(_ROW).agg((pl.col("_order").diff() < 0).any().alias("_bad"))
        counts["reordered_hyde_first"] = int(out_of_order["_bad"].sum())
        items = items.sort(_ROW, "_order", _POS)
    else:
        items = items.sort(_ROW, _POS)
    grouped = items.group_by(_ROW, maintain_order=True).agg(pl.concat_list("kind", "text").alias("output"))

    data = data.rename({"output": "_output_in"}).join(grouped, on=_ROW, how="left", maintain_order="left")
    reason = (
        pl.when(pl.col("query") == "")
        .then(pl.lit(REJECT_EMPTY_QUERY))
        .when(pl.col("output").is_null() | (pl.col("output").list.len() == 0))
        .then(pl.lit(REJECT_NO_ITEMS))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    data = data.with_columns(reason.alias(REASON))
    kept = data.filter(pl.col(REASON).is_null()).select(columns)
    # The ledger keeps what the row held before normalize: that is what a person must see.
    rejected = (
        data.filter(pl.col(REASON).is_not_null())
        .with_columns(pl.col("_output_in").alias("output"))
        .select(*columns, REASON)
    )
    report = {"rows_in": frame.height, "fixes": {k: v for k, v in counts.items() if v}}
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=report)
