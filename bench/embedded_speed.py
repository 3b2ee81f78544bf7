"""Embedded model speed: the cached-head engine against the earlier generation path, same run.

    python bench/embedded_speed.py --baseline /tmp/old-tree [--queries 20] [--max-new-tokens 64]

In one process, with the same loaded bf16 model and thread count, it times
- ``baseline``: the earlier path kept here (whole prompt through ``model.generate`` per batch),
- ``engine``: :class:`EmbeddedEngine` (prompt head computed once, length-sorted batches),
both free decoding, single (batch 1) and batched (8); the engine with strict decoding, and
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

    print(f"threads {torch.get_num_threads()}, dtype {eng._model.dtype}, prompt head cached once")
    conversations = [prompt.messages(q) for q in queries]
    params = local_llm.GenParams(max_new_tokens=max_new_tokens)
    singles = conversations[:4]
    eng.generate(singles[:1], params)  # warm-up: head cache and kernels
    rates = {}
    rates["base1"] = timed(
        "baseline single",
        lambda: sum(baseline_generate(eng._model, eng._tokenizer, [c], max_new_tokens) for c in singles),
    )
    rates["eng1"] = timed(
        "engine single", lambda: sum(eng.generate([c], params)[0].completion_tokens for c in singles)
    )
    chunks = [conversations[i : i + batch] for i in range(0, len(conversations), batch)]
    rates["baseB"] = timed(
        f"baseline batched ({batch})",
        lambda: sum(baseline_generate(eng._model, eng._tokenizer, c, max_new_tokens) for c in chunks),
    )
    rates["engB"] = timed(
        f"engine batched ({batch})",
        lambda: sum(r.completion_tokens for r in eng.generate(conversations, params)),
    )
    strict = local_llm.GenParams(max_new_tokens=max_new_tokens, decoding="strict")
    eng_dtype = str(eng._model.dtype).replace("torch.", "")
    rates["strictB"] = timed(
        "engine batched, strict decoding",
        lambda: sum(r.completion_tokens for r in eng.generate(conversations, strict)),
    )
    # QMD_FINETUNE_DTYPE=int8: the same weights, linear layers quantized (embedded.quantize_int8)
    from qmd_finetune import embedded

    eng._model, eng._heads = embedded.quantize_int8(eng._model), type(eng._heads)()
    eng.generate(singles[:1], params)  # warm-up: the int8 head cache
    rates["int8B"] = timed(
        "engine batched, int8", lambda: sum(r.completion_tokens for r in eng.generate(conversations, params))
    )
    rates["int8strictB"] = timed(
        "engine batched, int8, strict",
        lambda: sum(r.completion_tokens for r in eng.generate(conversations, strict)),
    )
    print(f"ratio single  engine/baseline: {rates['eng1'] / rates['base1']:.2f}x")
    print(f"ratio batched engine/baseline: {rates['engB'] / rates['baseB']:.2f}x")
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
        subprocess.run(args, env=env, check=True, capture_output=True, text=True)
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
    parser.add_argument("--batch", type=int, default=8)
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
