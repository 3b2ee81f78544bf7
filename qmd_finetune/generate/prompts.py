"""Versioned prompt files and how a query becomes chat messages.

A prompt file is plain UTF-8 text: the instructions (what ``gepa optimize --save-prompt``
writes). Two optional forms on top of that:

- a ``## Examples`` section at the end: blocks separated by blank lines, each a
  ``Query: <query>`` line followed by the expected answer lines; every block becomes a
  user/assistant turn pair (small models follow demonstrated turns far better than prose);
- a ``{query}`` placeholder: the whole text is then one user message with the query put in,
  instead of instructions as the system message and the query as the user message.

The sha256 of the file's bytes goes into every record's ``meta.prompt_sha``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_PROMPT = "expand_v1"
HYDE_PROMPT = "hyde_v1"
_EXAMPLES_RE = re.compile(r"^##\s*examples\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    sha: str
    instructions: str
    examples: tuple[tuple[str, str], ...]

    def messages(self, query: str) -> list[dict[str, Any]]:
        if "{query}" in self.instructions:
            return [{"role": "user", "content": self.instructions.replace("{query}", query)}]
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.instructions}]
        for example_query, answer in self.examples:
            messages.append({"role": "user", "content": example_query})
            messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": query})
        return messages


def parse_prompt(text: str, name: str) -> Prompt:
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    match = _EXAMPLES_RE.search(text)
    instructions, examples = text, ()
    if match:
        instructions = text[: match.start()]
        examples = tuple(_parse_examples(text[match.end() :]))
    instructions = instructions.strip()
    if not instructions:
        raise ValueError(f"prompt {name!r} has no instruction text")
    return Prompt(name=name, text=text, sha=sha, instructions=instructions, examples=examples)


def _parse_examples(section: str) -> list[tuple[str, str]]:
    examples = []
    for block in re.split(r"\n\s*\n", section.strip()):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if not lines:
            continue
        head = lines[0]
        if not head.lower().startswith("query:"):
            raise ValueError(f"example block must start with 'Query:', got {head[:60]!r}")
        answer = "\n".join(lines[1:])
        if not answer:
            raise ValueError(f"example {head!r} has no answer lines")
        examples.append((head.split(":", 1)[1].strip(), answer))
    return examples


def builtin_prompt_path(name: str = DEFAULT_PROMPT) -> Path:
    return PROMPTS_DIR / f"{name}.txt"


def load_prompt(path: str | Path | None = None, default: str = DEFAULT_PROMPT) -> Prompt:
    """Load ``path``, or the built-in prompt ``default`` (e.g. ``expand_v1``) when no path is given."""
    if path is None:
        file = builtin_prompt_path(default)
        name = default
    else:
        file = Path(path)
        if not file.exists() and builtin_prompt_path(str(path)).exists():
            file = builtin_prompt_path(str(path))
        name = file.stem
    return parse_prompt(file.read_text(encoding="utf-8"), name)


def messages_json(
    messages: list[dict[str, Any]], *, sort_keys: bool = False, ensure_ascii: bool = True
) -> str:
    """``json.dumps(messages, sort_keys=..., ensure_ascii=...)``, each message encoded once per run.

    Every request of a run repeats the prompt's system text and examples (about 1,900 characters
    of JSON); encoding them again for each request's key, body and cache row cost about a tenth
    of the event loop at concurrency 64. Messages whose values are not all strings are encoded
    as they come."""
    if not isinstance(messages, list):
        return json.dumps(messages, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    parts = []
    for message in messages:
        if type(message) is dict and len(message) == 2:
            # The usual message, {"role": ..., "content": ...} in that order: no items tuple to build.
            role, content = message.get("role"), message.get("content")
            if type(role) is str and type(content) is str and next(iter(message)) == "role":
                parts.append(_pair_json(role, content, sort_keys, ensure_ascii))
                continue
        if isinstance(message, dict) and all(type(k) is str and type(v) is str for k, v in message.items()):
            parts.append(_message_json(tuple(message.items()), sort_keys, ensure_ascii))
        else:
            parts.append(json.dumps(message, sort_keys=sort_keys, ensure_ascii=ensure_ascii))
    return "[" + ", ".join(parts) + "]"


@functools.lru_cache(maxsize=4096)
def _pair_json(role: str, content: str, sort_keys: bool, ensure_ascii: bool) -> str:
    return json.dumps({"role": role, "content": content}, sort_keys=sort_keys, ensure_ascii=ensure_ascii)


@functools.lru_cache(maxsize=4096)
def _message_json(items: tuple[tuple[str, str], ...], sort_keys: bool, ensure_ascii: bool) -> str:
    return json.dumps(dict(items), sort_keys=sort_keys, ensure_ascii=ensure_ascii)
