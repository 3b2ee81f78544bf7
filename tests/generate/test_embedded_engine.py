"""The embedded engine: cached prompt head, format-safe decoding, SIGTERM, local/<dir> models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import invoke

from qmd_finetune import cpu_share, quality
from qmd_finetune.generate import local_llm
from qmd_finetune.generate.prompts import load_prompt

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_cached_prompt_head_gives_the_answer_of_the_full_prompt():
    import torch

    prompt = load_prompt()
    eng = local_llm.engine()
    eng.load()
    tokenizer, model = eng._tokenizer, eng._model
    conversations = [prompt.messages(q) for q in ("docker compose networking", "who is Marie Curie")]
    mine = eng.generate(conversations, local_llm.GenParams(max_new_tokens=16))
    for conversation, answer in zip(conversations, mine, strict=True):
        enc = tokenizer(
            local_llm.render_prompt(tokenizer, conversation), return_tensors="pt", add_special_tokens=False
        )
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        reference = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer.text == reference.strip()
    assert len(eng._heads) == 1  # both conversations shared one cached head


def test_strict_decoding_writes_lex_and_vec_without_repeats_and_lex_on_topic():
    prompt = load_prompt()
    queries = ["typescript async await", "git rebase vs merge", "how to configure authentication"]
    answers = local_llm.generate_completions([prompt.messages(q) for q in queries], 160, decoding="strict")
    for query, answer in zip(queries, answers, strict=True):
        failures = quality.check_text(
            query, answer.text, checks=["repeated_lines", "missing_vec", "lex_off_topic"]
        )
        assert failures == [], (query, answer.text)
        assert any(line.startswith("lex: ") for line in answer.text.splitlines())


def test_interrupt_stops_work_started_before_it():
    eng = local_llm.engine()
    epoch = eng.epoch
    local_llm.interrupt()
    with pytest.raises(local_llm.Interrupted):
        eng.generate([load_prompt().messages("auth")], local_llm.GenParams(max_new_tokens=8), epoch)
    # later work runs normally
    assert eng.generate([load_prompt().messages("auth")], local_llm.GenParams(max_new_tokens=4))


def test_sigterm_stops_generate_expand_within_seconds(tmp_path: Path):
    queries = tmp_path / "q.txt"
    queries.write_text("".join(f"query number {i} about docker networking\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "qmd_finetune.generate.cli", "expand", "--model", "local/smollm2"]
    args += ["--queries", str(queries), "--output", str(out), "--no-progress", "--max-tokens", "256"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert out.exists(), "no answer within 300 s"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    print(f"stopped {time.monotonic() - sent:.1f} s after SIGTERM")
    assert "Traceback" not in stderr, stderr
    rows = out.read_text().splitlines()
    rejects = tmp_path / "out.rejects.jsonl"
    rejected = rejects.read_text().splitlines() if rejects.exists() else []
    assert 0 < len(rows) + len(rejected) < 40
    assert not [r for r in rejected if "interrupted" in r]  # left undone for resume, not failed


def test_a_trained_model_directory_runs_through_the_embedded_provider(tmp_path: Path):
    from qmd_finetune import embedded

    run = tmp_path / "sft"
    shutil.copytree(embedded.model_dir(), run / "merged")
    queries = tmp_path / "q.txt"
    queries.write_text("git rebase vs merge\n")
    out = tmp_path / "out.jsonl"
    result = invoke(
        ["expand", "--model", f"local/{run}", "--queries", str(queries), "--output", str(out)]
        + ["--max-tokens", "96", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["meta"]["provider"] == "local"
    assert str(run.resolve()) in local_llm._ENGINES


def test_an_unknown_local_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="local/smollm2, or local/<dir>"):
        local_llm.check_model(f"local/{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither an adapter directory"):
        local_llm.check_model(f"local/{tmp_path / 'empty'}")


def test_int8_weights_run_through_the_embedded_provider_and_are_recorded(tmp_path: Path, monkeypatch):
    """QMD_FINETUNE_DTYPE=int8: the linear layers are quantized, records say so in meta.dtype."""
    from qmd_finetune import embedded

    run = tmp_path / "int8-model"
    shutil.copytree(embedded.model_dir(), run)  # its own engine: the shared one stays as it is
    queries = tmp_path / "q.txt"
    queries.write_text("git rebase vs merge\n")
    out = tmp_path / "out.jsonl"
    args = ["expand", "--model", f"local/{run}", "--queries", str(queries), "--output", str(out)]
    monkeypatch.setenv("QMD_FINETUNE_DTYPE", "int4")
    result = invoke([*args, "--no-progress"])
    assert result.exit_code == 2 and "not 'int4' (QMD_FINETUNE_DTYPE" in result.output
    assert not out.exists() or not out.read_text()
    monkeypatch.setenv("QMD_FINETUNE_DTYPE", "int8")
    result = invoke([*args, "--max-tokens", "96", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["meta"]["dtype"] == "int8"
    engine = local_llm._ENGINES[str(run.resolve())]
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in engine._model.modules())
    assert engine.source.endswith("(int8)")
    with sqlite3.connect(out.with_name("out.cache.sqlite")) as db:  # int8 answers have keys of their own
        assert db.execute("SELECT model FROM responses").fetchall() == [(f"local/{run} (int8)",)]


@pytest.mark.skipif(
    cpu_share.usable_cores() < 2 or cpu_share._machine_busy() is None, reason="needs 2 cores and /proc/stat"
)
def test_the_engine_takes_the_cores_other_processes_leave_free_before_each_batch(monkeypatch):
    import torch

    monkeypatch.delenv("QMD_FINETUNE_THREADS", raising=False)
    prompt = load_prompt()
    eng = local_llm.engine()
    eng.load()
    params = local_llm.GenParams(max_new_tokens=2)
    conversation = [prompt.messages("git rebase vs merge")]
    eng.generate(conversation, params)  # the prompt head is computed once, before the clock
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_share.usable_cores())
    ]
    try:
        time.sleep(0.3)
        eng._window = cpu_share.CpuWindow()
        time.sleep(1.0)
        eng.generate(conversation, params)
        assert (eng._threads, torch.get_num_threads()) == (1, 1)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    time.sleep(1.0)
    eng.generate(conversation, params)  # its window began before the busy batch ended
    eng.generate(conversation, params)  # this one's window is quiet
    assert (
        (eng._threads, torch.get_num_threads()) == (2, 2)
        if cpu_share.usable_cores() == 2
        else eng._threads >= 2
    )
