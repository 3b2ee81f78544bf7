"""SQLite response cache, which doubles as a log of what each model answered.

Keyed by model, messages and generation parameters. Never keyed by nor holding secrets: the
API key, headers and the API base URL are not part of a request as the cache sees it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmd_finetune.generate.prompts import messages_json
from qmd_finetune.io import OutputError, describe_os_error
from qmd_finetune.redact import redact_value, secret_values

KEY_SET_MAX = 500_000
"""Up to this many cached answers, their keys (~50 MB) are read once and a miss costs no query."""
GATHER_SECONDS = 0.02
"""After an answer wakes it, the writer gathers this long before one transaction writes them all."""
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
    """sha256 of ``json.dumps({"messages", "model", "params"}, sort_keys=True, ensure_ascii=False)``."""
    payload = "".join(
        (
            '{"messages": ',
            messages_json(messages, sort_keys=True, ensure_ascii=False),
            _key_tail(model, params),
        )
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _key_tail(model: str, params: dict[str, Any]) -> str:
    """The key's JSON after the messages; a run repeats its model and parameters, so it is made
    once per distinct pair."""
    try:
        # With the types: 1, 1.0 and True are equal keys of a dict but three different JSONs.
        signature = (model, tuple((k, type(v), v) for k, v in params.items()))
        hash(signature)
    except TypeError:  # a parameter value that is a list or a dict
        signature = None
    if signature is not None:
        tail = _TAILS.get(signature)
        if tail is not None:
            return tail
    tail = "".join(
        (
            ', "model": ',
            json.dumps(model, ensure_ascii=False),
            ', "params": ',
            json.dumps(params, sort_keys=True, ensure_ascii=False),
            "}",
        )
    )
    if signature is not None:
        if len(_TAILS) > 1000:
            _TAILS.clear()
        _TAILS[signature] = tail
    return tail


_TAILS: dict[tuple, str] = {}


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL. sqlite answers "database is locked" at once, without waiting on
    the busy timeout, when another process opens the same new file at the same moment (one
    start in twelve with six processes): the switch is retried for up to BUSY_SECONDS."""
    deadline = time.monotonic() + BUSY_SECONDS
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class ResponseCache:
    """Answers are written by a writer thread, each batch of whatever was queued in one short
    transaction: the event loop only queues them (the JSON, the redaction and sqlite's writes
    took 1.6 ms a request on it at concurrency 64), and no transaction is held open while
    requests are in flight, so another process sharing the file waits at most one batch. A
    killed run loses at most the queued answers (never records: the output is written
    separately); ``close`` writes the rest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # The secrets of this run, read once: scanning the environment per put cost 0.6 ms.
        self._secrets = secret_values()
        self._keys: set[str] | bool | None = None  # the keys present when the run began, and put since
        self._queued: dict[str, CachedResponse] = {}  # put, not yet written
        self._rows: dict[tuple[str, str], str] = {}  # redacted, encoded messages (the writer's)
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()
        self._failed: OutputError | None = None
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            _use_wal(self._db)
            self._db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite's errors (a full disk, a file that is not a database) as one-line OutputErrors."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"{self.path}: response cache failed ({describe_os_error(exc)})") from exc

    def _known_keys(self) -> set[str] | bool:
        """The keys present when the run began (read on first use), or False for a cache too big
        to hold them. Read before the first put as well as the first get: read after a put, the
        writer could commit that answer and drop it from the queue between the read and the
        lookup, and the lookup would miss an answer just given."""
        if self._keys is None:
            with self._errors():
                count = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                self._keys = (
                    {row[0] for row in self._db.execute("SELECT key FROM responses")}
                    if count <= KEY_SET_MAX
                    else False
                )
        return self._keys

    def get(self, key: str) -> CachedResponse | None:
        keys = self._known_keys()
        queued = self._queued.get(key)
        if queued is not None:
            return queued
        if keys is not False and key not in keys:
            return None  # a miss without a query (a miss is every new request)
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
        if self._failed is not None:
            raise self._failed
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        keys = self._known_keys()
        self._queued[key] = CachedResponse(text, prompt_tokens, completion_tokens, cost)
        if isinstance(keys, set):
            keys.add(key)
        self._queue.put((key, model, messages, params, text, prompt_tokens, completion_tokens, cost, created))
        if self._writer is None:
            self._wake = threading.Event()
            self._writer = threading.Thread(target=self._write_loop, name="response-cache", daemon=True)
            self._writer.start()

    def _row(self, entry: tuple) -> tuple:
        key, model, messages, params, text, prompt_tokens, completion_tokens, cost, created = entry
        request = "".join(
            (
                '{"messages": [',
                ", ".join(self._message_row(m) for m in messages),
                '], "params": ',
                json.dumps(redact_value(params, self._secrets), sort_keys=True, ensure_ascii=False),
                "}",
            )
        )
        text = redact_value(text, self._secrets)
        return key, model, request, text, prompt_tokens, completion_tokens, cost, created

    def _message_row(self, message: Any) -> str:
        """One message as the cache row stores it: redacted, JSON with sorted keys. A run repeats
        its prompt's messages, so each is redacted and encoded once (it was half the writer's
        time per answer, a thread that holds the interpreter lock the event loop needs)."""
        if type(message) is dict and len(message) == 2:
            role, content = message.get("role"), message.get("content")
            if type(role) is str and type(content) is str:
                cached = self._rows.get((role, content))
                if cached is None:
                    if len(self._rows) > 10_000:
                        self._rows.clear()
                    clean = {
                        "role": redact_value(role, self._secrets),
                        "content": redact_value(content, self._secrets),
                    }
                    cached = self._rows[(role, content)] = json.dumps(
                        clean, sort_keys=True, ensure_ascii=False
                    )
                return cached
        return json.dumps(redact_value(message, self._secrets), sort_keys=True, ensure_ascii=False)

    def _write_loop(self) -> None:
        try:
            with self._errors():
                db = self._connect()
        except OutputError as exc:
            self._failed = exc
            return
        try:
            self._write_batches(db)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        # Another process may share the file: wait for its write lock instead of failing.
        db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS
        )
        db.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _write_batches(self, db: sqlite3.Connection) -> None:
        """The writer thread's own connection (WAL: the loop's reads never wait for it)."""
        done = False
        while not done:
            batch = [self._queue.get()]
            if batch[-1] is not None:
                # Gather a little before writing: woken per answer, the writer committed 2,444
                # transactions for 6,400 answers at concurrency 64, each rewriting the pages it
                # touched, and that cost more CPU than the rows. ``commit`` cuts the wait short.
                self._wake.wait(GATHER_SECONDS)
            while not self._queue.empty():
                batch.append(self._queue.get())
            done = batch[-1] is None
            rows = [self._row(entry) for entry in batch if entry is not None]
            if not rows or self._failed is not None:
                continue
            try:
                with self._errors():
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    db.execute("COMMIT")
                for row in rows:
                    self._queued.pop(row[0], None)
            except OutputError as exc:
                self._failed = exc
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")

    def commit(self) -> None:
        """Wait until every queued answer is written (and raise the writer's error, if any)."""
        if self._writer is not None:
            self._queue.put(None)
            self._wake.set()
            self._writer.join()
            self._writer = None
        if self._failed is not None:
            raise self._failed

    def __len__(self) -> int:
        self.commit()
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()
