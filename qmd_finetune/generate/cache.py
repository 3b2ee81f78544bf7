"""SQLite response cache, which doubles as a log of what each model answered.

Keyed by model, messages and generation parameters. Never keyed by nor holding secrets: the
API key, headers and the API base URL are not part of a request as the cache sees it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmd_finetune.io import OutputError, describe_os_error
from qmd_finetune.redact import redact, redact_value

BUSY_SECONDS = 30.0
"""How long a write waits for another process's transaction on a shared cache file."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    created TEXT NOT NULL
)
"""


@dataclass
class CachedResponse:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost: float


def request_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    payload = json.dumps(
        {"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """Writes are committed every ``commit_every`` puts and on close: a killed run loses at most
    those cache entries (never records: the output file is written separately). The default
    commits each put: an open transaction would hold the file's write lock while requests are
    in flight, and another process sharing the cache would wait on it."""

    def __init__(self, path: str | Path, commit_every: int = 1) -> None:
        self.path = Path(path)
        self.commit_every = commit_every
        self._pending = 0
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Another process may share the file: wait for its write lock instead of failing.
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS
            )
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite's errors (a full disk, a file that is not a database) as one-line OutputErrors."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"{self.path}: response cache failed ({describe_os_error(exc)})") from exc

    def get(self, key: str) -> CachedResponse | None:
        with self._errors():
            row = self._db.execute(
                "SELECT response, prompt_tokens, completion_tokens, cost FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return CachedResponse(*row) if row else None

    def put(
        self,
        key: str,
        model: str,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        text: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> None:
        request = json.dumps(
            redact_value({"messages": messages, "params": params}), sort_keys=True, ensure_ascii=False
        )
        with self._errors():
            if self._pending == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    request,
                    redact(text),
                    prompt_tokens,
                    completion_tokens,
                    cost,
                    dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                ),
            )

        self._pending += 1
        if self._pending >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if self._pending:
            with self._errors():
                self._db.execute("COMMIT")
            self._pending = 0

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self.commit()
        self._db.close()
