"""The GEPA metric: the reward as score, its deductions plus concrete hints as feedback.

A reply is judged the way a generated record would be: parsed tolerantly (prefixed lines, a JSON
list of pairs, a JSON object), rendered canonically and scored by :func:`qmd_finetune.reward.score`.
A reply with no usable line scores 0 (the rubric would give an empty text 50%).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy

from qmd_finetune.gepa.program import parse_items
from qmd_finetune.records import Item, only_mode, parse_prefixed, render
from qmd_finetune.reward import (
    DEFAULT_RUBRIC,
    DIMENSIONS,
    Score,
    check_rubric,
    echoes,
    extract_entities,
    has_entity,
    score,
)

SHAPE_EXAMPLE = (
    "hyde: <one sentence of 50-200 characters that answers the query>\n"
    "lex: <short keywords that keep the query's names>\n"
    "lex: <different keywords>\n"
    "vec: <a natural-language question or sentence>\n"
    "vec: <another rephrasing>"
)


@dataclass
class Judgement:
    """One reply to one query: what was parsed, what was dropped, and its score."""

    query: str
    raw: str
    items: list[Item]
    score: Score
    parse_error: str | None = None
    stray_lines: list[str] = field(default_factory=list)

    @property
    def percentage(self) -> float:
        return self.score.percentage

    @property
    def text(self) -> str:
        return render(self.items)


def _no_items(reason: str, only_type: str | None, rubric: str) -> Score:
    return Score(
        percentage=0.0,
        rating="Failed",
        total=0.0,
        max_score=120 if only_type else 100,
        dimensions=dict.fromkeys(DIMENSIONS, 0.0),
        deductions=[reason],
        only_type=only_type,
        hard_failure=reason,
        rubric=rubric,
    )


def judge(query: str, raw: str, rubric: str = DEFAULT_RUBRIC) -> Judgement:
    """Parse and score one reply under ``rubric``."""
    raw = raw or ""
    items, error = parse_items(raw)
    stray: list[str] = []
    if raw.strip()[:1] not in ("[", "{"):
        stray = [line for line in parse_prefixed(raw)[1] if not line.startswith("```")]
    if not items:
        reason = "empty reply" if not raw.strip() else (error or "no lex:/vec:/hyde: lines")
        return Judgement(
            query, raw, [], _no_items(reason, only_mode(query)[1], rubric), error or reason, stray
        )
    return Judgement(query, raw, items, score(query, render(items), rubric), None, stray)


def _quote(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def hints(j: Judgement) -> list[str]:
    """Concrete, query-specific advice the deductions alone do not spell out."""
    out: list[str] = []
    base, only_type = only_mode(j.query)
    s = j.score
    if not j.items:
        if j.raw.strip():
            out.append(
                f"The reply had no line starting with 'hyde:', 'lex:' or 'vec:'. It began: {_quote(j.raw)}"
            )
        else:
            out.append("The reply was empty.")
        if only_type:
            out.append(f"This query ends in /only:{only_type}: answer with '{only_type}:' lines only.")
        else:
            out.append("Answer with nothing but lines of this shape:\n" + SHAPE_EXAMPLE)
        return out
    if j.stray_lines:
        out.append(
            f"{len(j.stray_lines)} line(s) without a hyde:/lex:/vec: prefix were dropped, "
            f"e.g. {_quote(j.stray_lines[0])}; write no other text."
        )
    entities = sorted(extract_entities(base, s.rubric))
    if entities:
        kinds = [only_type] if only_type else ["lex"]
        for kind in kinds:
            missing = [text for k, text in j.items if k == kind and not has_entity(text, set(entities))]
            for text in missing:
                out.append(f"{kind} line {_quote(text)} lacks the query's names ({', '.join(entities)}).")
        if not only_type and s.vec and not any(has_entity(v, set(entities)) for v in s.vec):
            out.append(f"No vec line mentions {', '.join(entities)}.")
    for kind in ("lex", "vec", "hyde"):
        for text in getattr(s, kind):
            if echoes(text, base):
                out.append(
                    f"{kind} line {_quote(text)} just repeats the query; change or add at least two words."
                )
    if not only_type or only_type == "hyde":
        for text in s.hyde[:1]:
            length = len(text)
            if not 50 <= length <= 200:
                out.append(
                    f"The hyde line is {length} characters; make it one sentence of 50-200 characters."
                )
    if only_type:
        others = [k for k, _ in j.items if k != only_type]
        if others:
            out.append(
                f"/only:{only_type} asks for '{only_type}:' lines only; drop the {', '.join(sorted(set(others)))} lines."
            )
    else:
        if not s.lex:
            out.append("Add 1-3 'lex:' lines: short keyword phrases.")
        if not s.vec:
            out.append("Add 1-3 'vec:' lines: natural-language questions or sentences (over 15 characters).")
        if not s.hyde:
            out.append("Start with one 'hyde:' line: a 50-200 character sentence that answers the query.")
    return out


def feedback_text(j: Judgement) -> str:
    s = j.score
    lines = [f"Score {s.percentage:.1f}% ({s.rating}) for query {j.query!r}."]
    if s.deductions:
        lines.append("Deductions: " + "; ".join(s.deductions) + ".")
    extra = hints(j)
    if extra:
        lines.append("Hints:")
        lines.extend(f"- {h}" for h in extra)
    if not s.deductions and not extra:
        lines.append("Nothing to fix.")
    return "\n".join(lines)


def query_of(gold: Any) -> str:
    return gold["query"] if isinstance(gold, dict) else gold.query


def expansion_of(pred: Any) -> str:
    if pred is None:
        return ""
    value = pred.get("expansion") if isinstance(pred, dict) else getattr(pred, "expansion", None)
    return value or ""


def metric_for(rubric: str = DEFAULT_RUBRIC) -> Callable[..., dspy.Prediction]:
    """The DSPy 3.x GEPA metric scoring with ``rubric``: ``score`` = reward percentage / 100,
    ``feedback`` from the deductions."""
    rubric = check_rubric(rubric)

    def gepa_metric(
        gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
    ) -> dspy.Prediction:
        j = judge(query_of(gold), expansion_of(pred), rubric)
        return dspy.Prediction(score=j.percentage / 100, feedback=feedback_text(j))

    return gepa_metric


gepa_metric = metric_for(DEFAULT_RUBRIC)
