"""How many cores other processes are using now: the basis of the embedded model's thread count.

The 1-minute load average is the wrong signal for that choice. It lags: a run started just
after another one finished still sees the old load and takes one thread instead of two
(SmolLM2 decoded 70 tokens/s instead of 96 on this 2-core machine, batch 32). And it counts
this process's own work (loading the model) as other people's.

:class:`CpuWindow` reads the machine's busy time (``/proc/stat``) and this process's own CPU
time at two moments; the difference over the wall time between them is what the other
processes used, in cores. Steal time counts as used: the hypervisor gave the core away. Where
``/proc/stat`` is missing (not Linux) it answers ``None`` and callers fall back to the load
average.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

MIN_WINDOW = 0.2
"""Seconds: a shorter window is a few clock ticks (10 ms each), too coarse to say anything."""

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (guest is inside user)


@dataclass(frozen=True)
class _Reading:
    wall: float
    busy: float  # seconds of CPU the whole machine was busy, all cores
    own: float  # seconds of CPU this process used, all threads


def _machine_busy() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            first = handle.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu" or len(first) < 9:
        return None
    try:
        ticks = sum(int(first[1 + i]) for i in _BUSY_FIELDS)
    except ValueError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _read() -> _Reading | None:
    busy = _machine_busy()
    if busy is None:
        return None
    return _Reading(time.monotonic(), busy, time.process_time())


class CpuWindow:
    """``others()``: cores the other processes used since the previous call (or creation)."""

    def __init__(self) -> None:
        self._last = _read()

    def others(self, wait: bool = False) -> float | None:
        """Mean cores in use by other processes over the window that ends now, which starts the
        next window; ``None`` without ``/proc/stat``, or when the window is under
        :data:`MIN_WINDOW` (then the window goes on) unless ``wait`` sleeps until it is not."""
        now = _read()
        last = self._last
        if now is None or last is None:
            self._last = now
            return None
        wall = now.wall - last.wall
        if wall < MIN_WINDOW and wait:
            time.sleep(MIN_WINDOW - wall)
            return self.others()
        if wall < MIN_WINDOW:
            return None
        self._last = now
        return max(0.0, ((now.busy - last.busy) - (now.own - last.own)) / wall)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def free_threads(others: float | None, cores: int | None = None) -> int:
    """Threads for one CPU-bound job: the cores the others leave free, rounded, at least 1.
    ``others`` is :meth:`CpuWindow.others`; ``None`` falls back to the 1-minute load average."""
    total = usable_cores() if cores is None else cores
    if others is None:
        others = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(total, int(total + 0.5 - others)))
