"""kill -9 the runner mid-run, resume: no record lost, none duplicated, no partial line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _generate_servers import FakeLLMServer
from conftest import SECRET


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path: Path, secret_env):
    queries = [f"topic number {i} setup" for i in range(60)]
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(queries) + "\n")
    out = tmp_path / "out.jsonl"
    with FakeLLMServer(latency=0.15) as server:
        server.faults = {"number 7 ": ["wrongformat"]}
        cmd = [
            sys.executable, "-m", "qmd_finetune.generate.cli", "expand",
            "--model", "openai/m", "--api-base", server.url + "/v1", "--api-key-env", "TEST_LLM_KEY",
            "--queries", str(qfile), "--output", str(out), "--concurrency", "4", "--no-progress",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = out.read_bytes().count(b"\n") if out.exists() else 0
            if lines >= 10:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        written_before = out.read_bytes()
        assert written_before.endswith(b"\n")
        done_before = len(written_before.splitlines())
        assert 10 <= done_before < 60
        # simulate a torn write (e.g. disk full) on top of the kill: the next run cuts it off
        with open(out, "ab") as handle:
            handle.write(b'{"query": "topic number 59 setup", "outp')
        resumed = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "repaired a partial trailing line" in resumed.stdout
        assert f"took over the output's lock from a run that is gone (PID {proc.pid})" in resumed.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    kept = [r["query"] for r in rows]
    rejected = [r["query"] for r in rejects]
    assert len(kept) == len(set(kept)), "duplicate records after resume"
    assert sorted(kept + rejected) == sorted(queries), "records lost after resume"
    assert rejected == ["topic number 7 setup"]
    assert SECRET not in out.read_text() + resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_sigterm_stops_after_in_flight_requests_and_resume_completes(tmp_path: Path):
    queries = [f"subject {i}" for i in range(40)]
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(queries) + "\n")
    out = tmp_path / "out.jsonl"
    with FakeLLMServer(latency=0.15) as server:
        cmd = [
            sys.executable, "-m", "qmd_finetune.generate.cli", "expand", "--model", "openai/m",
            "--api-base", server.url + "/v1", "--queries", str(qfile), "--output", str(out),
            "--concurrency", "4", "--no-progress",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 6):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 3, output
        assert "interrupted" in output
        stopped_at = len(out.read_text().splitlines())
        assert stopped_at < 40
        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    kept = [json.loads(line)["query"] for line in out.read_text().splitlines()]
    assert sorted(kept) == sorted(queries)
