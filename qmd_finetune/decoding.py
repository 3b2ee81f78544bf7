"""Format-safe decoding: generation that can only write the answer format, and stops after it.

A small model's most common failures are not about content: it writes chat-template markers,
lines with no ``hyde:``/``lex:``/``vec:`` prefix, twenty ``vec:`` lines, or keeps going after
the answer. ``FormatConstraint`` is a transformers ``LogitsProcessor`` with two modes.

``safe``: chat-template and other added special tokens are never sampled (the end-of-turn
token, which ends the answer, is the exception), and the answer ends after the format's
largest number of lines (7; 3 in only mode).

``strict`` adds, token by token:

- every line starts with a prefix the query allows (``hyde: ``, ``lex: ``, ``vec: ``; only the
  asked kind for ``/only:KIND``; hyde only as the first line), and no kind exceeds its count
  (hyde 1, lex 3, vec 3); blank lines are not allowed;
- a line may not end as a copy of an earlier line (case-insensitive), nor end empty, nor, for
  ``lex:`` and ``vec:``, as an echo of the query (the rubric's ``echoes``: the query plus fewer
  than 10 characters; BM25 already searches the query itself), so the model writes on;
- a ``lex:``/``vec:`` line may not grow into an earlier line of its kind: no token that would
  make it start with that line (case-insensitive). Without it the copy rule above turned copies
  into near-copies the rubric deducts ("auth login sign-up" then "auth login sign-up form": 21
  of 36 eval answers of the curated model had such a pair, 13 with the rule). Refusing to end
  any too-similar line was tried and dropped: it scored 0.7 points more but ran 6 lex lines on
  to 60-80 characters of loops ("docker compose docker compose-file create-docker-...");
- a line that reaches :data:`LINE_CHARS` must end;
- once no prefix is left, or the answer has lex and vec lines and a line ends, the model may
  end; when nothing more is allowed, the end-of-turn token is forced.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qmd_finetune.records import only_mode
from qmd_finetune.reward import echoes

LIMITS = {"hyde": 1, "lex": 3, "vec": 3}
LINE_CHARS = {"hyde": 300, "lex": 80, "vec": 160}
"""A line that reaches this many characters must end (strict): above the longest line of each
kind in the curated reference data (hyde 427 before trimming and 200 after, lex 64, vec 120),
so it only stops a runaway line (``cache: { cache: { ...`` to the token budget)."""
PREFIXES = ("hyde: ", "lex: ", "vec: ")
MODES = ("free", "safe", "strict")


def max_lines(query: str) -> int:
    _, only = only_mode(query)
    return LIMITS[only] if only else sum(LIMITS.values())


@dataclass
class LineState:
    """What the generated text so far allows next."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    partial: str = ""
    seen: set[str] = field(default_factory=set)
    contents: dict[str, list[str]] = field(default_factory=dict)
    """Per kind, the finished lines' text after the prefix, stripped and lower-cased."""


def read_state(text: str) -> LineState:
    state = LineState()
    *done, partial = text.split("\n")
    for line in done:
        kind = line.split(":", 1)[0].strip().lower()
        state.counts[kind] = state.counts.get(kind, 0) + 1
        state.lines += 1
        state.seen.add(line.strip().lower())
        state.contents.setdefault(kind, []).append(line.partition(":")[2].strip().lower())
    state.partial = partial
    return state


def allowed_prefixes(query: str, state: LineState) -> list[str]:
    """Line prefixes still allowed after the lines written so far."""
    _, only = only_mode(query)
    kinds = [only] if only else ["hyde", "lex", "vec"]
    out = []
    for kind in kinds:
        if state.counts.get(kind, 0) >= LIMITS[kind]:
            continue
        if kind == "hyde" and not only and state.lines:
            continue
        out.append(f"{kind}: ")
    return out


def may_end(query: str, state: LineState) -> bool:
    """The answer is complete enough to stop at a line boundary."""
    _, only = only_mode(query)
    if only:
        return state.counts.get(only, 0) >= 1
    return state.counts.get("lex", 0) >= 1 and state.counts.get("vec", 0) >= 1


def _starting_with(pieces: list[str], ids: dict[str, list[int]], rest: str) -> Iterator[int]:
    """Token ids of the ``pieces`` (sorted) that start with ``rest``: one range, found by bisection."""
    for piece in itertools.islice(pieces, bisect.bisect_left(pieces, rest), None):
        if not piece.startswith(rest):
            return
        yield from ids[piece]


class FormatConstraint:
    """A ``LogitsProcessor`` for a batch of queries (one per row, left-padded prompts)."""

    def __init__(self, tokenizer: Any, queries: list[str], prompt_width: int, mode: str = "strict") -> None:
        import torch

        if mode not in ("safe", "strict"):
            raise ValueError(f"decoding mode {mode!r} is not safe or strict")
        self.strict = mode == "strict"
        self.tokenizer = tokenizer
        self.queries = queries
        self.prompt_width = prompt_width
        self.eos = tokenizer.eos_token_id
        # a set: the tokenizer rebuilds added_tokens_decoder on every access (2 s per batch)
        self.added = set(tokenizer.added_tokens_decoder)
        size = max(len(tokenizer), max(self.added, default=0) + 1)
        self.pieces = [tokenizer.decode([i]) for i in range(size)]
        self.banned = torch.tensor(
            sorted(i for i in tokenizer.added_tokens_decoder if i != self.eos), dtype=torch.long
        )
        # Inside a line, a newline may only end it: no blank lines, no text after the break.
        self.bad_breaks = torch.tensor(
            [i for i, p in enumerate(self.pieces) if "\n" in p and p.index("\n") != len(p) - 1],
            dtype=torch.long,
        )
        self.breaks = torch.tensor(
            [i for i, p in enumerate(self.pieces) if p.endswith("\n")], dtype=torch.long
        )
        self._prefix_cache: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        # the pieces a line may hold (no newline, no added token), by text and sorted
        self._line_pieces = [
            (i, p) for i, p in enumerate(self.pieces) if p and "\n" not in p and i not in self.added
        ]
        self._by_piece: dict[str, list[int]] = {}
        for i, piece in self._line_pieces:
            self._by_piece.setdefault(piece, []).append(i)
        self._sorted = sorted(self._by_piece)
        self._by_lower: dict[str, list[int]] = {}
        for i, piece in self._line_pieces:
            self._by_lower.setdefault(piece.lower(), []).append(i)
        self._sorted_lower = sorted(self._by_lower)
        self._completing_cache: dict[str, list[int]] = {}

    def _completing(self, rest: str) -> list[int]:
        """Tokens whose lower-cased piece starts with ``rest``: the ones that would finish it."""
        if rest not in self._completing_cache:
            self._completing_cache[rest] = list(_starting_with(self._sorted_lower, self._by_lower, rest))
        return self._completing_cache[rest]

    def _tokens_for(self, partial: str, prefixes: tuple[str, ...]) -> list[int]:
        """Tokens that keep ``partial`` on the way to (or past) one of ``prefixes``, on one line.

        With ``rest`` the part of a prefix still to write, a piece qualifies when it is a
        prefix of ``rest`` (a dictionary look-up per length) or starts with ``rest`` (a range
        of the sorted pieces): no scan of the vocabulary per new partial line."""
        key = (partial, prefixes)
        if key not in self._prefix_cache:
            ok: set[int] = set()
            for prefix in prefixes:
                if not prefix.startswith(partial):
                    ok.update(i for i, p in self._line_pieces if (partial + p).startswith(prefix))
                    continue
                rest = prefix[len(partial) :]
                for end in range(1, len(rest) + 1):
                    ok.update(self._by_piece.get(rest[:end], ()))
                ok.update(_starting_with(self._sorted, self._by_piece, rest))
            self._prefix_cache[key] = sorted(ok)
        return self._prefix_cache[key]

    def _end_line(self, scores: Any, row: int, may_stop: bool) -> None:
        """Only a line break (or, when the answer may end, the end-of-turn token) is allowed."""
        import torch

        index = self.breaks if not may_stop else torch.cat([self.breaks, torch.tensor([self.eos])])
        keep = torch.full_like(scores[row], -float("inf"))
        keep[index] = scores[row, index]
        scores[row] = keep

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.banned.numel():
            scores[:, self.banned] = -float("inf")
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.prompt_width :], skip_special_tokens=False)
            if self.tokenizer.eos_token and self.tokenizer.eos_token in text:
                continue
            query = self.queries[row]
            state = read_state(text)
            if not self.strict:
                if not state.partial and state.lines >= max_lines(query):
                    scores[row] = torch.where(
                        torch.arange(scores.shape[1], device=scores.device) == self.eos,
                        scores[row, self.eos],
                        torch.tensor(-float("inf"), device=scores.device),
                    )
                continue
            prefixes = tuple(allowed_prefixes(query, state))
            if any(state.partial.startswith(p) for p in PREFIXES):
                scores[row, self.bad_breaks] = -float("inf")
                kind, _, content = state.partial.partition(": ")
                if len(content) >= LINE_CHARS[kind]:
                    self._end_line(scores, row, may_end(query, read_state(text + "\n")))
                    continue
                if kind in ("lex", "vec"):
                    low = content.lower()
                    for earlier in state.contents.get(kind, ()):
                        if earlier.startswith(low) and len(earlier) > len(low):
                            banned = self._completing(earlier[len(low) :])
                            if banned:
                                scores[row, banned] = -float("inf")
                if (
                    state.partial in PREFIXES
                    or state.partial.strip().lower() in state.seen
                    or (kind != "hyde" and echoes(content.strip(), only_mode(query)[0]))
                ):
                    scores[row, self.breaks] = -float("inf")
                    scores[row, self.eos] = -float("inf")
                elif not may_end(query, read_state(text + "\n")):
                    scores[row, self.eos] = -float("inf")
                continue
            allowed = list(self._tokens_for(state.partial, prefixes)) if prefixes else []
            if not state.partial and may_end(query, state):
                allowed.append(self.eos)
            if not allowed:
                allowed = [self.eos]
            keep = torch.full_like(scores[row], -float("inf"))
            index = torch.tensor(allowed, dtype=torch.long, device=scores.device)
            keep[index] = scores[row, index]
            scores[row] = keep
        return scores
