"""The training prompt, per model family, and the chat-template options that go with it.

Qwen3 thinks unless told otherwise: its prompts carry ``/no_think`` and are rendered with
``enable_thinking=False``, which puts the empty ``<think></think>`` block in the prompt, so
targets and generations never contain one (the reward takes points off for it).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TEMPLATE = "/no_think Expand this search query: {query}"
TRAINING_INFO = "qmd_training.json"
_THINK_RE = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


@dataclass
class PromptFormat:
    template: str = DEFAULT_TEMPLATE
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = "default"

    def user_text(self, query: str) -> str:
        return self.template.format(query=query)

    def messages(self, query: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.user_text(query)}]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FAMILIES: dict[str, PromptFormat] = {
    "qwen3": PromptFormat(chat_template_kwargs={"enable_thinking": False}, family="qwen3"),
    "smollm": PromptFormat(family="smollm"),
    "default": PromptFormat(),
}


def family_of(model_name: str) -> str:
    name = model_name.lower()
    if "qwen3" in name:
        return "qwen3"
    if "smollm" in name or name in {"local/smollm2", "embedded"}:
        return "smollm"
    return "default"


def format_for(model_name: str, template: str | None = None) -> PromptFormat:
    base = FAMILIES[family_of(model_name)]
    fmt = PromptFormat(
        template=base.template, chat_template_kwargs=dict(base.chat_template_kwargs), family=base.family
    )
    if template:
        if "{query}" not in template:
            raise ValueError("prompt template must contain {query}")
        fmt.template = template
    return fmt


def strip_think(text: str) -> str:
    """Remove ``<think>...</think>`` blocks (empty or not) from a target or a generation."""
    return _THINK_RE.sub("", text).strip()


def read_format(model_dir: str | Path) -> PromptFormat | None:
    """The prompt format saved next to a trained model or a prepared dataset, if any."""
    for name in (TRAINING_INFO, "dataset_info.json"):
        path = Path(model_dir) / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8")).get("prompt_format")
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and "template" in data:
                return PromptFormat(
                    template=data["template"],
                    chat_template_kwargs=dict(data.get("chat_template_kwargs") or {}),
                    family=data.get("family", "default"),
                )
    return None
