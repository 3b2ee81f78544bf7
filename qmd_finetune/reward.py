"""The reward: one scorer for curation, GEPA, GRPO and eval, in two versioned rubrics.

Rubric ``"v1"`` implements ``shared/docs/reward-spec.md`` and ``"v2"`` (the default, qmd's
current rubric) implements ``shared/docs/reward-spec-v2.md``, both exactly (percentages
match to one decimal). v2 is v1 plus a larger key-term stopword list, position-0 entities
with one-level chaining, one query-length diversity threshold, a filler penalty, a
quoted-phrase bonus and per-entity coverage; every difference is a ``v2`` branch below.
Pure functions; :func:`score_frame` is the batch path over a polars frame.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qmd_finetune.records import ONLY_RE, THINK_RE, render

RUBRICS: tuple[str, ...] = ("v1", "v2")
DEFAULT_RUBRIC = "v2"

STOPWORDS = frozenset("the a an is are to for of in and or it this that be with as on by".split())
KEY_TERM_STOPWORDS = frozenset(
    "what is how to the a an in on for of and or with my your do does can i me we who where when why "
    "which find get show tell".split()
)
KEY_TERM_STOPWORDS_V2 = KEY_TERM_STOPWORDS | frozenset(
    "about from into between through during after before like than then that this their its was were "
    "has had been being have not but just also very so if at by up out all some any no each every both "
    "few more most other only same such here there asked said notes meeting email discussion "
    "conversation call".split()
)
QUERY_VERB_STOPWORDS = frozenset(
    "configure setup install build create make run start stop check test debug fix update change add "
    "remove delete use using need want should would could help please best good new old latest recent "
    "setting settings compare comparing implement implementing deploy deploying migrate migrating "
    "optimize optimizing understand understanding explain list describe define convert connecting "
    "performance overview introduction tutorial example difference between about review resolve "
    "resolving troubleshoot troubleshooting monitor monitoring manage managing enable disable set write "
    "read search possible common typical recommended alternative".split()
)
FILLER_WORDS = frozenset({"overview", "basics"})
GENERIC_PHRASES: tuple[str, ...] = (
    "find information about",
    "search for",
    "look up",
    "get information",
    "learn about",
    "information on",
    "details about",
    "find out about",
    "what is",
    "how to",
    "guide to",
    "help with",
)
_GENERIC_SPLIT = tuple((p, p.split()) for p in GENERIC_PHRASES)
LEAKAGE_MARKERS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "\nassistant\n",
    "\nuser\n",
)
_ENTITY_STRIP = ".,!?:;()[]\"'"
_TOKEN_RE = re.compile(r"\b\w+\b")
_PREFIXES = (("lex:", "lex"), ("vec:", "vec"), ("hyde:", "hyde"))

RATINGS: tuple[tuple[float, str], ...] = ((80, "Excellent"), (60, "Good"), (40, "Acceptable"), (20, "Poor"))
DIMENSIONS = ("format", "diversity", "hyde", "quality", "entity", "think")


@dataclass
class Score:
    percentage: float
    rating: str
    total: float
    max_score: int
    dimensions: dict[str, float]
    deductions: list[str]
    lex: list[str] = field(default_factory=list)
    vec: list[str] = field(default_factory=list)
    hyde: list[str] = field(default_factory=list)
    only_type: str | None = None
    used_thinking: bool = False
    hard_failure: str | None = None
    rubric: str = DEFAULT_RUBRIC

    @property
    def reward(self) -> float:
        return self.percentage / 100

    def to_dict(self) -> dict[str, Any]:
        return {
            "percentage": self.percentage,
            "rating": self.rating,
            "total": self.total,
            "max": self.max_score,
            "dimensions": dict(self.dimensions),
            "deductions": list(self.deductions),
            "items": {"hyde": list(self.hyde), "lex": list(self.lex), "vec": list(self.vec)},
            "only_type": self.only_type,
            "used_thinking": self.used_thinking,
            "hard_failure": self.hard_failure,
            "rubric": self.rubric,
        }


def check_rubric(rubric: str | None = None, version: str | None = None) -> str:
    """The rubric name to use (``rubric`` wins, then ``version``, then the default); ValueError if unknown."""
    if rubric is not None and version is not None and rubric != version:
        raise ValueError(f"rubric={rubric!r} and version={version!r} disagree; pass one of them")
    name = rubric if rubric is not None else version if version is not None else DEFAULT_RUBRIC
    if name not in RUBRICS:
        raise ValueError(f"unknown rubric {name!r}: valid rubrics are {', '.join(RUBRICS)}")
    return name


def rating_for(percentage: float) -> str:
    for threshold, name in RATINGS:
        if percentage >= threshold:
            return name
    return "Failed"


# ---------------------------------------------------------------- helpers (spec section 2)


def key_term_stopwords(rubric: str = DEFAULT_RUBRIC) -> frozenset[str]:
    return KEY_TERM_STOPWORDS_V2 if check_rubric(rubric) == "v2" else KEY_TERM_STOPWORDS


def key_terms(query: str, rubric: str = DEFAULT_RUBRIC) -> set[str]:
    return set(query.lower().split()) - key_term_stopwords(rubric)


def keeps_key_terms(line: str, terms: set[str]) -> bool:
    return not terms or not terms.isdisjoint(line.lower().split())


def extract_entities(query: str, rubric: str = DEFAULT_RUBRIC) -> set[str]:
    """Entities of ``query`` (lower-cased) under the rubric's rules (v1 or v2 spec section 2)."""
    if check_rubric(rubric) == "v2":
        return _entities_v2(query)
    entities: set[str] = set()
    previous = False
    for index, raw in enumerate(query.split()):
        word = raw.strip(_ENTITY_STRIP)
        if not word:
            previous = False
            continue
        lower = word.lower()
        is_entity = (
            (word.isupper() and len(word) >= 2)
            or (index > 0 and word[0].isupper() and lower not in KEY_TERM_STOPWORDS)
            or (len(word) >= 2 and any(c in word for c in ".+-#@"))
            or (len(word) > 1 and word[0].isupper() and any(c.isupper() for c in word[1:]))
            or (previous and lower not in KEY_TERM_STOPWORDS)
        )
        if is_entity:
            entities.add(lower)
        previous = is_entity
    return entities


def _entities_v2(query: str) -> set[str]:
    """v2 spec section 2: first rule wins, a capitalised query verb at position 0 is never an
    entity, and a chained word (rule 5) cannot chain the next one."""
    entities: set[str] = set()
    previous_base = False
    for index, raw in enumerate(query.split()):
        word = raw.strip(_ENTITY_STRIP)
        if not word:
            previous_base = False
            continue
        lower = word.lower()
        base = False
        chained = False
        if word.isupper() and len(word) >= 2:
            base = True
        elif word[0].isupper() and lower not in KEY_TERM_STOPWORDS_V2:
            base = index > 0 or lower not in QUERY_VERB_STOPWORDS
        elif (len(word) >= 2 and any(c in word for c in ".+-#@")) or (
            len(word) > 1 and word[0].isupper() and any(c.isupper() for c in word[1:])
        ):
            base = True
        elif previous_base and lower not in KEY_TERM_STOPWORDS_V2:
            chained = True
        if base or chained:
            entities.add(lower)
        previous_base = base
    return entities


def has_entity(line: str, entities: set[str]) -> bool:
    lower = line.lower()
    return any(e in lower for e in entities)


def is_diverse(a: str, b: str, min_distance: int) -> bool:
    a, b = a.lower().strip(), b.lower().strip()
    if a == b or a in b or b in a:
        return False
    return len(set(a.split()) ^ set(b.split())) >= min_distance


def non_diverse_pairs(lines: Sequence[str], min_distance: int) -> int:
    return sum(
        1
        for i in range(len(lines))
        for j in range(i + 1, len(lines))
        if not is_diverse(lines[i], lines[j], min_distance)
    )


def echoes(expansion: str, query: str) -> bool:
    e, q = expansion.lower().strip(), query.lower().strip()
    return e == q or (q in e and len(e) < len(q) + 10)


def is_generic(lex: str) -> bool:
    lower = lex.lower().strip()
    for phrase, words in _GENERIC_SPLIT:
        if phrase in lower or lower.startswith(words[0]):
            remaining = lower
            for word in words:
                remaining = remaining.replace(word, "", 1)
            if len(remaining.strip()) < 3:
                return True
    return False


def repetition_penalty(text: str) -> int:
    counts = Counter(_TOKEN_RE.findall(text.lower()))
    return sum(
        (count - 2) * 2
        for token, count in counts.items()
        if count >= 3 and len(token) > 2 and token not in STOPWORDS
    )


def is_natural(vec: str) -> bool:
    return " " in vec and len(vec) > 15


def diversity_threshold(query: str) -> int:
    """v2's one word-distance threshold for lex and vec pairs: 3 for queries of 5+ tokens, else 2."""
    return 3 if len(query.split()) >= 5 else 2


def has_filler(lex: str, query: str) -> bool:
    """v2: a lex token is exactly a filler word (overview, basics) that the query's tokens lack."""
    return not (FILLER_WORDS & set(lex.lower().split())) <= set(query.lower().split())


def has_quote_bonus(query: str, lex: Sequence[str]) -> bool:
    """v2: +3 once when a lex line holds an ASCII double quote and the query has 2+ tokens."""
    return bool(lex) and len(query.split()) >= 2 and any('"' in line for line in lex)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------- scoring


def _failed(
    reason: str, max_score: int, only_type: str | None, used_thinking: bool, rubric: str, **items: list[str]
) -> Score:
    return Score(
        percentage=0.0,
        rating="Failed",
        total=0.0,
        max_score=max_score,
        dimensions=dict.fromkeys(DIMENSIONS, 0.0),
        deductions=[reason],
        only_type=only_type,
        used_thinking=used_thinking,
        hard_failure=reason,
        rubric=rubric,
        **items,
    )


def score(query: str, text: str, rubric: str | None = None, *, version: str | None = None) -> Score:
    """Score one expansion ``text`` for ``query`` under ``rubric`` ("v1" or "v2", default v2).

    ``version`` is accepted as another name for ``rubric`` (the parity check's fallback).
    """
    rubric = check_rubric(rubric, version)
    text = text.strip().replace("<|im_end|>", "")
    used_thinking = "<think>" in text and "</think>" in text
    text = THINK_RE.sub("", text).strip()

    only_match = ONLY_RE.search(query)
    only_type = only_match.group(1).lower() if only_match else None
    base_query = query[: only_match.start()].strip() if only_match else query
    max_if_failed = 100

    for marker in LEAKAGE_MARKERS:
        if marker in text:
            return _failed("chat template leakage", max_if_failed, only_type, used_thinking, rubric)

    parsed: dict[str, list[str]] = {"lex": [], "vec": [], "hyde": []}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        for prefix, kind in _PREFIXES:
            if line.startswith(prefix):
                parsed[kind].append(line[len(prefix) :].strip())
                break
        else:
            return _failed(f"invalid line: {_short(line)}", max_if_failed, only_type, used_thinking, rubric)

    if only_type:
        return _score_only(base_query, only_type, parsed, used_thinking, rubric)
    return _score_normal(query, parsed, used_thinking, rubric)


def _score_normal(query: str, parsed: dict[str, list[str]], used_thinking: bool, rubric: str) -> Score:
    lex, vec, hyde = parsed["lex"], parsed["vec"], parsed["hyde"]
    v2 = rubric == "v2"
    deductions: list[str] = []

    fmt = 10 + (10 if lex else 0) + (10 if vec else 0)
    if not lex:
        deductions.append("missing lex:")
    if not vec:
        deductions.append("missing vec:")

    diversity = 0
    if lex and vec:
        diversity += 10
    if len(lex) + len(vec) >= 2:
        diversity += 5
    else:
        deductions.append("fewer than 2 lex/vec lines")
    lex_distance, vec_distance = (diversity_threshold(query),) * 2 if v2 else (2, 3)
    lex_pairs = non_diverse_pairs(lex, lex_distance)
    vec_pairs = non_diverse_pairs(vec, vec_distance)
    diversity += max(0, 5 - 2 * lex_pairs) + max(0, 5 - 2 * vec_pairs)
    if lex_pairs:
        deductions.append(f"{lex_pairs} lex pair(s) too similar")
    if vec_pairs:
        deductions.append(f"{vec_pairs} vec pair(s) too similar")
    lex_echoes = [line for line in lex if echoes(line, query)]
    vec_echoes = [line for line in vec if echoes(line, query)]
    diversity += max(-10, 5 - 10 * len(lex_echoes) - 3 * len(vec_echoes))
    deductions.extend(f"lex echoes query: {_short(line)}" for line in lex_echoes)
    deductions.extend(f"vec echoes query: {_short(line)}" for line in vec_echoes)

    hyde_points = 0
    if hyde:
        first = hyde[0]
        hyde_points = 5
        length = len(first)
        if 50 <= length <= 200:
            hyde_points += 5
        elif length < 50:
            hyde_points += 2
            deductions.append(f"hyde too short ({length})")
        else:
            deductions.append(f"hyde too long ({length})")
        if "\n" not in first:
            hyde_points += 5
        penalty = repetition_penalty(first)
        hyde_points += max(0, 5 - penalty)
        if penalty:
            deductions.append(f"hyde repeats words (penalty {penalty})")
    else:
        deductions.append("missing hyde:")

    quality = 5
    if lex and vec:
        if sum(map(len, lex)) / len(lex) <= sum(map(len, vec)) / len(vec):
            quality += 5
        else:
            deductions.append("lex lines longer than vec lines on average")
    if vec:
        unnatural = [v for v in vec if not is_natural(v)]
        quality += 2 if unnatural else 5
        deductions.extend(f"vec not natural language: {_short(v)}" for v in unnatural)
    if lex:
        terms = key_terms(query, rubric)
        keeping = sum(1 for line in lex if keeps_key_terms(line, terms))
        if keeping == len(lex):
            quality += 5
        elif keeping:
            quality += 2
            deductions.append("some lex lines miss the query's key terms")
        else:
            deductions.append("no lex line keeps the query's key terms")
    if v2:
        quality += _filler_penalty(lex, query, deductions)
        if has_quote_bonus(query, lex):
            quality += 3

    entities = extract_entities(query, rubric)
    if entities and lex:
        with_entity = sum(1 for line in lex if has_entity(line, entities))
        if with_entity == len(lex):
            entity = 15
        elif with_entity:
            entity = 5
            deductions.append(f"some lex lines miss entities ({', '.join(sorted(entities))})")
        else:
            entity = -30
            deductions.append(f"no lex line keeps entities ({', '.join(sorted(entities))})")
        if v2:
            covered = " ".join(lex + vec).lower()
            dropped = sorted(e for e in entities if e not in covered)
            entity -= 20 * len(dropped)
            if dropped:
                deductions.append(f"entities dropped: {', '.join(dropped)}")
        generic = [line for line in lex if is_generic(line)]
        entity -= 15 * len(generic)
        deductions.extend(f"generic lex: {_short(line)}" for line in generic)
        if any(has_entity(v, entities) for v in vec):
            entity += 5
        elif vec:
            deductions.append("no vec line keeps an entity")
    elif not entities:
        entity = 10
    else:
        entity = 0

    think = 0 if used_thinking else 20
    if used_thinking:
        deductions.append("used <think> block")

    total = fmt + diversity + hyde_points + quality + entity + think
    max_score = 140 if hyde else 120
    percentage = max(0.0, min(100.0, total / max_score * 100))
    if lex_echoes:
        percentage = min(percentage, 50.0)
    percentage = round(percentage, 1)
    return Score(
        percentage=percentage,
        rating=rating_for(percentage),
        total=float(max(0, total)),
        max_score=max_score,
        dimensions={
            "format": float(fmt),
            "diversity": float(diversity),
            "hyde": float(hyde_points),
            "quality": float(quality),
            "entity": float(max(0, entity)),
            "think": float(think),
        },
        deductions=deductions,
        lex=lex,
        vec=vec,
        hyde=hyde,
        used_thinking=used_thinking,
        rubric=rubric,
    )


def _filler_penalty(lex: Sequence[str], query: str, deductions: list[str]) -> int:
    """v2: -3 per lex line holding a filler word the query lacks."""
    filler = sum(1 for line in lex if has_filler(line, query))
    if filler:
        deductions.append(f"{filler} lex line(s) with filler words")
    return -3 * filler


def _score_only(
    base_query: str, only_type: str, parsed: dict[str, list[str]], used_thinking: bool, rubric: str
) -> Score:
    items = parsed[only_type]
    v2 = rubric == "v2"
    if not items:
        return _failed(f"missing {only_type}: (only-mode)", 120, only_type, used_thinking, rubric, **parsed)
    deductions: list[str] = []

    others = sum(len(v) for k, v in parsed.items() if k != only_type)
    fmt = max(0, 30 - 10 * others)
    if others:
        deductions.append(f"{others} line(s) of other kinds in /only:{only_type}")

    if len(items) >= 2:
        pairs = non_diverse_pairs(items, diversity_threshold(base_query) if v2 else 2)
        diversity = 15 + max(0, 15 - 5 * pairs)
        if pairs:
            deductions.append(f"{pairs} {only_type} pair(s) too similar")
    else:
        diversity = 15
    echoing = [item for item in items if echoes(item, base_query)]
    diversity = max(0, diversity - 5 * len(echoing))
    deductions.extend(f"{only_type} echoes query: {_short(item)}" for item in echoing)

    quality = 10
    if only_type == "lex":
        terms = key_terms(base_query, rubric)
        if all(keeps_key_terms(item, terms) for item in items):
            quality += 5
        else:
            deductions.append("some lex lines miss the query's key terms")
        generic = [item for item in items if is_generic(item)]
        if not generic:
            quality += 5
        deductions.extend(f"generic lex: {_short(item)}" for item in generic)
        if v2:
            quality += _filler_penalty(items, base_query, deductions)
    elif only_type == "vec":
        unnatural = [item for item in items if not is_natural(item)]
        quality += 5 if unnatural else 10
        deductions.extend(f"vec not natural language: {_short(v)}" for v in unnatural)
    else:
        length = len(items[0])
        if 50 <= length <= 200:
            quality += 10
        elif 30 <= length <= 300:
            quality += 5
            deductions.append(f"hyde length {length} outside 50-200")
        else:
            deductions.append(f"hyde length {length} outside 30-300")

    entities = extract_entities(base_query, rubric)
    if entities:
        with_entity = sum(1 for item in items if has_entity(item, entities))
        if with_entity == len(items):
            entity = 20
        elif with_entity:
            entity = 15
            deductions.append(f"some {only_type} lines miss entities ({', '.join(sorted(entities))})")
        else:
            entity = 0
            deductions.append(f"no {only_type} line keeps entities ({', '.join(sorted(entities))})")
    else:
        entity = 10

    think = 0 if used_thinking else 20
    if used_thinking:
        deductions.append("used <think> block")
    total = fmt + diversity + quality + entity + think
    percentage = round(max(0.0, min(100.0, total / 120 * 100)), 1)
    return Score(
        percentage=percentage,
        rating=rating_for(percentage),
        total=float(max(0, total)),
        max_score=120,
        dimensions={
            "format": float(fmt),
            "diversity": float(diversity),
            "hyde": 0.0,
            "quality": float(quality),
            "entity": float(entity),
            "think": float(think),
        },
        deductions=deductions,
        lex=parsed["lex"],
        vec=parsed["vec"],
        hyde=parsed["hyde"],
        only_type=only_type,
        used_thinking=used_thinking,
        rubric=rubric,
    )


def reward(query: str, text: str, rubric: str | None = None, *, version: str | None = None) -> float:
    """The RL reward: percentage / 100 (the echo cap applies)."""
    return score(query, text, rubric, version=version).percentage / 100


# ---------------------------------------------------------------- TRL GRPO reward function

_PROMPT_QUERY_RE = re.compile(
    r"(?:expand this search query|query)\s*:\s*(.+?)\s*$", re.IGNORECASE | re.DOTALL
)


def query_from_prompt(prompt: Any) -> str:
    """Extract the user's query from a plain or conversational prompt.

    Our prompts end in ``... search query: {query}``; a conversational prompt is a list of
    ``{"role", "content"}`` messages and the last user message is used.
    """
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1] if users else ""
    else:
        text = str(prompt)
    text = text.replace("<|im_end|>", "")
    text = re.sub(r"<\|im_start\|>\w*", "", text).strip()
    text = text.replace("/no_think", "").strip()
    match = _PROMPT_QUERY_RE.search(text.splitlines()[-1] if text else "")
    if match:
        return match.group(1).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def completion_text(completion: Any) -> str:
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def grpo_reward_for(rubric: str = DEFAULT_RUBRIC) -> Callable[..., list[float]]:
    """A TRL ``GRPOTrainer`` reward function scoring with ``rubric`` (the GRPO config's key)."""
    rubric = check_rubric(rubric)

    def qmd_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        # When the dataset has a ``query`` column TRL passes it in ``kwargs``; it wins over parsing.
        queries = kwargs.get("query")
        rewards = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            query = queries[i] if queries else query_from_prompt(prompt)
            rewards.append(reward(query, completion_text(completion), rubric))
        return rewards

    return qmd_reward


grpo_reward = grpo_reward_for(DEFAULT_RUBRIC)
grpo_reward.__doc__ = (
    "A TRL ``GRPOTrainer`` reward function (default rubric); plain and conversational samples."
)


# ---------------------------------------------------------------- batch path
#
# The per-row path is ``score(query, render(items))``. The batch path gives the same
# results faster: identical (query, output) rows are grouped inside polars and scored
# once, items are rendered by polars expressions instead of Python, the distinct pairs are
# scored by forked worker processes that read them from memory shared at fork time, and
# deductions travel back as one joined string per row.

_DEDUCTION_SEP = "\x1f"
_BATCH_PAIRS: list[tuple[str, str]] = []


def _score_compact(pair: tuple[str, str], rubric: str) -> tuple[float, str, str]:
    s = score(*pair, rubric)
    return s.percentage, s.rating, _DEDUCTION_SEP.join(s.deductions)


def _score_range(bounds: tuple[int, int, str]) -> list[tuple[float, str, str]]:
    start, stop, rubric = bounds
    return [_score_compact(pair, rubric) for pair in _BATCH_PAIRS[start:stop]]


def _score_distinct(
    pairs: list[tuple[str, str]], workers: int | None, rubric: str
) -> list[tuple[float, str, str]]:
    global _BATCH_PAIRS
    workers = workers or min(os.cpu_count() or 1, 8)
    import multiprocessing as mp

    if workers <= 1 or len(pairs) < 4000 or "fork" not in mp.get_all_start_methods():
        return [_score_compact(pair, rubric) for pair in pairs]
    size = max(1000, len(pairs) // (workers * 8))
    bounds = [(i, min(i + size, len(pairs)), rubric) for i in range(0, len(pairs), size)]
    _BATCH_PAIRS = pairs
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            return [r for chunk in pool.imap(_score_range, bounds) for r in chunk]
    finally:
        _BATCH_PAIRS = []


def score_pairs(
    pairs: Sequence[tuple[str, str]], workers: int | None = None, rubric: str = DEFAULT_RUBRIC
) -> list[tuple[float, str, list[str]]]:
    """Score many (query, text) pairs: identical pairs once, the rest across processes."""
    rubric = check_rubric(rubric)
    unique: dict[tuple[str, str], int] = {}
    for pair in pairs:
        unique.setdefault(pair, len(unique))
    results = _score_distinct(list(unique), workers, rubric)
    out = []
    for pair in pairs:
        percentage, rating, deductions = results[unique[pair]]
        out.append((percentage, rating, deductions.split(_DEDUCTION_SEP) if deductions else []))
    return out


def render_items(items: Iterable[Sequence[str]]) -> str:
    return render([(k, t) for k, t in items])


def render_expr(output: Any = None) -> Any:
    """Polars expression rendering an ``output`` list column as canonical text (see records.render)."""
    import polars as pl

    column = pl.col("output") if output is None else output
    parts = [
        column.list.eval(pl.element().filter(pl.element().list.get(0, null_on_oob=True) == kind))
        for kind in ("hyde", "lex", "vec")
    ]
    ordered = pl.concat_list(parts)
    lines = ordered.list.eval(
        pl.concat_str(
            pl.element().list.get(0, null_on_oob=True),
            pl.lit(": "),
            pl.element().list.get(1, null_on_oob=True),
        )
    )
    return lines.list.join("\n")


def score_frame(frame: Any, workers: int | None = None, rubric: str = DEFAULT_RUBRIC) -> Any:
    """Add ``score``, ``rating`` and ``deductions`` columns to a polars frame of records."""
    import polars as pl

    rubric = check_rubric(rubric)
    if frame.height == 0:
        return frame.with_columns(
            pl.lit(None, pl.Float64).alias("score"),
            pl.lit(None, pl.Utf8).alias("rating"),
            pl.lit(None, pl.List(pl.Utf8)).alias("deductions"),
        )
    distinct = (
        frame.select("query", "output")
        .with_row_index("_row")
        .group_by("query", "output", maintain_order=True)
        .agg(pl.col("_row"))
        .with_columns(render_expr().alias("_text"))
    )
    pairs = list(zip(distinct.get_column("query").to_list(), distinct.get_column("_text").to_list()))
    results = _score_distinct(pairs, workers, rubric)
    scored = pl.DataFrame(
        {
            "_row": distinct.get_column("_row"),
            "score": [r[0] for r in results],
            "rating": [r[1] for r in results],
            "_deductions": [r[2] for r in results],
        },
        schema={"_row": pl.List(pl.UInt32), "score": pl.Float64, "rating": pl.Utf8, "_deductions": pl.Utf8},
    )
    per_row = (
        scored.explode("_row")
        .sort("_row")
        .select(
            "score",
            "rating",
            pl.when(pl.col("_deductions") == "")
            .then(pl.lit([], pl.List(pl.Utf8)))
            .otherwise(pl.col("_deductions").str.split(_DEDUCTION_SEP))
            .alias("deductions"),
        )
    )
    return pl.concat([frame.drop("score", "rating", "deductions", strict=False), per_row], how="horizontal")
