"""Advisory locks: one run at a time per output (and per response cache).

Two runs writing one output would duplicate paid requests or let the last writer win
silently. A run takes ``.<name>.lock`` beside its output with ``flock`` and writes its PID
there; a second run refuses at once, naming that PID. The kernel drops the lock when its
holder dies, so a lock left by a killed run is taken over (and reported) by the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qmd_finetune.io import OutputError, describe_os_error

_HELD: dict[Path, int] = {}
"""Lock files this process holds -> their descriptors."""


class LockedError(ValueError):
    """Another live run holds the lock."""


@dataclass
class Lock:
    path: Path
    stale_pid: int | None = None
    """PID written by a run that died holding this lock (taken over), else None."""


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    head = os.read(fd, 64).decode("ascii", errors="replace").split()
    return int(head[0]) if head and head[0].isdigit() else None


@contextlib.contextmanager
def hold(target: str | Path, what: str = "output") -> Iterator[Lock]:
    """Hold the lock of ``target`` for the block; raises LockedError when a live run has it,
    OutputError when the lock file cannot be written (a full disk, a read-only folder)."""
    try:
        lock = _acquire(target, what)
    except OSError as exc:
        raise OutputError(f"{target}: cannot take the lock ({describe_os_error(exc)})") from exc
    if lock is None:  # already ours (a command locking its output twice)
        yield Lock(lock_path(target).absolute())
        return
    try:
        yield lock
    finally:
        _release(lock)


def _acquire(target: str | Path, what: str) -> Lock | None:
    path = lock_path(target).absolute()
    if path in _HELD:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"PID {pid}" if pid else "an unknown process"
            raise LockedError(
                f"{target}: {what} is in use by another run ({holder}); wait for it to finish or stop it"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file while we opened it: try again
    lock = Lock(path)
    previous = _read_pid(fd)
    if previous is not None and previous != os.getpid():
        lock.stale_pid = previous
    try:
        os.ftruncate(fd, 0)
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"{os.getpid()} {started}\n".encode(), 0)
    except OSError:
        os.close(fd)
        raise
    _HELD[path] = fd
    return lock


def _release(lock: Lock) -> None:
    fd = _HELD.pop(lock.path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock.path)
    os.close(fd)
