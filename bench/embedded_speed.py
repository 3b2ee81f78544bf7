"""Embedded model speed: the shared-head engine against the earlier generation paths, same run.

    python bench/embedded_speed.py --baseline /tmp/old-tree [--queries 20] [--max-new-tokens 64] [--batch 32]

In one process, with the same loaded model (bf16 where the CPU has it, else fp32) and thread
count, it times
- ``baseline``: the first path, kept here (whole prompt through ``model.generate`` per batch),
- ``generic cache``: :class:`EmbeddedEngine` with the model's own key/value cache (the prompt
  head computed once and copied into every row), batches of 8: the engine before the
  shared-head decoder,
- ``shared head``: :class:`EmbeddedEngine` with :mod:`qmd_finetune.generate.shared_head`
  (the head's keys and values read by every row, not copied), batches of ``--batch``,
free decoding single (batch 1) and batched; strict decoding batched; the shared-head engine
with its linear layers quantized to int8 (``QMD_FINETUNE_DTYPE=int8``); then ``generate expand`` on the same
queries as subprocesses: ``--baseline`` is a checkout of the earlier commit (``git archive
<commit> | tar -x -C DIR``), run with the same ``OMP_NUM_THREADS``. Every figure is printed
with the ``uptime`` load at the time; compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "data" / "qmd-reference" / "eval_queries.txt"


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def eval_queries(count: int) -> list[str]:
    lines = [line.strip() for line in EVAL.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")][:count]


def baseline_generate(model, tokenizer, conversations, max_new_tokens: int) -> int:  # noqa: ANN001
    """The earlier path: full prompts, left-padded, ``model.generate``; returns tokens written."""
    import torch

    from qmd_finetune.generate.local_llm import render_prompt

    enc = tokenizer(
        [render_prompt(tokenizer, c) for c in conversations],
        padding=True,
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    new = out[:, enc["input_ids"].shape[1] :]
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    written = 0
    for row in new.tolist():
        written += next((i for i, tok in enumerate(row) if tok in stop), len(row))
    return written


def timed(label: str, run) -> float:  # noqa: ANN001
    before = load()
    start = time.perf_counter()
    tokens = run()
    seconds = time.perf_counter() - start
    rate = tokens / seconds
    print(f"{label:<34} {tokens:>5} tok {seconds:>7.1f} s {rate:>7.1f} tok/s   ({before})", flush=True)
    return rate


def in_process(queries: list[str], max_new_tokens: int, batch: int) -> None:
    from qmd_finetune.generate import local_llm
    from qmd_finetune.generate.prompts import load_prompt

    prompt = load_prompt()
    eng = local_llm.engine()
    eng.load()
    import torch

    decoder = eng._decoder
    print(
        f"threads {torch.get_num_threads()}, dtype {eng._model.dtype}, prompt head cached once, "
        f"shared-head decoder: {'yes' if decoder is not None else 'no (not a Llama model)'}"
    )
    conversations = [prompt.messages(q) for q in queries]
    free = local_llm.GenParams(max_new_tokens=max_new_tokens)
    strict = local_llm.GenParams(max_new_tokens=max_new_tokens, decoding="strict")
    singles = conversations[:4]

    def engine_run(shared: bool, most: int, params: local_llm.GenParams, convs: list) -> int:
        """The engine with the shared-head decoder or the generic cache path, batches of ``most``."""
        if (eng._decoder is not None) != shared:
            eng._decoder = decoder if shared else None
            eng._heads.clear()
        local_llm.MAX_BATCH = most
        return sum(r.completion_tokens for r in eng.generate(convs, params))

    engine_run(True, 1, free, singles[:1])  # warm-up: head cache and kernels
    engine_run(False, 1, free, singles[:1])
    rates = {}
    rates["base1"] = timed(
        "baseline single",
        lambda: sum(baseline_generate(eng._model, eng._tokenizer, [c], max_new_tokens) for c in singles),
    )
    rates["cache1"] = timed(
        "engine single, generic cache", lambda: sum(engine_run(False, 1, free, [c]) for c in singles)
    )
    rates["eng1"] = timed(
        "engine single, shared head", lambda: sum(engine_run(True, 1, free, [c]) for c in singles)
    )
    chunks = [conversations[i : i + 8] for i in range(0, len(conversations), 8)]
    rates["baseB"] = timed(
        "baseline batched (8)",
        lambda: sum(baseline_generate(eng._model, eng._tokenizer, c, max_new_tokens) for c in chunks),
    )
    rates["cacheB"] = timed(
        "engine batched (8), generic cache", lambda: engine_run(False, 8, free, conversations)
    )
    rates["cacheS"] = timed(
        "engine batched (8), generic, strict", lambda: engine_run(False, 8, strict, conversations)
    )
    rates["engB"] = timed(
        f"engine batched ({batch}), shared head", lambda: engine_run(True, batch, free, conversations)
    )
    rates["strictB"] = timed(
        f"engine batched ({batch}), shared, strict", lambda: engine_run(True, batch, strict, conversations)
    )
    # QMD_FINETUNE_DTYPE=int8: the same weights, linear layers quantized (embedded.quantize_int8)
    from qmd_finetune import embedded
    from qmd_finetune.generate import shared_head

    eng_dtype = str(eng._model.dtype).replace("torch.", "")
    eng._model = embedded.quantize_int8(eng._model)
    decoder = eng._decoder = shared_head.SharedHeadDecoder(eng._model)
    eng._heads.clear()
    engine_run(True, 1, free, singles[:1])  # warm-up: the int8 head
    rates["int8B"] = timed(
        f"engine batched ({batch}), int8", lambda: engine_run(True, batch, free, conversations)
    )
    rates["int8strictB"] = timed(
        f"engine batched ({batch}), int8, strict", lambda: engine_run(True, batch, strict, conversations)
    )
    print(f"ratio single  shared head/baseline: {rates['eng1'] / rates['base1']:.2f}x")
    print(f"ratio single  shared head/generic cache: {rates['eng1'] / rates['cache1']:.2f}x")
    print(f"ratio batched shared head ({batch})/generic cache (8): {rates['engB'] / rates['cacheB']:.2f}x")
    print(f"ratio strict  shared head ({batch})/generic cache (8): {rates['strictB'] / rates['cacheS']:.2f}x")
    print(f"ratio batched shared head ({batch})/baseline (8): {rates['engB'] / rates['baseB']:.2f}x")
    print(f"ratio batched int8/{eng_dtype}: {rates['int8B'] / rates['engB']:.2f}x")
    print(f"ratio batched strict int8/{eng_dtype}: {rates['int8strictB'] / rates['strictB']:.2f}x")


def expand_wall(tree: Path, queries: list[str], threads: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        qfile = Path(tmp) / "q.txt"
        qfile.write_text("\n".join(queries) + "\n", encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "OMP_NUM_THREADS": threads,
            "QMD_FINETUNE_THREADS": threads,
        }
        args = [sys.executable, "-m", "qmd_finetune.generate.cli", "expand", "--model", "local/smollm2"]
        args += ["--queries", str(qfile), "--output", str(Path(tmp) / "out.jsonl"), "--no-progress"]
        before = load()
        start = time.perf_counter()
        # cwd: ``python -m`` puts the working directory before PYTHONPATH on sys.path
        subprocess.run(args, env=env, cwd=tree, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        rows = (Path(tmp) / "out.jsonl").read_text(encoding="utf-8").splitlines()
        print(
            f"generate expand {tree}: {seconds:.1f} s, {len(rows)} kept of {len(queries)}   ({before})",
            flush=True,
        )
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="checkout of the earlier commit for `generate expand`")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="rows per batch of the shared-head runs")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    queries = eval_queries(args.queries)
    if not args.skip_in_process:
        in_process(queries, args.max_new_tokens, args.batch)
    if args.baseline:
        import torch

        threads = os.environ.get("QMD_FINETUNE_THREADS") or str(torch.get_num_threads())
        old = expand_wall(args.baseline, queries, threads)
        new = expand_wall(REPO, queries, threads)
        print(f"ratio generate expand wall time baseline/new: {old / new:.2f}x (OMP_NUM_THREADS={threads})")


if __name__ == "__main__":
    main()
