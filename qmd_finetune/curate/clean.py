"""Clean stage: detections as data (``data/clean_rules.yaml``), each a flag with a reason.

Rules (name: what fires it; the fix, where one exists):

- ``everyday_sense``: the query uses a technical term in a technical context ("yarn
  workspaces") while the outputs read it in its everyday sense ("wool", "knitting").
  Terms, their inflections, technical-context and everyday words are listed in the YAML and
  matched on word boundaries, so "python decorators" never matches "decor" and "change"
  never matches "hang". No fix.
- ``boilerplate``: a hyde or vec text whose template signature (its words minus its own
  query's words) is shared by at least ``boilerplate_min_queries`` distinct queries. Found
  by frequency, not by a phrase list. Fix: drop the item.
- ``lex_filler``: every lex line carries a filler word ("overview", "tutorial" ...) that the
  query does not contain. Fix: remove those words (a line that would become empty or an
  echo of the query is left as it was).
- ``echo``: a lex/vec line echoes the query (``reward.echoes``). Fix: drop the item.
- ``missing_kinds``: normal mode without one of ``required_kinds`` (lex, vec).
- ``only_mode_missing_kind``: ``/only:lex`` record without a lex item (the reward's hard
  failure); rejected by default.
- ``only_mode_other_kinds``: ``/only:lex`` record that also holds vec/hyde. Fix: drop them.
- ``hyde_length``: first hyde outside ``hyde_min_chars``..``hyde_max_chars``.

Fixes never remove the last item of a kind. Actions are ``flag | fix | reject | off``;
``fix`` applies only with ``fix=True`` (otherwise the rule flags). Flags go to the ``flags``
column (List(Utf8), e.g. ``["boilerplate:hyde", "echo:lex", "everyday_sense:yarn"]``);
rejected rows get the rule's ``reason``.

Options (keyword, typed):

- ``rules: str | Path | CleanRules | None = None`` rules file (default ``data/clean_rules.yaml``).
- ``fix: bool = False`` apply the fixes of rules whose action is ``fix``.
- ``actions: dict[str, str] | None = None`` per-rule action overrides, e.g. ``{"boilerplate": "reject"}``.
- ``boilerplate_min_queries: int | None = None`` override the YAML setting (default 10).
- ``hyde_min_chars: int | None = None``, ``hyde_max_chars: int | None = None`` override 50/200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from qmd_finetune.curate.stage import REASON, StageResult
from qmd_finetune.resources import data_path

ACTIONS = ("flag", "fix", "reject", "off")
RULE_NAMES = (
    "only_mode_missing_kind",
    "everyday_sense",
    "boilerplate",
    "lex_filler",
    "echo",
    "missing_kinds",
    "only_mode_other_kinds",
    "hyde_length",
)
FIXABLE = frozenset({"boilerplate", "lex_filler", "echo", "only_mode_other_kinds"})
REJECT_NOTHING_LEFT = "no items left after clean fixes"
FLAGS = "flags"

_ONLY_SUFFIX = r"(?i)\s+/only:(lex|vec|hyde)\s*$"
_NEVER = r"[^\s\S]"  # matches nothing (the regex engine has no lookaround)
_ROW = "_crow"
_POS = "_cpos"


# ---------------------------------------------------------------- word-boundary patterns


def word_pattern(words: list[str] | tuple[str, ...]) -> str:
    """One case-insensitive regex matching any of ``words`` as whole words or phrases.

    ``\\b`` is used on a side only when the word starts/ends with a word character, so
    ``c++`` and ``next.js`` work; longer alternatives come first.
    """
    parts = []
    for word in sorted({w.strip().lower() for w in words if w and w.strip()}, key=len, reverse=True):
        escaped = re.escape(word).replace(r"\ ", r"\s+")
        left = r"\b" if (word[0].isalnum() or word[0] == "_") else r"(?:^|[\s(\[])"
        right = r"\b" if (word[-1].isalnum() or word[-1] == "_") else r"(?:$|[\s)\],.;:!?])"
        parts.append(f"{left}{escaped}{right}")
    if not parts:
        return _NEVER
    return "(?i)(?:" + "|".join(parts) + ")"


def _pattern(words: list[str]) -> str:
    return word_pattern(words)


# ---------------------------------------------------------------- rules file


@dataclass
class Rule:
    name: str
    action: str
    reason: str


@dataclass
class SenseTerm:
    term: str
    forms: list[str]
    tech: list[str]
    everyday: list[str]
    exceptions: list[str] = field(default_factory=list)


@dataclass
class CleanRules:
    rules: dict[str, Rule]
    settings: dict[str, Any]
    tech_context: list[str]
    terms: list[SenseTerm]


def load_rules(path: str | Path | None = None) -> CleanRules:
    """Read and check a rules file; a typo fails here, before any data is touched."""
    source = Path(path) if path is not None else data_path("clean_rules.yaml")
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    rules: dict[str, Rule] = {}
    for name, spec in (raw.get("rules") or {}).items():
        if name not in RULE_NAMES:
            raise ValueError(f"{source}: unknown clean rule {name!r} (known: {', '.join(RULE_NAMES)})")
        action = str((spec or {}).get("action", "flag"))
        _check_action(name, action, str(source))
        rules[name] = Rule(name, action, str((spec or {}).get("reason", name.replace("_", " "))))
    for name in RULE_NAMES:
        rules.setdefault(name, Rule(name, "flag", name.replace("_", " ")))
    settings = {
        "boilerplate_kinds": ["hyde", "vec"],
        "boilerplate_min_queries": 10,
        "boilerplate_min_words": 1,
        "hyde_min_chars": 50,
        "hyde_max_chars": 200,
        "required_kinds": ["lex", "vec"],
        "filler_words": [],
    }
    settings.update(raw.get("settings") or {})
    terms = []
    for entry in raw.get("terms") or []:
        if not entry.get("term") or not entry.get("everyday"):
            raise ValueError(f"{source}: a term needs `term` and `everyday`: {entry!r}")
        terms.append(
            SenseTerm(
                term=str(entry["term"]),
                forms=[str(f) for f in entry.get("forms") or [entry["term"]]],
                tech=[str(w) for w in entry.get("tech") or []],
                everyday=[str(w) for w in entry["everyday"]],
                exceptions=[str(w) for w in entry.get("except") or []],
            )
        )
    return CleanRules(rules, settings, [str(w) for w in raw.get("tech_context") or []], terms)


def _check_action(name: str, action: str, where: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"{where}: rule {name!r}: action must be one of {ACTIONS}, not {action!r}")
    if action == "fix" and name not in FIXABLE:
        raise ValueError(f"{where}: rule {name!r} has no fix; use flag or reject")


# ---------------------------------------------------------------- the stage


def _tokens(text: pl.Expr) -> pl.Expr:
    return (
        text.str.replace_all(r"[^\w\s]", " ")
        .str.split(" ")
        .list.eval(pl.element().filter(pl.element() != ""))
    )


def run(
    frame: pl.DataFrame,
    *,
    rules: str | Path | CleanRules | None = None,
    fix: bool = False,
    actions: dict[str, str] | None = None,
    boilerplate_min_queries: int | None = None,
    hyde_min_chars: int | None = None,
    hyde_max_chars: int | None = None,
) -> StageResult:
    """Flag, fix or reject rows by the rules; see the module docstring."""
    config = rules if isinstance(rules, CleanRules) else load_rules(rules)
    settings = dict(config.settings)
    for key, value in (
        ("boilerplate_min_queries", boilerplate_min_queries),
        ("hyde_min_chars", hyde_min_chars),
        ("hyde_max_chars", hyde_max_chars),
    ):
        if value is not None:
            settings[key] = value
    act = {name: rule.action for name, rule in config.rules.items()}
    for name, action in (actions or {}).items():
        if name not in RULE_NAMES:
            raise ValueError(f"unknown clean rule {name!r} (known: {', '.join(RULE_NAMES)})")
        _check_action(name, action, "actions")
        act[name] = action
    effective = {name: ("flag" if a == "fix" and not fix else a) for name, a in act.items()}
    fixing = {name for name, a in effective.items() if a == "fix"}

    columns = [c for c in frame.columns if c != FLAGS]
    data = frame.select(columns).with_row_index(_ROW)
    query = pl.col("query").fill_null("")
    data = data.with_columns(
        query.str.extract(_ONLY_SUFFIX, 1).str.to_lowercase().alias("_only"),
        query.str.replace(_ONLY_SUFFIX, "").str.strip_chars().str.to_lowercase().alias("_base"),
    )

    items = _items(data)
    items = _detect_items(items, settings, effective)
    items, fix_counts = _apply_item_fixes(items, fixing, effective, settings)
    rows = _row_facts(data, items, settings)
    rows = _everyday_sense(rows, items, config, effective)
    rows = _flags_and_reasons(rows, config, effective, settings)

    # New outputs for the rows a fix changed; the rest keep their output untouched.
    changed = items.filter(pl.col("_changed").any().over(_ROW))
    rebuilt = (
        changed.filter(~pl.col("_drop"))
        .sort(_ROW, _POS)
        .group_by(_ROW, maintain_order=True)
        .agg(pl.concat_list("kind", "text").alias("_new_output"))
    )
    changed_rows = changed.select(_ROW).unique()
    rows = rows.join(rebuilt, on=_ROW, how="left").join(
        changed_rows.with_columns(pl.lit(True).alias("_was_changed")), on=_ROW, how="left"
    )
    nothing_left = pl.col("_was_changed").fill_null(False) & pl.col("_new_output").is_null()
    rows = rows.with_columns(
        pl.when(pl.col(REASON).is_null() & nothing_left)
        .then(pl.lit(REJECT_NOTHING_LEFT))
        .otherwise(pl.col(REASON))
        .alias(REASON)
    )
    # Fixes apply to kept rows only: the ledger keeps what a rejected row held.
    rows = rows.with_columns(
        pl.when(pl.col(REASON).is_null() & pl.col("_new_output").is_not_null())
        .then(pl.col("_new_output"))
        .otherwise(pl.col("output"))
        .alias("output")
    )
    kept = rows.filter(pl.col(REASON).is_null()).sort(_ROW).select(*columns, FLAGS)
    rejected = rows.filter(pl.col(REASON).is_not_null()).sort(_ROW).select(*columns, REASON)

    counts: dict[str, int] = {}
    flag_counts = kept.select(
        pl.col(FLAGS).explode().drop_nulls().str.extract(r"^([a-z_]+)", 1).value_counts()
    )
    for entry in flag_counts.to_series().to_list():
        counts[f"flagged:{entry[FLAGS]}"] = int(entry["count"])
    counts["flagged_rows"] = int(kept.select((pl.col(FLAGS).list.len() > 0).sum()).item())
    for name, n in fix_counts.items():
        counts[f"fixed:{name}"] = n
    report = {
        "rows_in": frame.height,
        "actions": effective,
        "flags": _flag_breakdown(kept),
        "boilerplate_signatures": _top_signatures(items, settings),
        "everyday_sense_examples": _sense_examples(rows),
    }
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=report)


def _items(data: pl.DataFrame) -> pl.DataFrame:
    return (
        data.select(_ROW, "_only", "_base", "output")
        .explode("output")
        .with_columns(pl.int_range(pl.len()).over(_ROW).alias(_POS))
        .filter(pl.col("output").is_not_null())
        .with_columns(
            pl.col("output").list.get(0, null_on_oob=True).fill_null("").alias("kind"),
            pl.col("output").list.get(1, null_on_oob=True).fill_null("").alias("text"),
        )
        .drop("output")
    )


def _detect_items(items: pl.DataFrame, settings: dict[str, Any], effective: dict[str, str]) -> pl.DataFrame:
    text_l = pl.col("text").str.to_lowercase().str.strip_chars()
    base = pl.col("_base")
    echo = (pl.col("kind").is_in(["lex", "vec"])) & (
        (text_l == base)
        | (text_l.str.contains(base, literal=True) & (text_l.str.len_chars() < base.str.len_chars() + 10))
    )
    items = items.with_columns(echo.alias("_echo"))

    if effective["boilerplate"] != "off":
        kinds = list(settings["boilerplate_kinds"])
        candidates = items.filter(pl.col("kind").is_in(kinds))
        signature = (
            _tokens(pl.col("text").str.to_lowercase())
            .list.set_difference(_tokens(base))
            .list.sort()
            .list.join(" ")
        )
        candidates = candidates.select(_ROW, _POS, "kind", "_base", signature.alias("_sig"))
        sig_counts = candidates.group_by("kind", "_sig").agg(pl.col("_base").n_unique().alias("_sig_queries"))
        min_words = int(settings["boilerplate_min_words"])
        sig_counts = sig_counts.filter(
            (pl.col("_sig_queries") >= int(settings["boilerplate_min_queries"]))
            & (pl.col("_sig").str.count_matches(" ") + 1 >= min_words)
            & (pl.col("_sig") != "")
        )
        marked = candidates.join(sig_counts, on=["kind", "_sig"], how="inner").select(
            _ROW, _POS, "_sig", "_sig_queries"
        )
        items = items.join(marked, on=[_ROW, _POS], how="left", maintain_order="left")
    else:
        items = items.with_columns(
            pl.lit(None, pl.Utf8).alias("_sig"), pl.lit(None, pl.UInt32).alias("_sig_queries")
        )
    items = items.with_columns(pl.col("_sig_queries").is_not_null().alias("_boiler"))

    fillers = list(settings["filler_words"])
    found = (
        pl.when(pl.col("kind") == "lex")
        .then(pl.col("text").str.to_lowercase().str.extract_all(_pattern(fillers)))
        .otherwise(pl.lit(None, pl.List(pl.Utf8)))
    )
    items = items.with_columns(found.alias("_fill"))
    items = items.with_columns(
        pl.when(pl.col("_fill").list.len() > 0)
        .then(pl.col("_fill").list.eval(pl.element().str.strip_chars()).list.set_difference(_tokens(base)))
        .otherwise(pl.col("_fill"))
        .alias("_fill")
    )
    has_filler = pl.col("_fill").list.len().fill_null(0) > 0
    lex = pl.col("kind") == "lex"
    padded = (has_filler | ~lex).all().over(_ROW) & lex.any().over(_ROW)
    only = pl.col("_only")
    return items.with_columns(
        (padded & lex).alias("_padded"),
        (only.is_not_null() & (pl.col("kind") != only)).fill_null(False).alias("_other_kind"),
    )


def _apply_item_fixes(
    items: pl.DataFrame, fixing: set[str], effective: dict[str, str], settings: dict[str, Any]
) -> tuple[pl.DataFrame, dict[str, int]]:
    counts: dict[str, int] = {}
    false = pl.lit(False)
    echo_drop = pl.col("_echo") if "echo" in fixing else false
    boiler_drop = pl.col("_boiler") if "boilerplate" in fixing else false
    other_drop = pl.col("_other_kind") if "only_mode_other_kinds" in fixing else false
    wanted = echo_drop | boiler_drop
    items = items.with_columns(wanted.alias("_want_drop"), other_drop.alias("_other_drop"))
    # Never empty a kind: a drop is undone when nothing of that kind would survive.
    survivors = (~pl.col("_want_drop")).sum().over(_ROW, "kind")
    items = items.with_columns(
        ((pl.col("_want_drop") & (survivors > 0)) | pl.col("_other_drop")).alias("_drop"),
    )
    counts_frame = items.filter(pl.col("_drop"))
    if "echo" in fixing:
        counts["echo"] = counts_frame.filter(pl.col("_echo"))[_ROW].n_unique()
    if "boilerplate" in fixing:
        counts["boilerplate"] = counts_frame.filter(pl.col("_boiler"))[_ROW].n_unique()
    if "only_mode_other_kinds" in fixing:
        counts["only_mode_other_kinds"] = counts_frame.filter(pl.col("_other_kind"))[_ROW].n_unique()
    # A dropped echo/boilerplate item no longer counts toward its flag.
    items = items.with_columns(
        (pl.col("_echo") & ~pl.col("_drop")).alias("_echo"),
        (pl.col("_boiler") & ~pl.col("_drop")).alias("_boiler"),
    )

    new_text = pl.col("text")
    if "lex_filler" in fixing:
        targets = items.filter(pl.col("_padded") & ~pl.col("_drop")).select(
            _ROW, _POS, "text", "_fill", "_base"
        )
        fixed = _remove_fillers(targets)
        items = items.join(fixed, on=[_ROW, _POS], how="left", maintain_order="left")
        new_text = pl.coalesce(pl.col("_fixed_text"), pl.col("text"))
        changed_rows = fixed.filter(pl.col("_fixed_text").is_not_null())[_ROW].n_unique()
        counts["lex_filler"] = changed_rows
        # Once any lex line of the row lost its filler the row is no longer padded.
        items = items.with_columns(
            (pl.col("_padded") & ~pl.col("_fixed_text").is_not_null().any().over(_ROW)).alias("_padded")
        )
    items = items.with_columns(new_text.alias("_text_after"))
    items = items.with_columns(
        (pl.col("_drop") | (pl.col("_text_after") != pl.col("text"))).alias("_changed"),
        pl.col("_text_after").alias("text"),
    )
    return items, counts


def _remove_fillers(targets: pl.DataFrame) -> pl.DataFrame:
    """New text for filler-padded lex lines; null where the removal would empty or echo a line."""
    schema = {_ROW: pl.UInt32, _POS: pl.Int64, "_fixed_text": pl.Utf8}
    if targets.height == 0:
        return pl.DataFrame(schema=schema)
    unique = targets.select("text", "_fill", "_base").unique(subset=["text", "_base"])
    results = []
    for text, fill, base in unique.iter_rows():
        drop = set(fill or [])
        words = [w for w in text.split() if w.lower().strip(".,;:!?()") not in drop]
        new = " ".join(words)
        lowered = new.lower()
        bad = not new or lowered == base or (base in lowered and len(lowered) < len(base) + 10)
        results.append(None if bad or new == text else new)
    mapping = unique.select("text", "_base").with_columns(pl.Series("_fixed_text", results, dtype=pl.Utf8))
    return targets.join(mapping, on=["text", "_base"], how="left").select(list(schema)).cast(schema)


def _row_facts(data: pl.DataFrame, items: pl.DataFrame, settings: dict[str, Any]) -> pl.DataFrame:
    live = items.filter(~pl.col("_drop"))
    kind = pl.col("kind")
    facts = live.group_by(_ROW).agg(
        (kind == "lex").sum().alias("_n_lex"),
        (kind == "vec").sum().alias("_n_vec"),
        (kind == "hyde").sum().alias("_n_hyde"),
        (kind == pl.col("_only")).sum().alias("_n_only"),
        pl.col("_other_kind").sum().alias("_n_other"),
        pl.col("text").filter(kind == "hyde").first().str.len_chars().alias("_hyde_len"),
        pl.col("kind").filter(pl.col("_echo")).unique().sort().alias("_echo_kinds"),
        pl.col("kind").filter(pl.col("_boiler")).unique().sort().alias("_boiler_kinds"),
        pl.col("_padded").any().alias("_padded_row"),
    )
    return data.join(facts, on=_ROW, how="left", maintain_order="left").with_columns(
        pl.col("_n_lex", "_n_vec", "_n_hyde", "_n_only", "_n_other").fill_null(0),
        pl.col("_padded_row").fill_null(False),
    )


def _everyday_sense(
    rows: pl.DataFrame, items: pl.DataFrame, config: CleanRules, effective: dict[str, str]
) -> pl.DataFrame:
    """Add ``_sense`` (List(Utf8) of "term:everyday word") for rows whose outputs misread a term."""
    empty = pl.lit(None, pl.List(pl.Utf8)).alias("_sense")
    if effective["everyday_sense"] == "off" or not config.terms:
        return rows.with_columns(empty)
    any_term = word_pattern([f for t in config.terms for f in t.forms])
    subset = rows.filter(pl.col("_base").str.contains(any_term)).select(_ROW, "_base")
    if subset.height == 0:
        return rows.with_columns(empty)
    texts = (
        items.join(subset.select(_ROW), on=_ROW, how="semi")
        .group_by(_ROW)
        .agg(pl.col("text").str.join(" \n ").str.to_lowercase().alias("_all_text"))
    )
    subset = subset.join(texts, on=_ROW, how="left").with_columns(pl.col("_all_text").fill_null(""))
    hits = []
    for term in config.terms:
        text = pl.col("_all_text")
        for phrase in term.exceptions:
            text = text.str.replace_all(word_pattern([phrase]), " ")
        everyday = word_pattern(term.everyday)
        fires = (
            pl.col("_base").str.contains(word_pattern(term.forms))
            & pl.col("_base").str.contains(_pattern(term.tech + config.tech_context))
            & text.str.contains(everyday)
        )
        word = text.str.extract(f"({everyday})", 1).str.strip_chars()
        hits.append(pl.when(fires).then(pl.lit(term.term + ":") + word).otherwise(pl.lit(None, pl.Utf8)))
    subset = subset.with_columns(pl.concat_list(hits).list.drop_nulls().alias("_sense")).select(
        _ROW, "_sense"
    )
    return rows.join(subset, on=_ROW, how="left", maintain_order="left")


def _flags_and_reasons(
    rows: pl.DataFrame, config: CleanRules, effective: dict[str, str], settings: dict[str, Any]
) -> pl.DataFrame:
    normal = pl.col("_only").is_null()
    hyde_len = pl.col("_hyde_len")
    lo, hi = int(settings["hyde_min_chars"]), int(settings["hyde_max_chars"])
    required = [k for k in settings["required_kinds"] if k in ("lex", "vec", "hyde")]
    none = pl.lit(None, pl.Utf8)
    # rule -> list of flag expressions (each a Utf8 or null)
    detections: dict[str, list[pl.Expr]] = {
        "only_mode_missing_kind": [
            pl.when(~normal & (pl.col("_n_only") == 0)).then(
                pl.lit("only_mode_missing_kind:") + pl.col("_only")
            )
        ],
        "everyday_sense": [
            pl.when(pl.col("_sense").list.len() > 0).then(
                pl.lit("everyday_sense:") + pl.col("_sense").list.first().str.split(":").list.first()
            )
        ],
        "boilerplate": [
            pl.when(pl.col("_boiler_kinds").list.contains(k)).then(pl.lit(f"boilerplate:{k}"))
            for k in settings["boilerplate_kinds"]
        ],
        "lex_filler": [pl.when(pl.col("_padded_row")).then(pl.lit("lex_filler"))],
        "echo": [
            pl.when(pl.col("_echo_kinds").list.contains(k)).then(pl.lit(f"echo:{k}")) for k in ("lex", "vec")
        ],
        "missing_kinds": [
            pl.when(normal & (pl.col(f"_n_{k}") == 0)).then(pl.lit(f"missing:{k}")) for k in required
        ],
        "only_mode_other_kinds": [
            pl.when(~normal & (pl.col("_n_other") > 0)).then(pl.lit("only_mode_other_kinds"))
        ],
        "hyde_length": [
            pl.when(normal & hyde_len.is_not_null() & (hyde_len < lo)).then(pl.lit("hyde_length:short")),
            pl.when(normal & hyde_len.is_not_null() & (hyde_len > hi)).then(pl.lit("hyde_length:long")),
        ],
    }
    flag_exprs: list[pl.Expr] = []
    reason = none
    for name in reversed(RULE_NAMES):  # the first rule in RULE_NAMES wins the reason
        action = effective[name]
        if action == "off":
            continue
        fired = [e.otherwise(none) for e in detections[name]]
        if not fired:
            continue
        if action == "reject":
            any_fired = pl.any_horizontal([e.is_not_null() for e in fired])
            reason = pl.when(any_fired).then(pl.lit(config.rules[name].reason)).otherwise(reason)
        else:
            flag_exprs = fired + flag_exprs
    flags = pl.concat_list(flag_exprs).list.drop_nulls() if flag_exprs else pl.lit([], pl.List(pl.Utf8))
    return rows.with_columns(flags.alias(FLAGS), reason.alias(REASON))


# ---------------------------------------------------------------- report helpers


def _flag_breakdown(kept: pl.DataFrame) -> dict[str, int]:
    if kept.height == 0:
        return {}
    counts = kept.select(pl.col(FLAGS).explode().drop_nulls().value_counts(sort=True)).to_series().to_list()
    return {entry[FLAGS]: int(entry["count"]) for entry in counts}


def _top_signatures(items: pl.DataFrame, settings: dict[str, Any], top: int = 20) -> list[dict[str, Any]]:
    marked = items.filter(pl.col("_sig_queries").is_not_null())
    if marked.height == 0:
        return []
    grouped = (
        marked.group_by("kind", "_sig")
        .agg(
            pl.col("_sig_queries").first().alias("queries"),
            pl.len().alias("items"),
            pl.col("text").first().alias("example"),
        )
        .sort("queries", descending=True)
        .head(top)
    )
    return [
        {"kind": k, "signature": s, "queries": int(q), "items": int(n), "example": e}
        for k, s, q, n, e in grouped.iter_rows()
    ]


def _sense_examples(rows: pl.DataFrame, top: int = 20) -> list[dict[str, Any]]:
    hit = rows.filter(pl.col("_sense").list.len() > 0).head(top)
    return [{"query": q, "matches": list(s)} for q, s in hit.select("query", "_sense").iter_rows()]
