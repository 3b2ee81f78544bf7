"""Secrets never reach a file or the terminal.

Providers sometimes echo request headers in error bodies (a 401 that repeats the
``Authorization`` header, a proxy's 500 page), and those bodies end up in reasons, ledgers,
summaries and reports. Everything we write goes through :func:`redact` (or
:func:`redact_expr` for polars columns): the values of the API-key environment variables in
use and anything shaped like a bearer token or a provider key become ``***``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # polars is imported where a frame is redacted: the judging worker never needs it
    import polars as pl

MASK = "***"
MIN_SECRET_CHARS = 8
"""Shorter environment values are not treated as secrets (they would mask ordinary words)."""
SECRET_ENV_NAME = re.compile(r"(API_?KEY|_TOKEN|_SECRET|PASSWORD|_PAT)$", re.IGNORECASE)
"""Environment variable names whose values are secrets (``OPENAI_API_KEY``, ``HF_TOKEN`` ...)."""

# Each pattern's group 1 is kept (a header name, a scheme); the rest of the match is masked.
# The syntax is shared by Python's re and polars (Rust regex).
TOKEN_PATTERNS: tuple[str, ...] = (
    r"(\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{16,}",
    r"()\bsk-[A-Za-z0-9_-]{16,}",
    r"()\b(?:ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}",
    r"()\bhf_[A-Za-z0-9]{20,}",
    r"()\bAKIA[0-9A-Z]{16}\b",
    r"()\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"(?i)(\b(?:x-)?api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{8,}",
)
_PYTHON_PATTERNS = [re.compile(p) for p in TOKEN_PATTERNS]
_MARKERS = ("bearer", "basic", "sk-", "gh", "hf_", "akia", "xox", "api")
"""Lower-case pieces every token pattern contains: text without them skips the patterns."""
_extra_env: set[str] = set()


def register_env(name: str | None) -> None:
    """Treat this variable's value as a secret too (``--api-key-env MY_KEY``)."""
    if name:
        _extra_env.add(name)


_NAME_IS_SECRET: dict[str, bool] = {}


def _is_secret_name(name: str) -> bool:
    known = _NAME_IS_SECRET.get(name)
    if known is None:
        known = _NAME_IS_SECRET[name] = bool(SECRET_ENV_NAME.search(name))
    return known or name in _extra_env


def secret_values() -> list[str]:
    """The values of the secret-looking environment variables, longest first."""
    values = {
        value
        for name, value in os.environ.items()
        if len(value) >= MIN_SECRET_CHARS and _is_secret_name(name)
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with known secrets and token-shaped strings replaced by ``***``."""
    if not text:
        return text
    return _redact(text, [*secret_values(), *(s for s in secrets if s and len(s) >= 4)])


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    if any(marker in lowered for marker in _MARKERS):
        for pattern in _PYTHON_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


def redact_value(value: Any, secrets: list[str] | None = None) -> Any:
    """Redact every string inside a JSON-like value."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, str):
        return _redact(value, secrets) if value else value
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, secrets) for v in value]
    return value


def redacted_json(value: Any, secrets: list[str] | None = None) -> str:
    """``json.dumps(redact_value(value), ensure_ascii=False)``, but a line that holds no secret
    and no marker of a token pattern is written as it is, without walking every string in it.

    Exact: JSON escaping works character by character and leaves the markers' characters alone,
    so a string of ``value`` that holds a secret or a marker puts it into the line too."""
    secrets = secret_values() if secrets is None else secrets
    line = json.dumps(value, ensure_ascii=False)
    lowered = line.lower()
    if any(marker in lowered for marker in _MARKERS) or any(
        json.dumps(secret, ensure_ascii=False)[1:-1] in line for secret in secrets
    ):
        line = json.dumps(redact_value(value, secrets), ensure_ascii=False)
    return line


def redact_expr(expr: pl.Expr) -> pl.Expr:
    """The same redaction as a polars expression over a string column (no Python per row)."""
    for secret in secret_values():
        expr = expr.str.replace_all(secret, MASK, literal=True)
    for pattern in TOKEN_PATTERNS:
        expr = expr.str.replace_all(pattern, "${1}" + MASK)
    return expr


def redact_frame(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    import polars as pl

    present = [c for c in columns if c in frame.columns and frame.schema[c] == pl.Utf8]
    if not present or frame.height == 0:
        return frame
    return frame.with_columns(redact_expr(pl.col(c)).alias(c) for c in present)


class RedactedStream:
    """A text stream for rich consoles: writes go to the current ``sys.stdout``/``sys.stderr``
    (looked up on each write, so test runners that swap them still see the output), redacted."""

    def __init__(self, name: str = "stdout") -> None:
        self._name = name

    @property
    def _target(self) -> TextIO:
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        self._target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)
