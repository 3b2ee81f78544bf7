"""Other processes' CPU use, measured now (not the lagging load average), and the thread count from it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from qmd_finetune import cpu_share

BURN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"


def burners(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.skipif(cpu_share._machine_busy() is None, reason="needs /proc/stat")
def test_a_window_counts_the_cores_other_processes_use():
    processes = burners(2)
    try:
        time.sleep(0.3)  # the interpreters start
        window = cpu_share.CpuWindow()
        time.sleep(1.0)
        others = window.others()
    finally:
        stop(processes)
    # two busy loops: two cores wherever there are two; a machine's own noise only adds
    assert others is not None
    assert others >= min(2, cpu_share.usable_cores()) - 0.5


@pytest.mark.skipif(cpu_share._machine_busy() is None, reason="needs /proc/stat")
def test_a_window_does_not_count_this_process_as_others():
    window = cpu_share.CpuWindow()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # one core busy, in this process
        pass
    others = window.others()
    assert others is not None
    assert others < 0.6


@pytest.mark.skipif(cpu_share._machine_busy() is None, reason="needs /proc/stat")
def test_a_short_window_goes_on_or_waits():
    window = cpu_share.CpuWindow()
    assert window.others() is None  # a few clock ticks say nothing; the window is kept
    time.sleep(cpu_share.MIN_WINDOW)
    assert window.others() is not None
    started = time.monotonic()
    assert window.others(wait=True) is not None  # a new window, waited out
    assert time.monotonic() - started >= cpu_share.MIN_WINDOW * 0.9


@pytest.mark.parametrize(
    ("others", "cores", "threads"),
    [(0.0, 2, 2), (0.4, 2, 2), (0.6, 2, 1), (1.7, 2, 1), (12.0, 2, 1), (1.0, 8, 7), (0.0, 1, 1)],
)
def test_threads_are_the_cores_the_others_leave_free(others: float, cores: int, threads: int):
    assert cpu_share.free_threads(others, cores) == threads


def test_without_a_reading_the_load_average_decides(monkeypatch):
    monkeypatch.setattr(cpu_share.os, "getloadavg", lambda: (1.6, 0.0, 0.0))
    assert cpu_share.free_threads(None, 2) == 1
    monkeypatch.setattr(cpu_share.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert cpu_share.free_threads(None, 2) == 2
