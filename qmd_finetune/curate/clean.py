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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from qmd_finetune import quality
from qmd_finetune.curate._items import (
    Flat,
    flatten,
    per_row_min,
    per_row_sum,
    rebuild,
    replace_rows,
    unique_ids,
)
from qmd_finetune.curate.stage import REASON, StageResult
from qmd_finetune.resources import data_path
from qmd_finetune.reward import KEY_TERM_STOPWORDS

ACTIONS = ("flag", "fix", "reject", "off")
RULE_NAMES = (
    "only_mode_missing_kind",
    "degenerate",
    "everyday_sense",
    "boilerplate",
    "lex_filler",
    "echo",
    "missing_kinds",
    "only_mode_other_kinds",
    "hyde_length",
    "lex_longer",
)
FIXABLE = frozenset(
    {"boilerplate", "lex_filler", "echo", "only_mode_other_kinds", "hyde_length", "lex_longer"}
)
JUNK_RULES = ("degenerate", "boilerplate", "lex_filler")
"""Rules whose rejects ``keep_flagged`` turns back into flags and the category floor may restore."""
FIX_ALIASES = {
    "hyde_trim": "hyde_length",
    "lex_echo": "echo",
    "filler": "lex_filler",
    "only_other": "only_mode_other_kinds",
}
"""Names the fixes are known by (``--fixes hyde_trim,lex_echo``) -> the rule they repair."""
REJECT_NOTHING_LEFT = "no items left after clean fixes"
FLAGS = "flags"
FLOOR_FLAG = "category_floor"

_ONLY_SUFFIX = r"(?i)\s+/only:(lex|vec|hyde)\s*$"
NEGATION = r'(?:^|\s)-(?:"[^"]*"?|[^\s"]+)'
"""A negated lex term: ``-corrosion`` or ``-"rust remover"`` (at the start or after a space)."""
_MIX = np.uint64(0x9E3779B97F4A7C15)
_NEVER = r"[^\s\S]"  # matches nothing (the regex engine has no lookaround)


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
        "degenerate_checks": list(quality.GATE_RULES),
        "category_floor": 0,
        "fix_presets": {},
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


def _split_words(text: pl.Expr) -> pl.Expr:
    return text.str.to_lowercase().str.replace_all(r"[^\w\s]", "").str.split(" ")


def fix_names(config: CleanRules, fix: bool | str | Sequence[str]) -> set[str] | None:
    """The rules ``fix`` names: ``None`` for "the rules whose action is fix" (``True``), else a set.

    A string is a comma list or a preset of ``settings.fix_presets`` (``"train"``); names are
    rule names or their aliases in :data:`FIX_ALIASES` (``hyde_trim``, ``lex_echo``).
    """
    if fix is True:
        return None
    if fix is False or fix is None:
        return set()
    presets = config.settings.get("fix_presets") or {}
    names = [p.strip() for p in fix.split(",")] if isinstance(fix, str) else [str(p).strip() for p in fix]
    resolved: set[str] = set()
    for name in filter(None, names):
        if name in presets:
            resolved |= fix_names(config, list(presets[name])) or set()
            continue
        rule = FIX_ALIASES.get(name, name)
        if rule not in FIXABLE:
            known = sorted({*FIXABLE, *FIX_ALIASES, *presets})
            raise ValueError(f"unknown clean fix {name!r} (known: {', '.join(known)})")
        resolved.add(rule)
    return resolved


def _resolve_actions(
    config: CleanRules,
    fix: bool | str | Sequence[str],
    actions: dict[str, str] | None,
    keep_flagged: bool = False,
) -> tuple[dict[str, str], set[str]]:
    act = {name: rule.action for name, rule in config.rules.items()}
    if keep_flagged:
        act.update({name: "flag" for name in JUNK_RULES if act[name] == "reject"})
    named = fix_names(config, fix)
    if named is not None:
        act = {name: ("flag" if a == "fix" else a) for name, a in act.items()}
        act.update(dict.fromkeys(named, "fix"))
    for name, action in (actions or {}).items():
        if name not in RULE_NAMES:
            raise ValueError(f"unknown clean rule {name!r} (known: {', '.join(RULE_NAMES)})")
        _check_action(name, action, "actions")
        act[name] = action
    effective = {name: ("flag" if a == "fix" and fix is False else a) for name, a in act.items()}
    return effective, {name for name, a in effective.items() if a == "fix"}


def run(
    frame: pl.DataFrame,
    *,
    rules: str | Path | CleanRules | None = None,
    fix: bool | str | Sequence[str] = False,
    actions: dict[str, str] | None = None,
    keep_flagged: bool = False,
    category_floor: int | None = None,
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
        ("category_floor", category_floor),
    ):
        if value is not None:
            settings[key] = value
    effective, fixing = _resolve_actions(config, fix, actions, keep_flagged)

    columns = [c for c in frame.columns if c != FLAGS]
    data = frame.select(columns)
    query = data["query"].fill_null("")
    only = query.str.extract(_ONLY_SUFFIX, 1).str.to_lowercase()
    base = query.str.replace(_ONLY_SUFFIX, "").str.strip_chars().str.to_lowercase()
    flat = flatten(data["output"])
    items = _Items(flat, only, base)

    echo = items.expand(_echo(items.unique))
    boiler, signatures = items.none(), []
    if effective["boilerplate"] != "off":
        boiler_unique, signatures = _boilerplate(items.unique, settings)
        boiler = items.expand(boiler_unique)
    fillers = _fillers(items.unique, settings)
    padded_row = items.row_all(items.is_lex, items.expand(fillers.has)) & (items.count(items.is_lex) > 0)
    other_kind = items.other_kind

    counts: dict[str, int] = {}
    fixed: dict[str, np.ndarray] = {}  # rows each fix changed; counted over the kept rows at the end
    want_drop = np.zeros(items.n, dtype=bool)
    if "echo" in fixing:
        want_drop |= echo
    if "boilerplate" in fixing:
        want_drop |= boiler
    drop = items.guard_last_of_kind(want_drop)
    if "only_mode_other_kinds" in fixing:
        drop |= other_kind
    for name, mask in (("echo", echo), ("boilerplate", boiler), ("only_mode_other_kinds", other_kind)):
        if name in fixing:
            fixed[name] = items.count(drop & mask) > 0
    echo &= ~drop
    boiler &= ~drop

    new_text = None
    fixed_rows = np.zeros(len(padded_row), dtype=bool)
    if "lex_filler" in fixing:
        new_text, filler_rows = _remove_fillers(items, fillers, padded_row, drop)
        fixed["lex_filler"] = filler_rows
        padded_row &= ~filler_rows
        fixed_rows |= filler_rows
    lo, hi = int(settings["hyde_min_chars"]), int(settings["hyde_max_chars"])
    if "hyde_length" in fixing:
        new_text, trimmed_rows = _trim_hydes(items, new_text, drop, lo, hi)
        fixed["hyde_length"] = trimmed_rows
        fixed_rows |= trimmed_rows
    text = new_text if new_text is not None else items.text
    longer = _lex_longer(items, text, ~drop)
    if "lex_longer" in fixing:
        shorten = _long_lex_lines(items, text, ~drop)
        drop |= shorten
        fixed["lex_longer"] = items.count(shorten) > 0
        longer = _lex_longer(items, text, ~drop)
    live = ~drop
    degenerate = pl.Series("degenerate", [None] * data.height, dtype=pl.Utf8)
    if effective["degenerate"] != "off":
        checks = list(settings["degenerate_checks"])
        candidate = _gate_candidates(items, base, only, set(checks))
        degenerate = _degenerate(data, checks, candidate)

    rows = pl.DataFrame(
        {
            "only": only,
            "n_lex": items.count(items.is_lex & live),
            "n_vec": items.count(items.is_vec & live),
            "n_hyde": items.count(items.is_hyde & live),
            "n_only": items.count(items.is_only & live),
            "n_other": items.count(other_kind & live),
            "hyde_len": items.first_hyde_length(live, text),
            "echo_lex": items.count(echo & items.is_lex) > 0,
            "echo_vec": items.count(echo & items.is_vec) > 0,
            "boiler_hyde": items.count(boiler & items.is_hyde) > 0,
            # a row is boilerplate by its vec lines only when every vec line is a template
            "boiler_vec": (items.count(boiler & items.is_vec) > 0)
            & (items.count(boiler & items.is_vec) == items.count(items.is_vec & live)),
            "padded": padded_row,
            "longer": longer,
            "degenerate": degenerate,
            "sense": _everyday_sense(data, base, config, effective),
        }
    )
    flags, reason, held = _flags_and_reasons(config, effective, settings)
    rows = rows.select(flags.alias(FLAGS), reason.alias(REASON), held.alias("_held"), "sense")
    floor = int(settings["category_floor"])
    floor_note = "off"
    if floor > 0:
        # The floor protects the categories rows name. It works only when every row names one:
        # categorize runs after clean by default, so a row without a category could still end
        # up in any category, and "this category is emptied" cannot be known here.
        missing = data.height if "category" not in data.columns else data["category"].null_count()
        if missing:
            floor_note = f"skipped: {missing} rows have no category (run categorize before clean)"
        else:
            rows, restored = _category_floor(rows, data["category"], floor)
            counts["kept_by_category_floor"] = restored
            floor_note = f"at least {floor} row(s) per category; {restored} junk row(s) kept flagged"

    changed_rows = items.count(drop) > 0
    if new_text is not None:
        changed_rows |= fixed_rows
    output = data["output"]
    if changed_rows.any():
        output = _rebuild_rows(items, changed_rows, live, new_text, output)
        no_items = changed_rows & (items.count(live) == 0)
        if no_items.any():
            rows = rows.with_columns(
                pl.when(pl.col(REASON).is_null() & pl.Series(no_items))
                .then(pl.lit(REJECT_NOTHING_LEFT))
                .otherwise(pl.col(REASON))
                .alias(REASON)
            )
    marked = data.with_columns(rows[FLAGS], rows[REASON], output.alias("_new_output"))
    kept = (
        marked.filter(pl.col(REASON).is_null())
        .with_columns(pl.col("_new_output").alias("output"))
        .select(*columns, FLAGS)
    )
    # Fixes apply to kept rows only: the ledger keeps what a rejected row held.
    rejected = marked.filter(pl.col(REASON).is_not_null()).select(*columns, REASON)

    is_kept = rows[REASON].is_null().to_numpy()
    for name, mask in fixed.items():
        counts[f"fixed:{name}"] = int((mask & is_kept).sum())
    breakdown = _flag_breakdown(kept)
    if kept.height:  # rows per rule (a row flagged boilerplate:hyde and boilerplate:vec counts once)
        rules_per_row = kept.select(
            pl.col(FLAGS)
            .list.eval(pl.element().str.extract(r"^([a-z_]+)", 1))
            .list.unique()
            .explode()
            .drop_nulls()
        ).to_series()
        for rule, n in rules_per_row.value_counts(sort=True).rows():
            counts[f"flagged:{rule}"] = int(n)
    counts["flagged_rows"] = (
        int(kept.select((pl.col(FLAGS).list.len() > 0).sum()).item()) if kept.height else 0
    )
    sense_hits = rows.filter(pl.col("sense").is_not_null()).head(20)
    report = {
        "rows_in": frame.height,
        "actions": effective,
        "category_floor": floor_note,
        "flags": breakdown,
        "boilerplate_signatures": signatures,
        "everyday_sense_examples": [
            {"query": data["query"][i], "match": m}
            for i, m in zip(
                np.flatnonzero(rows["sense"].is_not_null().to_numpy())[:20].tolist(),
                sense_hits["sense"].to_list(),
            )
        ],
    }
    return StageResult(kept=kept, rejected=rejected, counts=counts, report=report)


class _Items:
    """Flat items of a frame: kind masks, per-row reductions, and the unique (kind, text, query) view.

    Detections that depend only on an item and its query run once per unique triple and are
    spread back with ``expand``: generated data repeats itself a lot before dedup.
    """

    def __init__(self, flat: Flat, only: pl.Series, base: pl.Series) -> None:
        self.flat = flat
        self.n = len(flat.row)
        self.row = flat.row
        self.text = flat.text
        self.kind = flat.kind
        self.base = base
        self.is_lex = (flat.kind == "lex").to_numpy()
        self.is_vec = (flat.kind == "vec").to_numpy()
        self.is_hyde = (flat.kind == "hyde").to_numpy()
        item_only = only.gather(flat.row) if self.n else pl.Series([], dtype=pl.Utf8)
        self.is_only = (flat.kind == item_only).fill_null(False).to_numpy()
        self.other_kind = (item_only.is_not_null() & (flat.kind != item_only)).fill_null(False).to_numpy()
        triples = pl.DataFrame(
            {"k": flat.kind, "t": flat.text, "b": base.gather(flat.row) if self.n else base.head(0)}
        )
        if self.n:
            with np.errstate(over="ignore"):
                keys = (
                    flat.text.hash(seed=1).to_numpy()
                    ^ (base.hash(seed=2).to_numpy()[flat.row] * _MIX)
                    ^ (flat.kind.hash(seed=3).to_numpy() * np.uint64(3))
                )
            self.first, self.inverse = unique_ids(keys)
            self.unique = triples[self.first]
        else:
            self.first = self.inverse = np.zeros(0, dtype=np.int64)
            self.unique = triples

    def none(self) -> np.ndarray:
        return np.zeros(self.n, dtype=bool)

    def expand(self, unique_mask: np.ndarray) -> np.ndarray:
        return unique_mask[self.inverse] if self.n else self.none()

    def count(self, mask: np.ndarray) -> np.ndarray:
        return per_row_sum(mask, self.flat.lengths)

    def row_all(self, within: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Rows where every item selected by ``within`` satisfies ``mask``."""
        return self.count(within & ~mask) == 0

    def guard_last_of_kind(self, want_drop: np.ndarray) -> np.ndarray:
        """``want_drop`` minus the drops that would leave a row without any item of a kind."""
        drop = want_drop.copy()
        for mask in (self.is_lex, self.is_vec, self.is_hyde):
            survivors = self.count(mask & ~want_drop)
            drop &= ~(mask & (survivors[self.row] == 0))
        return drop

    def first_hyde_length(self, live: np.ndarray, text: pl.Series) -> pl.Series:
        big = np.iinfo(np.int64).max
        first = per_row_min(np.where(self.is_hyde & live, np.arange(self.n), big), self.flat.lengths, big)
        has = first != big
        lengths = np.full(len(first), -1, dtype=np.int64)  # -1: no hyde
        if has.any():
            lengths[has] = text.gather(first[has]).str.len_chars().to_numpy()
        return pl.Series(lengths, dtype=pl.Int64)


def _echo(unique: pl.DataFrame) -> np.ndarray:
    """Lex/vec items echoing their query (reward.echoes); only items short enough to echo are checked."""
    echo = np.zeros(unique.height, dtype=bool)
    candidate = unique.select(
        pl.col("k").is_in(["lex", "vec"]) & (pl.col("t").str.len_chars() < pl.col("b").str.len_chars() + 12)
    ).to_series()
    index = np.flatnonzero(candidate.to_numpy())
    if len(index) == 0:
        return echo
    part = unique[index].select(pl.col("t").str.strip_chars().str.to_lowercase(), "b")
    hit = part.select(
        (pl.col("t") == pl.col("b"))
        | (
            pl.col("t").str.contains(pl.col("b"), literal=True)
            & (pl.col("t").str.len_chars() < pl.col("b").str.len_chars() + 10)
        )
    ).to_series()
    echo[index] = hit.fill_null(False).to_numpy()
    return echo


def _flat_words(texts: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """The lower-cased words of ``texts`` (punctuation dropped) as one flat Series, and the owner of each."""
    lists = texts.to_frame("t").select(_split_words(pl.col("t"))).to_series()
    lengths = lists.list.len().cast(pl.Int64).to_numpy()
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    return owner, lists.explode(empty_as_null=False, keep_nulls=False)


def _boilerplate(unique: pl.DataFrame, settings: dict[str, Any]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Unique items whose template signature is shared by many distinct queries.

    The signature is the bag of the text's words that are not words of its query, summed as
    64-bit word hashes: flat numpy/polars work, no per-row lists.
    """
    boiler = np.zeros(unique.height, dtype=bool)
    index = np.flatnonzero(unique["k"].is_in(list(settings["boilerplate_kinds"])).to_numpy())
    if len(index) == 0:
        return boiler, []
    part = unique[index]
    bases = part["b"].unique()
    base_id = part.select(pl.col("b").hash(seed=5)).to_series().to_numpy()
    owner, words = _flat_words(part["t"])
    q_owner, q_words = _flat_words(bases)
    q_base_id = bases.hash(seed=5).to_numpy()[q_owner]
    with np.errstate(over="ignore"):
        word_hash = words.hash(seed=9).to_numpy()
        keyed = word_hash ^ (base_id[owner] * _MIX)
        query_keyed = q_words.hash(seed=9).to_numpy() ^ (q_base_id * _MIX)
    own = (words != "").to_numpy() & ~pl.Series(keyed).is_in(pl.Series(query_keyed)).to_numpy()
    lengths = np.bincount(owner, minlength=len(index))
    with np.errstate(over="ignore"):
        signature = per_row_sum(np.where(own, word_hash, 0).view(np.int64), lengths)
    n_words = per_row_sum(own, lengths)
    min_words = max(1, int(settings["boilerplate_min_words"]))
    scored = part.with_columns(pl.Series("sig", signature), pl.Series("n_words", n_words))
    groups = (
        scored.filter(pl.col("n_words") >= min_words)
        .group_by("k", "sig")
        .agg(
            pl.col("b").n_unique().alias("queries"), pl.col("t").first().alias("example"), pl.col("b").first()
        )
    )
    templates = groups.filter(pl.col("queries") >= int(settings["boilerplate_min_queries"]))
    marked = scored.select("k", "sig", "n_words").join(
        templates.select("k", "sig", "queries"), on=["k", "sig"], how="left", maintain_order="left"
    )
    boiler[index] = marked["queries"].is_not_null().to_numpy() & (n_words >= min_words)
    top = templates.sort("queries", descending=True).head(20)
    top = top.with_columns(
        _split_words(pl.col("example")).list.set_difference(_split_words(pl.col("b"))).alias("words")
    )
    signatures = [
        {"kind": k, "queries": int(q), "example": e, "signature": " ".join(sorted(w for w in words if w))}
        for k, q, e, words in top.select("k", "queries", "example", "words").iter_rows()
    ]
    return boiler, signatures


@dataclass
class _Fillers:
    has: np.ndarray  # per unique item: a lex line holding a filler word its query lacks
    owner: np.ndarray  # unique item of each (item, filler word) pair
    words: pl.Series  # the filler word of each pair


def _fillers(unique: pl.DataFrame, settings: dict[str, Any]) -> _Fillers:
    """Unique lex items holding filler words their query lacks, and those words (flat pairs)."""
    has = np.zeros(unique.height, dtype=bool)
    none = _Fillers(has, np.zeros(0, dtype=np.int64), pl.Series([], dtype=pl.Utf8))
    words = list(settings["filler_words"])
    if not words or unique.height == 0:
        return none
    pattern = word_pattern(words)
    candidate = np.flatnonzero(
        unique.select((pl.col("k") == "lex") & pl.col("t").str.contains(pattern)).to_series().to_numpy()
    )
    if len(candidate) == 0:
        return none
    found = unique[candidate].select(
        pl.col("t").str.to_lowercase().str.extract_all(pattern).alias("w"),
        (pl.lit(" ") + pl.col("b").str.replace_all(r"[^\w\s]", " ") + pl.lit(" ")).alias("b"),
    )
    lengths = found["w"].list.len().cast(pl.Int64).to_numpy()
    # One row per filler occurrence; a word the query holds is not filler for that row.
    flat = pl.DataFrame(
        {
            "w": found["w"].explode(empty_as_null=False, keep_nulls=False).str.strip_chars(" ()[],.;:!?"),
            "b": found["b"].gather(np.repeat(np.arange(len(candidate)), lengths)),
        }
    )
    # A word the query holds, or shares a stem with ("doc" -> "documentation", "beginners" ->
    # "beginner"), is not filler for that row.
    stems = (
        flat.with_row_index("i")
        .select("i", "w", pl.col("b").str.split(" ").alias("q"))
        .explode("q")
        .filter(pl.col("q").str.len_chars() >= 3)
        .filter(
            pl.col("w").str.starts_with(pl.col("q"))
            | pl.col("q").str.starts_with(pl.col("w").str.slice(0, 5))
        )
    )["i"]
    absent = (
        flat.with_row_index("i")
        .select(
            ~pl.col("b").str.contains(pl.lit(" ") + pl.col("w") + pl.lit(" "), literal=True)
            & ~pl.col("i").is_in(stems.unique().implode())
        )
        .to_series()
    )
    absent_np = absent.to_numpy()
    has[candidate[per_row_sum(absent_np, lengths) > 0]] = True
    return _Fillers(has, np.repeat(candidate, lengths)[absent_np], flat["w"].filter(absent))


def _remove_fillers(
    items: _Items, fillers: _Fillers, padded_row: np.ndarray, drop: np.ndarray
) -> tuple[pl.Series, np.ndarray]:
    """Item texts with filler words removed on padded rows, and the rows that changed.

    Flat: the target lines are split into words, a word is dropped when (its line, the
    word) is a filler pair, and the lines are joined again. A line that would become empty
    or an echo of its query is left as it was.
    """
    target = np.flatnonzero(items.expand(fillers.has) & padded_row[items.row] & ~drop)
    text = items.text
    unchanged = (text, np.zeros(len(padded_row), dtype=bool))
    if len(target) == 0:
        return unchanged
    uids = np.unique(items.inverse[target])
    lines = items.unique["t"].gather(uids)
    split = lines.str.split(" ")
    lengths = split.list.len().cast(pl.Int64).to_numpy()
    words = split.explode(empty_as_null=False, keep_nulls=False)
    owner = np.repeat(uids, lengths)
    with np.errstate(over="ignore"):
        key = words.str.to_lowercase().str.strip_chars(".,;:!?()[]").hash(seed=21).to_numpy() ^ (
            owner.astype(np.uint64) * _MIX
        )
        pair_key = fillers.words.hash(seed=21).to_numpy() ^ (fillers.owner.astype(np.uint64) * _MIX)
    keep = (~pl.Series(key).is_in(pl.Series(pair_key)) & (words != "")).to_numpy()
    position = np.repeat(np.arange(len(uids)), lengths)
    rebuilt = (
        pl.DataFrame({"p": position[keep], "w": words.filter(pl.Series(keep))})
        .group_by("p", maintain_order=True)
        .agg(pl.col("w").str.join(" "))
    )
    new = pl.Series([""] * len(uids), dtype=pl.Utf8).scatter(rebuilt["p"].to_numpy(), rebuilt["w"])
    check = pl.DataFrame({"old": lines, "new": new, "b": items.unique["b"].gather(uids)}).select(
        good=(pl.col("new") != "")
        & (pl.col("new") != pl.col("old"))
        & (pl.col("new").str.to_lowercase() != pl.col("b"))
        & ~(
            pl.col("new").str.to_lowercase().str.contains(pl.col("b"), literal=True)
            & (pl.col("new").str.len_chars() < pl.col("b").str.len_chars() + 10)
        )
    )
    good = check["good"].to_numpy()
    if not good.any():
        return unchanged
    new_of_unique = np.full(items.unique.height, -1, dtype=np.int64)
    new_of_unique[uids[good]] = np.flatnonzero(good)
    slot = new_of_unique[items.inverse[target]]
    changed = target[slot >= 0]
    mask = np.zeros(items.n, dtype=bool)
    mask[changed] = True
    return text.clone().scatter(changed, new.gather(slot[slot >= 0])), items.count(mask) > 0


def _rebuild_rows(
    items: _Items, changed_rows: np.ndarray, live: np.ndarray, new_text: pl.Series | None, output: pl.Series
) -> pl.Series:
    """``output`` with the changed rows rebuilt from their live items (text fixes applied).

    Few changed rows: rebuild those and splice them in. Many: rebuild the whole column from
    the flat items (string views, cheaper than gathering millions of nested lists).
    """
    text = new_text if new_text is not None else items.text
    rows = np.flatnonzero(changed_rows)
    if len(rows) * 20 < len(changed_rows):
        take = live & changed_rows[items.row]
        index = np.flatnonzero(take)
        rebuilt = rebuild(items.kind.gather(index), text.gather(index), items.count(take)[rows])
        return replace_rows(output, rows, rebuilt)
    return rebuild(items.kind.filter(live), text.filter(live), items.count(live))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def trim_hyde(text: str, min_chars: int, max_chars: int) -> str | None:
    """The longest run of whole leading sentences of ``text`` within ``max_chars``, or None
    when that is shorter than ``min_chars`` (one long sentence cannot be cut sensibly)."""
    kept = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        kept = candidate
    return kept if min_chars <= len(kept) <= max_chars else None


def _trim_hydes(
    items: _Items, new_text: pl.Series | None, drop: np.ndarray, lo: int, hi: int
) -> tuple[pl.Series, np.ndarray]:
    """Item texts with over-long hyde passages cut at a sentence boundary, and the rows changed."""
    text = new_text if new_text is not None else items.text
    target = np.flatnonzero(items.is_hyde & ~drop & (text.str.len_chars().to_numpy() > hi))
    if len(target) == 0:
        return text, np.zeros(len(items.flat.lengths), dtype=bool)
    distinct = text.gather(target).unique(maintain_order=True)
    trimmed = {t: trim_hyde(t, lo, hi) for t in distinct.to_list()}
    values = [trimmed[t] for t in text.gather(target).to_list()]
    ok = np.array([v is not None for v in values], dtype=bool)
    changed = target[ok]
    mask = np.zeros(items.n, dtype=bool)
    mask[changed] = True
    new = pl.Series([v for v in values if v is not None], dtype=pl.Utf8)
    return text.clone().scatter(changed, new), items.count(mask) > 0


def _kind_means(items: _Items, text: pl.Series, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    length = text.str.len_chars().to_numpy().astype(np.int64)
    means = []
    for mask in (items.is_lex & live, items.is_vec & live):
        n = items.count(mask)
        total = per_row_sum(np.where(mask, length, 0), items.flat.lengths)
        means.append(np.where(n > 0, total / np.maximum(n, 1), np.nan))
    return means[0], means[1]


def _lex_longer(items: _Items, text: pl.Series, live: np.ndarray) -> np.ndarray:
    """Rows whose lex lines are longer than their vec lines on average (a rubric deduction)."""
    lex_mean, vec_mean = _kind_means(items, text, live)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(lex_mean) > np.nan_to_num(vec_mean, nan=np.inf)


def _long_lex_lines(items: _Items, text: pl.Series, live: np.ndarray) -> np.ndarray:
    """On rows whose lex lines are longer than their vec lines: the lex items longer than the
    row's mean vec line, when at least one lex line stays."""
    longer = _lex_longer(items, text, live)
    _, vec_mean = _kind_means(items, text, live)
    length = text.str.len_chars().to_numpy()
    with np.errstate(invalid="ignore"):
        long = (
            items.is_lex
            & live
            & longer[items.row]
            & (length > np.nan_to_num(vec_mean, nan=np.inf)[items.row])
        )
    survivors = items.count(items.is_lex & live & ~long)
    return long & (survivors[items.row] > 0)


def _gate_candidates(items: _Items, base: pl.Series, only: pl.Series, checks: set[str]) -> np.ndarray:
    """Rows that may fail the quality gate; every other row passes it for certain.

    Each test is a vectorized superset of its gate rule (lines equal once reduced to
    lower-case letters and digits; a key term matched only as an exact word ...), so running
    ``quality.check`` on these rows alone gives the same answer as running it on all rows.
    """
    rows = len(items.flat.lengths)
    candidate = np.zeros(rows, dtype=bool)
    if items.n == 0 or not checks:
        return candidate
    kind = items.kind.str.to_lowercase()
    lex, vec, hyde = ((kind == k).to_numpy() for k in ("lex", "vec", "hyde"))
    normal = only.is_null().to_numpy()
    lower = items.text.str.to_lowercase() if "all_echo" in checks else None
    if checks & {"repeated_lines", "prompt_copy"}:  # text reductions once per distinct text
        first, inverse = unique_ids(items.text.hash(seed=30).to_numpy())
        distinct_lower = items.text.gather(first).str.to_lowercase()
        distinct_alnum = distinct_lower.str.replace_all(r"[^a-z0-9]", "")
    with np.errstate(over="ignore"):
        row_key = items.row.astype(np.uint64) * _MIX
        if "repeated_lines" in checks:
            keys = distinct_alnum.hash(seed=31).to_numpy()[inverse] ^ kind.hash(seed=32).to_numpy() ^ row_key
            candidate |= items.count(pl.Series(keys).is_duplicated().to_numpy()) > 0
        if "too_many_items" in checks:
            limits = quality.LIMITS
            candidate |= (
                (items.count(hyde) > limits["hyde"][1])
                | (items.count(lex) > limits["lex"][1])
                | (items.count(vec) > limits["vec"][1])
            )
        if "other_kinds" in checks:
            candidate |= ~normal
        if "missing_vec" in checks:
            candidate |= normal & (items.count(vec) == 0)
        if "all_echo" in checks:
            # an echo holds the query (reward.echoes), so a row whose every lex/vec line holds it
            lex_vec = lex | vec
            index = np.flatnonzero(lex_vec)
            holds = np.zeros(items.n, dtype=bool)
            holds[index] = (
                lower.gather(index)
                .str.contains(base.gather(items.row[index]), literal=True)
                .fill_null(False)
                .to_numpy()
            )
            candidate |= (items.count(lex_vec) > 0) & (items.count(lex_vec & ~holds) == 0)
        if "lex_off_topic" in checks:
            candidate |= (items.count(lex) > 0) & ~_holds_a_key_word(items, base)
        if "prompt_copy" in checks:
            lines = quality.default_prompt_lines()
            reduced = sorted({re.sub(r"[^a-z0-9]", "", line) for line in lines.lines})
            long = [re.sub(r"[^a-z0-9]", "", line) for line in lines.long_lines]
            copied = distinct_alnum.is_in(reduced) | distinct_lower.str.contains("/only:", literal=True)
            if long:
                copied |= distinct_alnum.str.contains_any(long)
            candidate |= items.count(copied.fill_null(False).to_numpy()[inverse]) > 0
    return candidate


def _key_parts(bases: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per base: whether it has key terms (``reward.key_terms``), and the (owner, word hash)
    of the alphanumeric parts of those terms (what ``quality.shares_key_term`` compares)."""
    tokens = bases.str.extract_all(r"\S+")
    owner = np.repeat(np.arange(len(bases), dtype=np.int64), tokens.list.len().fill_null(0).to_numpy())
    flat_tokens = tokens.explode(empty_as_null=False, keep_nulls=False)
    keep = ~flat_tokens.is_in(sorted(KEY_TERM_STOPWORDS)).to_numpy()
    has_terms = np.bincount(owner[keep], minlength=len(bases)) > 0
    parts = flat_tokens.filter(pl.Series(keep)).str.extract_all(r"[a-z0-9]+")
    part_owner = np.repeat(owner[keep], parts.list.len().to_numpy())
    return (
        has_terms,
        part_owner,
        parts.explode(empty_as_null=False, keep_nulls=False).hash(seed=33).to_numpy(),
    )


def _holds_a_key_word(items: _Items, base: pl.Series) -> np.ndarray:
    """Rows that lack key terms, or with a lex line holding a key term of the query as an exact
    word: those pass ``lex_off_topic`` for certain. Worked out per distinct (lex text, query)."""
    unique = items.unique
    first_base, base_id = unique_ids(base.hash(seed=34).to_numpy())
    has_terms, part_owner, part_hash = _key_parts(base.gather(first_base))
    lex_u = np.flatnonzero((unique["k"].str.to_lowercase() == "lex").to_numpy())
    holds_u = np.zeros(unique.height, dtype=bool)
    if len(lex_u):
        # the base of each distinct lex triple, as an index into the distinct bases
        triple_base = base_id[items.row[items.first[lex_u]]]
        words = unique["t"].gather(lex_u).str.to_lowercase().str.extract_all(r"[a-z0-9]+")
        word_owner = np.repeat(np.arange(len(lex_u)), words.list.len().to_numpy())
        word_hash = words.explode(empty_as_null=False, keep_nulls=False).hash(seed=33).to_numpy()
        with np.errstate(over="ignore"):
            keyed = word_hash ^ (triple_base[word_owner].astype(np.uint64) * _MIX)
            wanted = part_hash ^ (part_owner.astype(np.uint64) * _MIX)
        hit = pl.Series(keyed).is_in(pl.Series(wanted)).to_numpy()
        holds_u[lex_u[np.bincount(word_owner[hit], minlength=len(lex_u)) > 0]] = True
    matched = items.count(items.expand(holds_u) & (items.kind.str.to_lowercase() == "lex").to_numpy()) > 0
    return matched | ~has_terms[base_id]


def _degenerate(data: pl.DataFrame, checks: list[str], candidate: np.ndarray) -> pl.Series:
    """Per row the first quality-gate rule the answer fails (``quality.check``), else null.

    The gate runs on the candidate rows only (see :func:`_gate_candidates`), once per
    distinct (query, output) pair.
    """
    result = pl.Series("degenerate", [None] * data.height, dtype=pl.Utf8)
    rows = np.flatnonzero(candidate)
    if len(rows) == 0 or not checks:
        return result
    query = data["query"].fill_null("").gather(rows)
    output = data["output"].gather(rows)
    with np.errstate(over="ignore"):
        keys = query.hash(seed=11).to_numpy() ^ (output.hash(seed=12).to_numpy() * _MIX)
    first, inverse = unique_ids(keys)
    found = [
        (fails[0].rule if fails else None)
        for fails in (
            quality.check(q, out or [], checks=checks)
            for q, out in zip(query.gather(first).to_list(), output.gather(first).to_list())
        )
    ]
    return result.scatter(rows, pl.Series(found, dtype=pl.Utf8).gather(inverse))


def _non_topical() -> set[str]:
    raw = yaml.safe_load(data_path("taxonomy.yaml").read_text(encoding="utf-8")) or {}
    return {str(label) for label in raw.get("non_topical") or []}


def _category_floor(rows: pl.DataFrame, category: pl.Series, floor: int) -> tuple[pl.DataFrame, int]:
    """Restore junk-rejected rows (flagged, plus ``category_floor``) so no input category keeps
    fewer than ``floor`` rows; rows without a category or with a non-topical one are not protected."""
    frame = rows.with_columns(
        category.alias("_cat"), pl.int_range(pl.len(), dtype=pl.Int64).alias("_idx")
    ).with_columns(
        (pl.col("_cat").is_not_null() & ~pl.col("_cat").is_in(sorted(_non_topical()))).alias("_protected")
    )
    kept = frame.filter(pl.col("_protected") & pl.col(REASON).is_null()).group_by("_cat").len("kept")
    restore = (
        frame.filter(pl.col("_protected") & pl.col(REASON).is_not_null() & pl.col("_held").is_not_null())
        .with_columns(pl.int_range(pl.len()).over("_cat").alias("_rank"))
        .join(kept, on="_cat", how="left")
        .filter(pl.col("_rank") < floor - pl.col("kept").fill_null(0))
    )["_idx"]
    if restore.len() == 0:
        return rows, 0
    back = frame["_idx"].is_in(restore)
    restored = rows.with_columns(
        pl.when(back)
        .then(pl.concat_list(FLAGS, pl.col("_held").str.split(","), pl.lit([FLOOR_FLAG])))
        .otherwise(pl.col(FLAGS))
        .alias(FLAGS),
        pl.when(back).then(pl.lit(None, pl.Utf8)).otherwise(pl.col(REASON)).alias(REASON),
    )
    return restored, restore.len()


def _everyday_sense(
    data: pl.DataFrame, base: pl.Series, config: CleanRules, effective: dict[str, str]
) -> pl.Series:
    """Per row "term:everyday word" when the outputs misread a technical term, else null."""
    result = pl.Series("sense", [None] * data.height, dtype=pl.Utf8)
    if effective["everyday_sense"] == "off" or not config.terms or data.height == 0:
        return result
    # Query-side tests run once per distinct query; only rows whose query names a term in a
    # technical context have their outputs read.
    queries = base.unique()
    any_term = word_pattern([f for t in config.terms for f in t.forms])
    queries = queries.filter(queries.str.contains(any_term))
    if queries.len():
        any_tech = word_pattern(sorted({w for t in config.terms for w in t.tech} | set(config.tech_context)))
        queries = queries.filter(queries.str.contains(any_tech))
    if queries.len() == 0:
        return result
    rows = np.flatnonzero(base.is_in(queries).to_numpy())
    # Outputs are read once per distinct (query, output) pair.
    output = data["output"].gather(rows)
    matched = base.gather(rows)
    with np.errstate(over="ignore"):
        keys = matched.hash(seed=4).to_numpy() ^ (output.hash(seed=6).to_numpy() * _MIX)
    first, inverse = unique_ids(keys)
    subset = pl.DataFrame(
        {
            "b": matched.gather(first),
            # A `-term` or `-"phrase"` in a lex line excludes that sense (qmd's lex syntax):
            # it is removed before the everyday words are looked for.
            "text": output.gather(first)
            .list.eval(
                pl.when(pl.element().list.get(0, null_on_oob=True) == "lex")
                .then(pl.element().list.get(1, null_on_oob=True).str.replace_all(NEGATION, " "))
                .otherwise(pl.element().list.get(1, null_on_oob=True))
            )
            .list.join(" \n ")
            .str.to_lowercase(),
        }
    )
    found = pl.Series("sense", [None] * subset.height, dtype=pl.Utf8)
    for term in config.terms:
        # Query-side tests on the distinct queries; the outputs only of rows that pass.
        term_queries = queries.filter(
            queries.str.contains(word_pattern(term.forms))
            & queries.str.contains(word_pattern(term.tech + config.tech_context))
        )
        if term_queries.len() == 0:
            continue
        index = np.flatnonzero(subset["b"].is_in(term_queries).to_numpy() & found.is_null().to_numpy())
        if len(index) == 0:
            continue
        text = pl.col("text")
        for phrase in term.exceptions:
            text = text.str.replace_all(word_pattern([phrase]), " ")
        everyday = word_pattern(term.everyday)
        word = (
            subset[index]
            .select(text.str.extract(f"({everyday})", 1).str.strip_chars(" ()[],.;:!?"))
            .to_series()
        )
        hit = word.is_not_null().to_numpy()
        if hit.any():
            labels = word.filter(pl.Series(hit)).to_frame("w").select(pl.lit(term.term + ":") + pl.col("w"))
            found = found.scatter(index[hit], labels.to_series())
    return result.scatter(rows, found.gather(inverse))


def _flags_and_reasons(
    config: CleanRules, effective: dict[str, str], settings: dict[str, Any]
) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Expressions over the row facts: the ``flags`` list, the reject reason, and the flags a
    row rejected only by junk rules would carry if the category floor keeps it (else null)."""
    normal = pl.col("only").is_null()
    hyde_len = pl.col("hyde_len")
    lo, hi = int(settings["hyde_min_chars"]), int(settings["hyde_max_chars"])
    required = [k for k in settings["required_kinds"] if k in ("lex", "vec", "hyde")]
    none = pl.lit(None, pl.Utf8)
    detections: dict[str, list[pl.Expr]] = {
        "only_mode_missing_kind": [
            pl.when(~normal & (pl.col("n_only") == 0)).then(
                pl.lit("only_mode_missing_kind:") + pl.col("only")
            )
        ],
        "degenerate": [
            pl.when(pl.col("degenerate").is_not_null()).then(pl.lit("degenerate:") + pl.col("degenerate"))
        ],
        "everyday_sense": [
            pl.when(pl.col("sense").is_not_null()).then(
                pl.lit("everyday_sense:") + pl.col("sense").str.split(":").list.first()
            )
        ],
        "boilerplate": [
            pl.when(pl.col(f"boiler_{k}")).then(pl.lit(f"boilerplate:{k}")) for k in ("hyde", "vec")
        ],
        "lex_filler": [pl.when(pl.col("padded")).then(pl.lit("lex_filler"))],
        "echo": [pl.when(pl.col(f"echo_{k}")).then(pl.lit(f"echo:{k}")) for k in ("lex", "vec")],
        "missing_kinds": [
            pl.when(normal & (pl.col(f"n_{k}") == 0)).then(pl.lit(f"missing:{k}")) for k in required
        ],
        "only_mode_other_kinds": [
            pl.when(~normal & (pl.col("n_other") > 0)).then(pl.lit("only_mode_other_kinds"))
        ],
        "hyde_length": [
            pl.when(normal & (hyde_len >= 0) & (hyde_len < lo)).then(pl.lit("hyde_length:short")),
            pl.when(normal & (hyde_len > hi)).then(pl.lit("hyde_length:long")),
        ],
        "lex_longer": [pl.when(pl.col("longer")).then(pl.lit("lex_longer"))],
    }
    flag_exprs: list[pl.Expr] = []
    held_exprs: list[pl.Expr] = []
    other_reject = pl.lit(False)
    reason = none
    for name in reversed(RULE_NAMES):  # the first rule in RULE_NAMES wins the reason
        action = effective[name]
        if action == "off":
            continue
        fired = [e.otherwise(none) for e in detections[name]]
        if action == "reject":
            any_fired = pl.any_horizontal([e.is_not_null() for e in fired])
            text = pl.lit(config.rules[name].reason)
            if name == "degenerate":  # one reason per gate rule: "degenerate answer: repeated_lines"
                text = text + pl.lit(": ") + pl.col("degenerate")
            reason = pl.when(any_fired).then(text).otherwise(reason)
            if name in JUNK_RULES:
                held_exprs = fired + held_exprs
            else:
                other_reject = other_reject | any_fired
        else:
            flag_exprs = fired + flag_exprs
    flags: pl.Expr = pl.lit([], pl.List(pl.Utf8))
    if flag_exprs:
        joined = pl.concat_str(flag_exprs, separator=",", ignore_nulls=True)
        flags = pl.when(joined == "").then(pl.lit([], pl.List(pl.Utf8))).otherwise(joined.str.split(","))
    held = none
    if held_exprs:
        held_joined = pl.concat_str(held_exprs, separator=",", ignore_nulls=True)
        held = pl.when((held_joined != "") & ~other_reject).then(held_joined).otherwise(none)
    return flags, reason, held


# ---------------------------------------------------------------- report helpers


def _flag_breakdown(kept: pl.DataFrame) -> dict[str, int]:
    if kept.height == 0:
        return {}
    counts = kept.select(pl.col(FLAGS).explode().drop_nulls().value_counts(sort=True)).to_series().to_list()
    return {entry[FLAGS]: int(entry["count"]) for entry in counts}
