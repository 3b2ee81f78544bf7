"""``--reflection-model rubric``: a deterministic, rubric-guided instruction proposer.

Not a language model. A 135M model cannot reflect (its proposals are junk), so offline GEPA needs
a proposer that needs none: this one re-judges the minibatch GEPA hands it, counts which rubric
deductions occurred, and edits the instruction with fixed rules for the most frequent ones (plus a
worked example when the format itself failed). GEPA still does the rest: sampling minibatches,
accepting an edit only when it scores better, tracking the Pareto front on the validation set.
It implements GEPA's ``ProposalFn`` protocol (``dspy.GEPA(instruction_proposer=...)``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmd_finetune.gepa.metric import Judgement, judge
from qmd_finetune.gepa.program import QUERY_PLACEHOLDER
from qmd_finetune.reward import DEFAULT_RUBRIC

LABEL = "rubric (deterministic rule-based proposer, no language model)"

# Category -> the instruction rule that addresses it. Order is the tie-break priority.
RULES: dict[str, str] = {
    "format": (
        "Reply with nothing but expansion lines. Every line starts with 'hyde:', 'lex:' or 'vec:'; "
        "no introduction, numbering, quotes or explanation."
    ),
    "only": (
        "If the query ends with /only:lex, /only:vec or /only:hyde, write only lines of that kind, "
        "and never copy the /only suffix into them."
    ),
    "entities": (
        "Copy the names in the query (products, people, places, acronyms, versions) into every lex "
        "line and into at least one vec line."
    ),
    "echo": (
        "Never repeat the query as a line: each lex or vec line changes or adds at least two words "
        "(synonyms, related terms, context)."
    ),
    "lex": "Write 1-3 'lex:' lines: short keyword phrases for a keyword (BM25) search.",
    "vec": "Write 1-3 'vec:' lines: natural-language questions or sentences longer than 15 characters.",
    "hyde": (
        "Begin with exactly one 'hyde:' line: a single sentence that reads like a passage answering "
        "the query."
    ),
    "hyde_length": "Keep the hyde sentence between 50 and 200 characters, on one line.",
    "generic": (
        "Never write generic lex lines such as 'search for', 'information about' or 'how to'; "
        "use specific keywords."
    ),
    "key_terms": "Every lex line keeps at least one important word of the query.",
    "diverse": (
        "Make each lex line differ from the other lex lines by at least two words, and each vec line "
        "from the other vec lines by at least three words."
    ),
    "lex_short": "Keep lex lines shorter than vec lines: lex is a few keywords, vec is a full sentence.",
    "vec_natural": "Write vec lines as full sentences with several words, never single keywords.",
    "repeat": "Do not use any word more than twice in the hyde sentence.",
    "count": "Write at least two lex or vec lines in total.",
    "think": "Do not write <think> blocks or reasoning; answer directly.",
}
PRIORITY = list(RULES)

# Worked examples (query, answer). In a prompt file they become a ``## Examples`` block, which
# ``generate expand`` (and this program) send as a user/assistant turn: small models follow a
# demonstrated turn far better than prose. Template prompts (with ``{query}``) get them inline.
EXAMPLE = (
    "ssh key authentication",
    "hyde: Create a key pair with ssh-keygen and add the public key to authorized_keys on the server.\n"
    "lex: ssh keygen authorized_keys setup\n"
    "lex: passwordless ssh login keygen\n"
    "vec: how do I set up ssh key based authentication\n"
    "vec: steps to configure ssh keys for secure server access",
)
ONLY_EXAMPLE = (
    "ssh key authentication /only:lex",
    "lex: ssh keygen authorized_keys setup\nlex: passwordless ssh login keygen",
)
EXAMPLES = {"format": EXAMPLE, "only": ONLY_EXAMPLE}
EXAMPLES_HEADER = "## Examples"
_EXAMPLES_RE = re.compile(r"^##\s*examples\s*$", re.IGNORECASE | re.MULTILINE)


def demo_block(example: tuple[str, str]) -> str:
    return f"Query: {example[0]}\n{example[1]}"


def inline_block(example: tuple[str, str]) -> str:
    return f"Example for the query: {example[0]}\n{example[1]}"


RULES_HEADER = "Rules:"
EMPHASIS_PREFIX = "Most important: "

_DEDUCTION_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("chat template leakage", "format"),
    ("invalid line", "format"),
    ("empty reply", "format"),
    ("no lex:/vec:/hyde:", "format"),
    ("(only-mode)", "only"),
    ("of other kinds in /only", "only"),
    ("missing lex:", "lex"),
    ("missing vec:", "vec"),
    ("missing hyde:", "hyde"),
    ("fewer than 2", "count"),
    ("too similar", "diverse"),
    ("echoes query", "echo"),
    ("hyde too", "hyde_length"),
    ("hyde length", "hyde_length"),
    ("repeats words", "repeat"),
    ("longer than vec", "lex_short"),
    ("not natural language", "vec_natural"),
    ("key terms", "key_terms"),
    ("entities", "entities"),
    ("keeps an entity", "entities"),
    ("generic lex", "generic"),
    ("<think>", "think"),
)


def categories(j: Judgement) -> set[str]:
    """The rubric problems one judged reply shows, as rule categories."""
    found: set[str] = set()
    for deduction in j.score.deductions:
        for needle, category in _DEDUCTION_CATEGORIES:
            if needle in deduction:
                found.add(category)
                break
    if j.stray_lines:
        found.add("format")
    if j.score.only_type and "format" in found and j.items == []:
        found.add("only")
    return found


@dataclass
class Instruction:
    """An instruction as the proposer edits it; parse -> render keeps the author's text in place.

    The paragraphs (split on blank lines) stay in order; the ``Rules:`` paragraph (the first one,
    or a new one after the existing text) holds ``- `` lines; an emphasis line goes after the text;
    a final paragraph with ``{query}`` stays last; the ``## Examples`` section stays at the end.
    """

    paragraphs: list[str]
    rules: list[str] = field(default_factory=list)
    rules_at: int = 0
    inline: list[str] = field(default_factory=list)
    emphasis: str | None = None
    tail: str = ""
    demos: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Instruction:
        text = text.strip()
        demos: list[str] = []
        match = _EXAMPLES_RE.search(text)
        if match:
            demos = [block.strip() for block in re.split(r"\n\s*\n", text[match.end() :]) if block.strip()]
            text = text[: match.start()].strip()
        chunks = [p.strip("\n") for p in text.split("\n\n") if p.strip()]
        tail = chunks.pop() if len(chunks) > 1 and QUERY_PLACEHOLDER in chunks[-1] else ""
        inst = cls(paragraphs=[], tail=tail, demos=demos)
        inline_examples = {inline_block(e) for e in EXAMPLES.values()}
        rules_seen = False
        for chunk in chunks:
            if chunk.startswith(RULES_HEADER + "\n") and not rules_seen:
                rules_seen = True
                inst.rules_at = len(inst.paragraphs)
                for line in chunk.splitlines()[1:]:
                    if line.startswith("- ") or not inst.rules:
                        inst.rules.append(line[2:] if line.startswith("- ") else line)
                    else:
                        inst.rules[-1] += "\n" + line
            elif chunk in inline_examples:
                inst.inline.append(chunk)
            elif chunk.startswith(EMPHASIS_PREFIX):
                inst.emphasis = chunk[len(EMPHASIS_PREFIX) :]
            else:
                inst.paragraphs.append(chunk)
        if not rules_seen:
            inst.rules_at = len(inst.paragraphs)
        return inst

    @property
    def is_template(self) -> bool:
        return bool(self.tail) or any(QUERY_PLACEHOLDER in p for p in self.paragraphs)

    def add_example(self, example: tuple[str, str]) -> bool:
        """Add a worked example (a demo turn, or inline for template prompts); False if present."""
        block, target = (
            (inline_block(example), self.inline) if self.is_template else (demo_block(example), self.demos)
        )
        if block in target:
            return False
        target.append(block)
        return True

    def render(self) -> str:
        parts = list(self.paragraphs[: self.rules_at])
        if self.rules:
            parts.append("\n".join([RULES_HEADER, *(f"- {rule}" for rule in self.rules)]))
        parts.extend(self.paragraphs[self.rules_at :])
        parts.extend(self.inline)
        if self.emphasis:
            parts.append(EMPHASIS_PREFIX + self.emphasis)
        if self.tail:
            parts.append(self.tail)
        if self.demos:
            parts.append(EXAMPLES_HEADER + "\n" + "\n\n".join(self.demos))
        return "\n\n".join(parts)


def rank(counts: Counter[str]) -> list[str]:
    return sorted(counts, key=lambda c: (-counts[c], PRIORITY.index(c)))


def edit_instruction(text: str, counts: Counter[str], max_new_rules: int = 2) -> tuple[str, list[str]]:
    """Apply the rubric's edits for the counted problems; returns the new text and what changed.

    In order of preference: add the rules (and examples) of the most frequent problems that are not
    in the instruction yet; else move the most frequent problem's rule to the front; else restate it
    as the instruction's last line. Returns the text unchanged when there is nothing to do.
    """
    inst = Instruction.parse(text)
    ranked = rank(counts)
    edits: list[str] = []
    for category in [c for c in ranked if RULES[c] not in inst.rules][:max_new_rules]:
        inst.rules.append(RULES[category])
        edits.append(f"add rule [{category}]")
        example = EXAMPLES.get(category)
        if example and inst.add_example(example):
            edits.append(f"add example [{category}]")
    if not edits and ranked:
        top = RULES[ranked[0]]
        if inst.rules and inst.rules[0] != top:
            inst.rules.remove(top)
            inst.rules.insert(0, top)
            edits.append(f"move rule first [{ranked[0]}]")
        elif inst.emphasis != top:
            inst.emphasis = top
            edits.append(f"emphasize [{ranked[0]}]")
    return inst.render(), edits


def _reply_text(outputs: Any) -> str:
    if isinstance(outputs, Mapping):
        return str(outputs.get("expansion") or "")
    text = str(outputs or "")
    # DSPy's wording for an unparseable reply: the raw text sits inside a fenced block.
    if "```" in text:
        inner = text.split("```", 2)
        if len(inner) == 3:
            return inner[1].strip("\n")
    return text


def _query_text(inputs: Any) -> str:
    if isinstance(inputs, Mapping):
        return str(inputs.get("query") or "")
    return str(inputs or "")


class RubricProposer:
    """GEPA ``ProposalFn``: aggregated deductions of a minibatch -> instruction edits."""

    def __init__(
        self, log_path: Path | None = None, max_new_rules: int = 2, rubric: str = DEFAULT_RUBRIC
    ) -> None:
        self.log_path = log_path
        self.max_new_rules = max_new_rules
        self.rubric = rubric
        self.history: list[dict[str, Any]] = []

    def __call__(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        proposals: dict[str, str] = {}
        for component in components_to_update:
            records = reflective_dataset.get(component) or []
            judged = [
                judge(_query_text(r.get("Inputs")), _reply_text(r.get("Generated Outputs")), self.rubric)
                for r in records
            ]
            counts: Counter[str] = Counter()
            for j in judged:
                counts.update(categories(j))
            new_text, edits = edit_instruction(candidate[component], counts, self.max_new_rules)
            proposals[component] = new_text
            entry = {
                "component": component,
                "minibatch": [{"query": j.query, "score": j.percentage} for j in judged],
                "problems": dict(counts.most_common()),
                "edits": edits,
            }
            self.history.append(entry)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")
        return proposals
