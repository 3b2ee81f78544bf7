"""Training quality: does curation make a better expansion model? (CPU, the embedded model)

Three numbers on ../shared/data/qmd-reference/eval_queries.txt, mean reward (%):
  base     the embedded SmolLM2-135M-Instruct as it ships
  curated  after LoRA SFT on the curated reference data (`curate balance`)
  raw      after LoRA SFT, same steps and settings, on the raw concatenation of the files
Prints ratios against the base measured in the same run; writes a JSON summary.

    .venv/bin/python bench/train_quality.py --steps 120 --out out/bench-train
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "qmd-reference"


def curate_with_pipeline(inputs: list[Path], output: Path) -> bool:
    """``curate balance`` (issue 3) through its CLI; False when it is not available or fails."""
    try:
        import qmd_finetune.curate.pipeline  # noqa: F401
    except ImportError:
        return False
    curate = Path(sys.executable).parent / "curate"
    if not curate.exists():
        return False
    args = [str(curate), "balance", "--output", str(output)]
    for path in inputs:
        args += ["--input", str(path)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0 or not output.is_file():
        print(f"curate balance failed ({done.returncode}): {done.stderr[-500:]}", file=sys.stderr)
        return False
    return True


def curate_minimal(inputs: list[Path], output: Path) -> int:
    """Fallback: modernize only-mode spelling, keep the best-scoring row per query, drop < 70."""
    from qmd_finetune.records import modernize_only, render
    from qmd_finetune.reward import score
    from qmd_finetune.training.prepare import read_input

    records, _ = read_input(list(inputs))
    best: dict[str, tuple[float, dict]] = {}
    for record in records:
        record.query, _ = modernize_only(record.query)
        pct = score(record.query, render(record.output)).percentage
        key = record.query.strip().lower()
        if pct >= 70 and (key not in best or pct > best[key][0]):
            best[key] = (pct, record.to_dict())
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for _, row in best.values():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(best)


def drop_flagged(curated: Path, output: Path) -> int:
    """Curated rows minus those `curate clean` flagged as boilerplate or lex filler (flags kept by default)."""
    from qmd_finetune.training.prepare import read_input

    records, _ = read_input([curated])
    kept = [
        r
        for r in records
        if not any(str(f).startswith(("boilerplate", "lex_filler")) for f in r.extra.get("flags") or [])
    ]
    output.write_text(
        "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
    )
    return len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=120, help="SFT steps for each of the two runs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-train")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--minimal-curation", action="store_true", help="skip `curate balance`")
    parser.add_argument(
        "--runs",
        default="base,curated,raw",
        help="comma list of base, curated, raw, strict (strict: curated minus rows clean flagged "
        "as boilerplate or lex filler)",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    from qmd_finetune.training.config import SFTRunConfig, build_config
    from qmd_finetune.training.evaluate import evaluate
    from qmd_finetune.training.prepare import prepare
    from qmd_finetune.training.sft import run_sft

    inputs = sorted(args.reference.glob("*.jsonl"))
    queries = args.reference / "eval_queries.txt"
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()

    curated = out / "curated.jsonl"
    method = "curate balance (qmd_finetune.curate pipeline)"
    if args.minimal_curation or not curate_with_pipeline(inputs, curated):
        curate_minimal(inputs, curated)
        method = (
            "MINIMAL fallback curation (modernize only-mode, dedup by query keeping best score, drop < 70)"
        )
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    sources = {"curated": [curated], "raw": inputs}
    if "strict" in runs:
        strict = out / "curated-strict.jsonl"
        kept = drop_flagged(curated, strict)
        sources["strict"] = [strict]
        print(f"strict: {kept} rows without boilerplate/lex_filler flags", flush=True)
    prep = {}
    for name, files in sources.items():
        if name not in runs:
            continue
        prep[name] = prepare(
            files, out / f"data-{name}", val_split=0.05, seed=42, with_only_variants=True
        ).info
        print(f"prepared {name}: {prep[name]['counts']}", flush=True)

    results: dict[str, dict] = {}

    def run_eval(name: str, model: str) -> None:
        t0 = time.monotonic()
        report = evaluate(
            model, queries, batch_size=8, max_new_tokens=args.max_new_tokens, limit=args.eval_limit
        )
        (out / f"eval-{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        results.setdefault(name, {}).update(mean=report["mean"], eval_seconds=round(time.monotonic() - t0, 1))
        print(f"eval {name}: mean {report['mean']:.1f}% ({results[name]['eval_seconds']}s)", flush=True)

    if "base" in runs:
        run_eval("base", "local/smollm2")
    for name in [r for r in ("curated", "raw", "strict") if r in runs]:
        config = build_config(
            SFTRunConfig,
            {
                "dataset": str(out / f"data-{name}"),
                "output_dir": str(out / f"sft-{name}"),
                "max_steps": args.steps,
                "per_device_train_batch_size": args.batch_size,
                "gradient_accumulation_steps": 1,
                "learning_rate": args.learning_rate,
                "lora_r": 32,
                "lora_alpha": 64,
                "logging_steps": max(1, args.steps // 10),
                "save_steps": args.steps * 10,
                "torch_num_threads": args.threads,
            },
        )
        info = run_sft(config, log=lambda m, tag=name: print(f"  [{tag}] {m}", flush=True))
        results[name] = {
            "train_seconds": info["seconds"],
            "steps": info["global_step"],
            "last_loss": info["last_loss"],
        }
        run_eval(name, str(out / f"sft-{name}" / "merged"))

    base = results.get("base", {}).get("mean", 0.0)
    print()
    print(f"curation: {method}")
    print("train rows: " + ", ".join(f"{name} {p['counts']['train']}" for name, p in prep.items()))
    raw = results.get("raw", {}).get("mean")
    print(
        f"{'model':10} {'mean %':>8} {'vs base':>9} {'vs raw':>7} {'steps':>6} {'train s':>8} {'eval s':>7}"
    )
    for name in runs:
        r = results[name]
        vs_raw = f"{r['mean'] / raw:.2f}x" if raw else "n/a"
        print(
            f"{name:10} {r['mean']:8.1f} {r['mean'] - base:+8.1f}p {vs_raw:>7} {r.get('steps', 0):6} "
            f"{r.get('train_seconds', 0):8.0f} {r['eval_seconds']:7.0f}"
        )
    if "curated" in results and "raw" in results:
        print(f"curated - raw: {results['curated']['mean'] - results['raw']['mean']:+.1f} points")
    for name in ("curated", "strict"):
        if name in results:
            print(f"{name}: target mean >= 80%: {'met' if results[name]['mean'] >= 80 else 'not met'}")
    print(f"total wall time {time.monotonic() - started:.0f}s")
    summary = {"curation": method, "steps": args.steps, "results": results, "prepare": prep}
    (out / "bench.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
