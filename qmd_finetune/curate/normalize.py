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

import numpy as np
import polars as pl

from qmd_finetune.curate._items import flatten, per_row_sum, rebuild
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
_ANY_PREFIX = r"^\s*(?i:(lex|vec|hyde))\s*:\s*"

# Items matching these need string work; the rest (nearly all) are left alone.
_ODD_SPACE = r"[\t\n\r\f\v\u00a0\u2028\u3000]|  "
_ARTIFACT_MARKS = r"|<\||</?think"


def _suspect(text: pl.Series, strip_artifacts: bool) -> pl.Series:
    """Items that may need a fix: one scan for odd spaces and template marks, cheap edge checks."""
    marks = _ODD_SPACE + (_ARTIFACT_MARKS if strip_artifacts else "")
    return (
        text.str.contains(marks)
        | text.str.starts_with(" ")
        | text.str.ends_with(" ")
        | text.str.contains(r"^(?i:lex|vec|hyde)\s*:")
        | (text == "")
    )


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


def modernize_only_mode(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Rewrite legacy (``q only: lex``) and sloppy (``q /ONLY: Lex``) only-mode suffixes to
    ``q /only:lex`` so the rubric reads them as only mode; returns (frame, rows changed).

    ``curate score`` calls it before scoring, as the pipeline's normalize stage does.
    """
    if frame.height == 0:
        return frame, 0
    _, variant = _modernize_only(pl.col("query"))
    fixed = frame.select(variant.alias("query")).to_series()
    changed = int((fixed != frame.get_column("query")).fill_null(False).sum())
    return (frame.with_columns(fixed) if changed else frame), changed


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

    # ---- query
    original = frame["query"].fill_null("")
    query = original.to_frame().select(normalize_query(pl.col("query"))).to_series()
    counts["fixed_query_whitespace"] = int((query != original).sum())
    if modernize_only:
        # Only queries holding "only" can change; the regexes run on those alone.
        index = np.flatnonzero(query.str.contains("(?i)only").to_numpy())
        legacy, variant = _modernize_only(pl.col("query"))
        fixed = query.gather(index).to_frame().select(legacy.alias("legacy"), variant.alias("variant"))
        before = query.gather(index)
        counts["modernized_only_mode"] = int((fixed["legacy"] != before).sum())
        counts["fixed_only_spelling"] = int((fixed["variant"] != fixed["legacy"]).sum())
        if len(index):
            query = query.clone().scatter(index, fixed["variant"])

    # ---- items, flat: the string work runs only on the items that need it
    flat = flatten(frame["output"])
    kind = flat.kind
    known_exact = kind.is_in(list(KINDS))
    if not known_exact.all():
        lowered = kind.str.strip_chars().str.to_lowercase()
        counts["fixed_kind_case"] = int(((lowered != kind) & lowered.is_in(list(KINDS))).sum())
        kind = lowered
    else:
        counts["fixed_kind_case"] = 0
    text = flat.text
    suspect = _suspect(text, strip_artifacts)
    if suspect.any():
        index = np.flatnonzero(suspect.to_numpy())
        part = pl.DataFrame({"kind": kind.gather(index), "t0": text.gather(index)})
        prefix_kind = pl.col("t0").str.extract(_ANY_PREFIX, 1).str.to_lowercase()
        part = part.with_columns(
            pl.when(prefix_kind == pl.col("kind"))
            .then(pl.col("t0").str.replace(_ANY_PREFIX, ""))
            .otherwise(pl.col("t0"))
            .alias("t1")
        )
        part = part.with_columns(pl.col("t1").alias("t2"), pl.col("t1").alias("t3"))
        if strip_artifacts:
            # Only items holding "<" can hold a think block or a template token.
            marked = np.flatnonzero(part["t1"].str.contains("<", literal=True).to_numpy())
            if len(marked):
                sub = (
                    part[marked]
                    .select("t1")
                    .with_columns(pl.col("t1").str.replace_all(_THINK_BLOCK, " ").alias("t2"))
                )
                # Role lines count only inside a chat transcript (a newline or a template
                # token): a lone "user" may be a real lex line.
                transcript = pl.col("t2").str.contains(r"[\n\r]|<\|")
                stripped = pl.col("t2").str.replace_all(_CHAT_TOKENS, "\n").str.replace_all(_ROLE_LINE, " ")
                sub = sub.with_columns(pl.when(transcript).then(stripped).otherwise(pl.col("t2")).alias("t3"))
                part = part.with_columns(
                    part["t2"].clone().scatter(marked, sub["t2"]),
                    part["t3"].clone().scatter(marked, sub["t3"]),
                )
        part = part.with_columns(pl.col("t3").str.replace_all(_WS, " ").str.strip_chars().alias("t4"))
        counts["stripped_text_prefix"] = int((part["t1"] != part["t0"]).sum())
        counts["stripped_think_blocks"] = int((part["t2"] != part["t1"]).sum())
        counts["stripped_chat_artifacts"] = int((part["t3"] != part["t2"]).sum())
        counts["fixed_item_whitespace"] = int(((part["t4"] != part["t3"]) & (part["t4"] != "")).sum())
        text = text.clone().scatter(index, part["t4"])
    else:
        for name in (
            "stripped_text_prefix",
            "stripped_think_blocks",
            "stripped_chat_artifacts",
            "fixed_item_whitespace",
        ):
            counts[name] = 0

    known = kind.is_in(list(KINDS)).to_numpy()
    nonempty = (text != "").to_numpy()
    counts["dropped_unknown_kind_items"] = int((~known).sum())
    counts["dropped_empty_items"] = int((known & ~nonempty).sum())
    keep = known & nonempty
    # Rows whose items changed are rebuilt from the flat columns; the rest keep their lists.
    changed_item = ~keep | (kind != flat.kind).to_numpy() | (text != flat.text).to_numpy()
    changed_rows = per_row_sum(changed_item, flat.lengths) > 0

    order = kind.replace_strict(KIND_ORDER, default=len(KINDS), return_dtype=pl.Int8).to_numpy()
    backwards = np.zeros(len(order), dtype=bool)
    same_row = flat.row[1:] == flat.row[:-1]
    backwards[1:] = (order[1:] < order[:-1]) & same_row & keep[1:] & keep[:-1]
    reorder_rows = (
        per_row_sum(backwards, flat.lengths) > 0 if hyde_first else np.zeros(len(flat.lengths), bool)
    )
    counts["reordered_hyde_first"] = int(reorder_rows.sum())

    output = frame["output"]
    if changed_rows.any() or reorder_rows.any():
        take = np.flatnonzero(keep)
        lengths = per_row_sum(keep, flat.lengths)
        permutation = np.lexsort((order[take], flat.row[take])) if hyde_first else None
        output = rebuild(kind.gather(take), text.gather(take), lengths, permutation)

    data = frame.with_columns(query.alias("_query_new"), output.alias("_output_new"))
    reason = (
        pl.when(pl.col("_query_new") == "")
        .then(pl.lit(REJECT_EMPTY_QUERY))
        .when(pl.col("_output_new").list.len().fill_null(0) == 0)
        .then(pl.lit(REJECT_NO_ITEMS))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    data = data.with_columns(reason.alias(REASON))
    kept = (
        data.filter(pl.col(REASON).is_null())
        .with_columns(pl.col("_query_new").alias("query"), pl.col("_output_new").alias("output"))
        .select(columns)
    )
    # The ledger keeps the row as it was read: that is what a person must see.
    rejected = data.filter(pl.col(REASON).is_not_null()).select(*columns, REASON)
    report = {"rows_in": frame.height, "fixes": {k: v for k, v in counts.items() if v}}
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=report)
