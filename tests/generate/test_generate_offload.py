"""Large `generate expand` runs judge answers in a worker process: the same records and rejects
as judging them on the event loop."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from qmd_finetune.generate import expand
from qmd_finetune.generate.cli import app


def _run(server, queries: Path, out: Path) -> str:
    args = ["expand", "--model", "openai/m", "--api-base", server.url + "/v1", "--queries", str(queries)]
    args += ["--output", str(out), "--concurrency", "32", "--no-progress", "--no-cache"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _comparable(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row.get("meta", {}).pop("created", None)
    return sorted(rows, key=lambda r: r["query"])


def test_worker_process_writes_what_the_event_loop_path_writes(tmp_path, llm_server, monkeypatch):
    n = expand.OFFLOAD_MIN + 20
    queries = tmp_path / "queries.txt"
    lines = [f"kubernetes ingress case {i}" for i in range(n - 2)] + ["broken one", "broken two"]
    queries.write_text("\n".join(lines) + "\n", encoding="utf-8")
    faults = {"broken one": ["wrongformat"], "broken two": ["wrongformat"]}  # rejects at parse

    worker = tmp_path / "worker.jsonl"
    llm_server.faults = {k: list(v) for k, v in faults.items()}
    _run(llm_server, queries, worker)
    monkeypatch.setattr(expand, "OFFLOAD_MIN", n + 1)
    inline = tmp_path / "inline.jsonl"
    llm_server.faults = {k: list(v) for k, v in faults.items()}
    _run(llm_server, queries, inline)

    records = _comparable(worker)
    assert records == _comparable(inline)
    rejects = _comparable(tmp_path / "worker.rejects.jsonl")
    assert rejects == _comparable(tmp_path / "inline.rejects.jsonl")
    assert len(records) + len(rejects) == n and {r["stage"] for r in rejects} == {"parse"}
    assert [r["query"] for r in rejects] == ["broken one", "broken two"]
    assert all(r["score"] > 0 for r in records)


def test_a_killed_judging_process_stops_the_run_in_one_line(tmp_path, llm_server, monkeypatch):
    # The worker is killed as the run starts: the answers cannot be judged, so the run stops
    # with a one-line error (not a hang, not a traceback); a rerun with a live worker resumes.
    import os
    import signal

    n = expand.OFFLOAD_MIN + 4
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(f"kubernetes ingress case {i}\n" for i in range(n)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    start = expand.Offload.__init__

    def killed(self, checks):
        start(self, checks)
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait(10)

    monkeypatch.setattr(expand.Offload, "__init__", killed)
    args = ["expand", "--model", "openai/m", "--api-base", llm_server.url + "/v1", "--queries", str(queries)]
    args += [
        "--output",
        str(out),
        "--concurrency",
        "32",
        "--no-progress",
        "--cache",
        str(tmp_path / "c.sqlite"),
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "the process judging the answers stopped (exit code -9" in message
    assert "Traceback" not in result.output
    monkeypatch.setattr(expand.Offload, "__init__", start)
    assert "records written" in _run_cached(llm_server, queries, out, tmp_path / "c.sqlite")
    assert len(out.read_text(encoding="utf-8").splitlines()) == n


def _run_cached(server, queries: Path, out: Path, cache: Path) -> str:
    args = ["expand", "--model", "openai/m", "--api-base", server.url + "/v1", "--queries", str(queries)]
    args += ["--output", str(out), "--concurrency", "32", "--no-progress", "--cache", str(cache)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


ZOMBIES = """
import os, signal, sys, time
from pathlib import Path
from qmd_finetune.generate import expand
from qmd_finetune.generate.providers import GenerationParams
from qmd_finetune.generate.runner import RunnerConfig

def children():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.append(fields[0])
    return found

# No `if __name__ == "__main__":` guard, on purpose: a script (or notebook) calling run_expand
# must not be run again by the judging process.
signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an ignored SIGCHLD (inherited) reaps children itself
tmp = Path(sys.argv[2])
cfg = expand.ExpandConfig(
    model="openai/m", queries=tmp / "queries.txt", output=tmp / "out.jsonl", api_base=sys.argv[1],
    params=GenerationParams(max_tokens=100), runner=RunnerConfig(concurrency=32, progress=False),
    use_cache=False,
)
print("kept", expand.run_expand(cfg).kept)
deadline = time.monotonic() + 10
while any(state != "Z" for state in children()) and time.monotonic() < deadline:
    time.sleep(0.1)  # the worker shutting down
time.sleep(0.5)
print("children", len(children()), "zombies", children().count("Z"))
"""


def test_the_judging_process_is_reaped_and_a_script_needs_no_main_guard(tmp_path, llm_server):
    # The run does not wait for the worker's interpreter to shut down, but nothing is left
    # behind either: no zombie process in a caller that runs on (a notebook, a service). In a
    # fresh interpreter: pytest's own process reaps children it did not start. The script has
    # no __main__ guard: with multiprocessing's spawn the worker ran it again and died.
    import os
    import subprocess
    import sys

    queries = tmp_path / "queries.txt"
    queries.write_text(
        "".join(f"kubernetes ingress case {i}\n" for i in range(expand.OFFLOAD_MIN)), encoding="utf-8"
    )
    script = tmp_path / "zombies.py"
    script.write_text(ZOMBIES, encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, str(script), llm_server.url + "/v1", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["kept", str(expand.OFFLOAD_MIN), "children", "0", "zombies", "0"]
