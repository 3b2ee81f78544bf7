"""Append-only JSONL files that survive ``kill -9``: the generate output and rejects ledger.

Each record is one ``os.write`` of a complete line to an ``O_APPEND`` descriptor, so it is
in the kernel (and visible to any reader) as soon as the call returns, and a killed process
leaves either the whole line or none of it. Should a partial line ever be found (a full
disk, a crash of the machine), it is cut off when the file is opened again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qmd_finetune.io import OutputError, describe_os_error
from qmd_finetune.redact import redacted_json


def repair_tail(path: Path) -> int:
    """Truncate a trailing partial line; returns the number of bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        chunk = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            handle.seek(start)
            data = handle.read(pos - start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                handle.truncate(keep)
                return size - keep
            pos = start
        handle.truncate(0)
        return size


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


class JsonlAppender:
    """Appends redacted JSON lines. A failed write (a full disk) is cut off again and raises
    OutputError: the file never holds a partial line written by this run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.repaired = repair_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({describe_os_error(exc)})") from exc
        self.written = 0

    def append(self, obj: dict[str, Any]) -> None:
        self.append_line((redacted_json(obj) + "\n").encode("utf-8"))

    def append_line(self, data: bytes) -> None:
        """One complete line, already encoded and redacted, in one ``write``."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise OutputError(
                f"{self.path}: cannot write ({describe_os_error(exc)}); the lines written before are kept"
            ) from exc
        self._size += len(data)
        self.written += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
