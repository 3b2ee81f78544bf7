"""The quality gate: degenerate answers fail whatever the rubric says.

A rubric rates how good an answer is; the gate says whether it is an answer at all. Small
models and templates produce answers a rubric still rates 50-70%: 49 identical ``vec:``
lines, the prompt's own example copied verbatim, a lex line about another topic. Clean,
``generate expand`` and the eval report share these pure functions, so the three agree.

Each failure is one :class:`Failure` with a rule name (see :data:`GATE_RULES`) and a
reason string ``"<rule>: <detail>"`` (what the rejects ledger records).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qmd_finetune.records import ONLY_RE, parse_prefixed
from qmd_finetune.reward import echoes, key_terms

GATE_RULES: tuple[str, ...] = (
    "repeated_lines",
    "too_many_items",
    "other_kinds",
    "missing_vec",
    "all_echo",
    "lex_off_topic",
    "prompt_copy",
)
"""Every check, in the order failures are reported."""

LIMITS: dict[str, tuple[int, int]] = {"hyde": (0, 1), "lex": (1, 3), "vec": (1, 3)}
"""Items per kind the answer format allows (reward-spec 1.1): at most 1 hyde, 1-3 lex, 1-3 vec."""

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
_LINE_RE = re.compile(r"^\s*(hyde|lex|vec)\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_QUERY_RE = re.compile(r"^\s*query\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_WORD_RE = re.compile(r"[a-z0-9]+")
_MIN_STEM = 4
_MIN_CONTAINED = 30


@dataclass(frozen=True)
class Failure:
    rule: str
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass(frozen=True)
class PromptLines:
    """The answer lines and queries a prompt shows; a generated line equal to one is a copy."""

    lines: frozenset[str]
    queries: frozenset[str]
    long_lines: tuple[str, ...]


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?")


def prompt_lines(texts: Iterable[str]) -> PromptLines:
    """The ``kind: text`` lines and ``Query:`` lines of prompt texts (format template and few-shot examples)."""
    lines: set[str] = set()
    queries: set[str] = set()
    for text in texts:
        lines.update(_norm(m.group(2)) for m in _LINE_RE.finditer(text))
        for match in _QUERY_RE.finditer(text):
            query = _norm(match.group(1))
            queries.add(query)
            lines.add(query)
            lines.add(_norm(ONLY_RE.sub("", query)))
    long_lines = tuple(sorted(line for line in lines if len(line) >= _MIN_CONTAINED))
    return PromptLines(frozenset(lines), frozenset(_norm(ONLY_RE.sub("", q)) for q in queries), long_lines)


@lru_cache(maxsize=1)
def default_prompt_lines() -> PromptLines:
    """The lines of the packaged prompts (``qmd_finetune/prompts/*.txt``)."""
    return prompt_lines(p.read_text(encoding="utf-8") for p in sorted(PROMPTS_DIR.glob("*.txt")))


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _related(word: str, part: str) -> bool:
    if word == part:
        return True
    if min(len(word), len(part)) < _MIN_STEM:
        return False
    # a shared stem: "feed"/"feeding", "sustainably"/"sustainable", "socket"/"websocket"
    return word.startswith(part) or part.startswith(word) or word[:5] == part[:5] or part in word


def shares_key_term(line: str, terms: Iterable[str], query: str = "") -> bool:
    """A word of ``line`` shares a stem with a key term, or joins two adjacent query words
    ("web socket" -> "websocket"); punctuation is ignored ("docker-compose")."""
    words = _words(line)
    parts = [part for term in terms for part in _words(term)]
    if any(_related(word, part) for part in parts for word in words):
        return True
    query_words = _words(query)
    joined = {a + b for a, b in zip(query_words, query_words[1:])}
    return not joined.isdisjoint(words)


def check(
    query: str,
    items: Sequence[Sequence[str]],
    *,
    checks: Iterable[str] | None = None,
    prompt: PromptLines | None = None,
) -> list[Failure]:
    """The gate's failures for one answer (``[[kind, text], ...]``) to ``query``; empty means it passes.

    ``checks`` limits the rules run (default: all of :data:`GATE_RULES`); ``prompt`` the prompt
    whose examples must not be copied (default: the packaged prompts).
    """
    wanted = set(GATE_RULES if checks is None else checks)
    unknown = wanted - set(GATE_RULES)
    if unknown:
        raise ValueError(
            f"unknown quality gate rule(s) {', '.join(sorted(unknown))} (known: {', '.join(GATE_RULES)})"
        )
    match = ONLY_RE.search(query)
    only = match.group(1).lower() if match else None
    base = query[: match.start()].strip() if match else query.strip()
    pairs = [(str(kind).lower(), str(text).strip()) for kind, text in items]
    by_kind: dict[str, list[str]] = {"hyde": [], "lex": [], "vec": []}
    for kind, text in pairs:
        by_kind.setdefault(kind, []).append(text)
    failures: list[Failure] = []

    if "repeated_lines" in wanted:
        counts = Counter((kind, _norm(text)) for kind, text in pairs)
        repeated = [(key, n) for key, n in counts.items() if n > 1]
        if repeated:
            (kind, text), n = max(repeated, key=lambda kv: kv[1])
            failures.append(Failure("repeated_lines", f"{kind}: {_short(text)} x{n}"))
    if "too_many_items" in wanted:
        over = [
            f"{len(by_kind[kind])} {kind} (max {LIMITS[kind][1]})"
            for kind in ("hyde", "lex", "vec")
            if (only is None or kind == only) and len(by_kind[kind]) > LIMITS[kind][1]
        ]
        if over:
            failures.append(Failure("too_many_items", ", ".join(over)))
    if "other_kinds" in wanted and only is not None:
        others = sorted({kind for kind, _ in pairs if kind != only})
        if others:
            failures.append(Failure("other_kinds", f"{', '.join(others)} in /only:{only}"))
    if "missing_vec" in wanted and only is None and not by_kind["vec"]:
        failures.append(Failure("missing_vec", "normal-mode answer without vec"))
    if "all_echo" in wanted:
        lines = [text for kind, text in pairs if kind in ("lex", "vec")]
        if lines and all(echoes(text, base) for text in lines):
            failures.append(Failure("all_echo", f"every lex/vec line echoes the query ({len(lines)})"))
    if "lex_off_topic" in wanted and by_kind["lex"]:
        terms = key_terms(base)
        # Every lex line, not any: synonym lines ("401k enrollment" for "start a 401(k)") are good.
        if terms and not any(shares_key_term(text, terms, base) for text in by_kind["lex"]):
            failures.append(
                Failure("lex_off_topic", f"no lex line holds a key term: {_short(by_kind['lex'][0])}")
            )
    if "prompt_copy" in wanted:
        copied = _copied(base, pairs, prompt or default_prompt_lines())
        if copied:
            failures.append(Failure("prompt_copy", f"{copied[0]}: {_short(copied[1])}"))
    return failures


def _copied(base: str, pairs: list[tuple[str, str]], prompt: PromptLines) -> tuple[str, str] | None:
    if _norm(base) in prompt.queries:
        return None  # the prompt's own example query: its example answer is a fair answer
    for kind, text in pairs:
        line = _norm(text)
        if line in prompt.lines or "/only:" in line or any(long in line for long in prompt.long_lines):
            return kind, text
    return None


def check_text(
    query: str, text: str, *, checks: Iterable[str] | None = None, prompt: PromptLines | None = None
) -> list[Failure]:
    """:func:`check` on a raw answer (``kind: text`` lines; lines without a prefix are the rubric's business)."""
    items, _ = parse_prefixed(text)
    return check(query, items, checks=checks, prompt=prompt)


def reasons(failures: Iterable[Failure]) -> list[str]:
    return [f.reason for f in failures]


def rule_of(reason: str) -> str:
    """The rule name of a reason string (``"repeated_lines: vec: x x49"`` -> ``"repeated_lines"``)."""
    return reason.split(":", 1)[0]


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


TEMPLATE_MIN_QUERIES = 3
"""A hyde passage is a template when this many distinct queries of one batch of answers share
it. 3 of the 36 eval queries: two answers can share a phrase by chance, three near-identical
passages of 8+ words of their own do not (measured: a raw-data model wrote one passage for 25
of the 36 eval queries, the curated and base models none)."""
TEMPLATE_MIN_WORDS = 8
"""Signatures shorter than this (words of the passage not in its query) are never templates:
short passages share their few extra words by chance."""
TEMPLATE_SIMILARITY = 0.8
"""Two signatures are one template at this Jaccard similarity or more. Not 1.0: the query's own
words leave the signature, so "ideas for new feature" takes "for" out of the template's
"tips for beginners" (23 of 24 words shared)."""


def template_signature(query: str, text: str) -> frozenset[str] | None:
    """The words of ``text``'s first hyde passage that are not words of its base query.

    ``None`` when there is no hyde line or the signature is under :data:`TEMPLATE_MIN_WORDS`.
    "This comprehensive guide covers everything you need to know about X. ..." has one
    signature whatever X is: it is the answer written without reading the query."""
    items, _ = parse_prefixed(text)
    hyde = next((t for k, t in items if k == "hyde"), None)
    if hyde is None:
        return None
    base = ONLY_RE.sub("", query)
    own = frozenset(_words(hyde)) - set(_words(base))
    return own if len(own) >= TEMPLATE_MIN_WORDS else None


def template_answers(
    answers: Sequence[tuple[str, str]],
    min_queries: int = TEMPLATE_MIN_QUERIES,
    similarity: float = TEMPLATE_SIMILARITY,
) -> list[bool]:
    """Per ``(query, text)`` answer: is its hyde a template that ``min_queries`` or more
    distinct queries of this batch share (signatures at ``similarity`` Jaccard or more)?

    A judgement over the set of answers, as clean's ``boilerplate`` rule makes over a dataset:
    the rubric scores one answer at a time and rates a fluent template 80-90%; only the set
    shows that the passage never depended on the query. Pairwise, so meant for eval-sized
    batches (500 answers: about 125,000 set comparisons)."""
    signatures = [template_signature(q, t) for q, t in answers]
    bases = [ONLY_RE.sub("", q).strip().lower() for q, _ in answers]
    out = []
    for i, sig in enumerate(signatures):
        if sig is None:
            out.append(False)
            continue
        sharing = {bases[i]}
        for j, other in enumerate(signatures):
            if (
                other is not None
                and bases[j] not in sharing
                and len(sig & other) >= similarity * len(sig | other)
            ):
                sharing.add(bases[j])
        out.append(len(sharing) >= min_queries)
    return out
