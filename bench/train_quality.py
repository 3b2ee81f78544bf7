"""Model quality: does curation make a better expansion model? (CPU, the embedded model)

The same SFT recipe (configs/sft.yaml unless --config, with --set overrides) is trained on
  raw      the raw concatenation of ../shared/data/qmd-reference/*.jsonl
  curated  the same files after `curate balance` (plus --curate-args)
and compared with the base SmolLM2-135M-Instruct on eval_queries.txt. Per model: mean reward
under rubric v1 and v2, per category, the format-complete rate (answers with lex and vec, or
the asked kind in only mode), the echo rate (answers with a lex line that echoes the query),
the distinct-lex ratio (distinct lex lines / lex lines), the quality-gate pass rate, the
template rate (answers whose hyde passage 3+ queries share: quality.template_answers), and the
train and eval time. Prints points against base and raw measured in the same run; writes
bench.json and bench.png into --out.

With --retrieval, a seeded test split of the reference queries (retrieval.held_out_by_query)
is held out of both training sets (every copy of a test query, and every row with a test
record's hyde, is removed before curation),
and each model also answers the test queries: recall@10 and MRR@10 of qmd-style hybrid search
over the known-item collection built from them (docs/retrieval.md), next to the rubric on the
same answers; the gold expansions are the upper bound row.

    .venv/bin/python bench/train_quality.py --steps 120 --out out/bench-train
    .venv/bin/python bench/train_quality.py --runs curated --set learning_rate=1e-3 --set lora_r=16
    .venv/bin/python bench/train_quality.py --retrieval --retrieval-limit 300 --steps 120
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "qmd-reference"
RUBRICS = ("v1", "v2")


def curate(inputs: list[Path], output: Path, extra: list[str]) -> None:
    """``curate balance`` through its CLI, as a user runs it."""
    args = [str(Path(sys.executable).parent / "curate"), "balance", "--output", str(output)]
    args += ["--input", *map(str, inputs), *extra]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0 or not output.is_file():
        sys.exit(f"curate balance failed ({done.returncode}): {done.stderr[-800:]}")


def answer_metrics(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Rubric means (v1, v2), per category, and the format measures over one model's answers."""
    from qmd_finetune import quality
    from qmd_finetune.records import only_mode, parse_prefixed
    from qmd_finetune.reward import echoes, score

    per_rubric: dict[str, list[float]] = {r: [] for r in RUBRICS}
    categories: dict[str, dict[str, list[float]]] = defaultdict(lambda: {r: [] for r in RUBRICS})
    complete = echo = gate_pass = 0
    lex_total = lex_distinct = 0
    for row in results:
        query, text = row["query"], row["output"]
        for rubric in RUBRICS:
            pct = score(query, text, rubric=rubric).percentage
            per_rubric[rubric].append(pct)
            categories[row["category"]][rubric].append(pct)
        items, _ = parse_prefixed(text)
        kinds = {kind for kind, _ in items}
        base, only = only_mode(query)
        complete += (only in kinds) if only else {"lex", "vec"} <= kinds
        lex = [t for k, t in items if k == "lex"]
        echo += any(echoes(line, base) for line in lex)
        lex_total += len(lex)
        lex_distinct += len({line.strip().lower() for line in lex})
        gate_pass += not quality.check_text(query, text)
    n = len(results)
    templates = quality.template_answers([(row["query"], row["output"]) for row in results])
    return {
        "n": n,
        "mean": {r: round(mean(v), 2) for r, v in per_rubric.items()},
        "categories": {
            name: {"n": len(v["v2"]), **{r: round(mean(v[r]), 1) for r in RUBRICS}}
            for name, v in sorted(categories.items())
        },
        "format_complete": round(complete / n, 3),
        "echo_rate": round(echo / n, 3),
        "distinct_lex": round(lex_distinct / lex_total, 3) if lex_total else None,
        "gate_pass": round(gate_pass / n, 3),
        "template_rate": round(sum(templates) / n, 3),
    }


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Mean reward per model under both rubrics, and per category (v2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    cats = sorted({c for r in results.values() for c in r["categories"]})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 2.4]})
    width = 0.38
    for i, rubric in enumerate(RUBRICS):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        left.bar(xs, [results[n]["mean"][rubric] for n in names], width, label=f"rubric {rubric}")
    left.set_xticks(range(len(names)), names)
    left.set_ylim(0, 100)
    left.set_ylabel("mean reward (%)")
    left.set_xlabel("model")
    left.set_title("eval_queries.txt")
    left.legend(loc="lower right")
    step = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * step for j in range(len(cats))]
        values = [results[name]["categories"].get(c, {}).get("v2", 0) for c in cats]
        right.bar(xs, values, step, label=name)
    right.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    right.set_ylim(0, 100)
    right.set_ylabel("mean reward, rubric v2 (%)")
    right.set_xlabel("eval category")
    right.set_title("per category")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hold_out_test_split(inputs: list[Path], out: Path, fraction: float) -> tuple[list[Path], Any]:
    """Training copies of ``inputs`` without any held-out query or hyde passage, and the
    known-item collection of the held-out records (all other records are its distractors)."""
    from qmd_finetune.training.retrieval import (
        held_out_by_query,
        hyde_text,
        known_item_collection,
        query_key,
        read_records_strict,
    )

    records = read_records_strict(inputs)
    held = held_out_by_query(records, fraction=fraction)
    test_keys = {query_key(r.query) for r, h in zip(records, held) if h}
    # A paraphrased query with a test record's hyde would teach the test answer: drop it too.
    test_hydes = {hyde_text(r) for r, h in zip(records, held) if h} - {""}
    (out / "train-inputs").mkdir(parents=True)
    kept: list[Path] = []
    for path in inputs:
        target = out / "train-inputs" / path.name
        rows = [
            r
            for r in read_records_strict([path])
            if query_key(r.query) not in test_keys and hyde_text(r) not in test_hydes
        ]
        target.write_text("".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows), "utf-8")
        kept.append(target)
    return kept, known_item_collection(records, held, name="reference test split")


def retrieval_eval(name: str, model: str, collection: Any, args: Any, out: Path) -> dict[str, Any]:
    """The model's answers to the test queries: retrieval metrics and the rubric on the same answers."""
    from qmd_finetune.training.retrieval import evaluate_model

    report = evaluate_model(model, collection, 8, args.max_new_tokens, decoding=args.decoding)
    (out / f"retrieval-{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    retrieval = report["retrieval"]
    return {
        "metrics": retrieval["metrics"],
        "rubric_v1": answer_metrics(report["results"])["mean"]["v1"],
        "search_seconds": retrieval["search_seconds"],
    }


def print_retrieval(collection: Any, rows: dict[str, dict[str, Any]]) -> None:
    """recall@10 / MRR@10 per list family and model, and the rubric on the same answers."""
    lists = ("query", "lex", "vec", "hyde", "hybrid")
    print(
        f"\nretrieval, held-out test split: {len(collection.query_ids)} queries over "
        f"{len(collection.doc_ids)} documents; recall@10 / MRR@10 (query = the raw query alone)"
    )
    print(f"{'model':8}" + "".join(f"{name:>14}" for name in lists) + f"{'v1 % (test)':>12}")
    for name, row in rows.items():
        cells = [f"{row['metrics'][n]['recall@10']:.3f}/{row['metrics'][n]['mrr@10']:.3f}" for n in lists]
        rubric = "" if row["rubric_v1"] is None else f"{row['rubric_v1']:.1f}"
        print(f"{name:8}" + "".join(f"{c:>14}" for c in cells) + f"{rubric:>12}")


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            sys.exit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "sft.yaml", help="SFT recipe")
    parser.add_argument("--set", action="append", default=[], help="recipe override key=value (repeat)")
    parser.add_argument(
        "--steps", type=int, default=None, help="max_steps for each run (default: the recipe's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--decoding", default="strict", choices=["free", "safe", "strict"])
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-train")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--curate-args", default="", help="extra `curate balance` flags, one string")
    parser.add_argument("--only-variants", action="store_true", help="train prepare --only-variants")
    parser.add_argument("--runs", default="base,raw,curated", help="comma list of base, raw, curated")
    parser.add_argument("--retrieval", action="store_true", help="hold out a test split; retrieval eval")
    parser.add_argument("--retrieval-fraction", type=float, default=0.1, help="share of queries held out")
    parser.add_argument("--retrieval-limit", type=int, default=None, help="only the first N test queries")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    from qmd_finetune.training.config import SFTRunConfig, load_config
    from qmd_finetune.training.evaluate import evaluate
    from qmd_finetune.training.prepare import prepare
    from qmd_finetune.training.sft import run_sft

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - {"base", "raw", "curated"}
    if unknown:
        sys.exit(f"unknown run(s): {', '.join(sorted(unknown))}")
    inputs = sorted(args.reference.glob("*.jsonl"))
    queries = args.reference / "eval_queries.txt"
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    collection = None
    if args.retrieval:
        inputs, collection = hold_out_test_split(inputs, out, args.retrieval_fraction)
        collection = collection.limit(args.retrieval_limit)
        print(f"retrieval: {collection.counts}", flush=True)
    sources: dict[str, list[Path]] = {"raw": inputs}
    if "curated" in runs:
        curate(inputs, out / "curated.jsonl", args.curate_args.split())
        sources["curated"] = [out / "curated.jsonl"]
    prep = {}
    for name in [r for r in ("raw", "curated") if r in runs]:
        # The reference data has no split column: prepare splits it (5% val), same seed for both.
        info = prepare(
            sources[name],
            out / f"data-{name}",
            val_split=0.05,
            seed=42,
            with_only_variants=args.only_variants,
        )
        prep[name] = info.info["counts"]
        print(f"prepared {name}: {prep[name]}", flush=True)

    results: dict[str, dict[str, Any]] = {}

    def run_eval(name: str, model: str) -> None:
        t0 = time.monotonic()
        report = evaluate(
            model, queries, batch_size=8, max_new_tokens=args.max_new_tokens, limit=args.eval_limit,
            decoding=args.decoding,
        )  # fmt: skip
        (out / f"eval-{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        metrics = answer_metrics(report["results"])
        metrics["eval_seconds"] = round(time.monotonic() - t0, 1)
        results.setdefault(name, {}).update(metrics)
        m = metrics["mean"]
        print(f"eval {name}: v1 {m['v1']:.1f}%  v2 {m['v2']:.1f}%  ({metrics['eval_seconds']}s)", flush=True)
        if collection is not None:
            results[name]["retrieval"] = retrieval_eval(name, model, collection, args, out)

    if collection is not None:
        from qmd_finetune.training.retrieval import evaluate_answers

        gold_answers = [collection.gold[q] for q in collection.query_ids]
        gold = evaluate_answers(collection, gold_answers)
        rows = [{"query": q, "output": a, "category": "-"} for q, a in zip(collection.queries, gold_answers)]
        results_gold = {
            "metrics": gold["metrics"],
            "rubric_v1": answer_metrics(rows)["mean"]["v1"],
            "search_seconds": gold["search_seconds"],
        }

    if "base" in runs:
        run_eval("base", "local/smollm2")
    overrides = parse_sets(args.set)
    if args.steps is not None:
        overrides["max_steps"] = str(args.steps)
    if args.threads:
        overrides["torch_num_threads"] = str(args.threads)
    recipe: dict[str, Any] = {}
    for name in [r for r in ("raw", "curated") if r in runs]:
        config = load_config(
            SFTRunConfig,
            args.config,
            {**overrides, "dataset": str(out / f"data-{name}"), "output_dir": str(out / f"sft-{name}")},
        )
        recipe = {k: v for k, v in vars(config).items() if k not in ("dataset", "output_dir")}
        info = run_sft(config, log=lambda m, tag=name: print(f"  [{tag}] {m}", flush=True))
        results[name] = {
            "train_seconds": info["seconds"],
            "steps": info["global_step"],
            "last_loss": info["last_loss"],
        }
        run_eval(name, str(out / f"sft-{name}" / "merged"))

    base = results.get("base", {}).get("mean")
    raw = results.get("raw", {}).get("mean")
    print()
    print("train rows: " + ", ".join(f"{name} {c['train']}" for name, c in prep.items()))
    head = f"{'model':8} {'v1 %':>6} {'v2 %':>6} {'v1 vs base':>10} {'v1 vs raw':>9} {'complete':>8}"
    print(
        head
        + f" {'echo':>5} {'dist.lex':>8} {'gate ok':>7} {'templ.':>6} {'steps':>5} {'train min':>9} {'eval s':>6}"
    )
    for name in runs:
        r = results[name]
        vs_base = f"{r['mean']['v1'] - base['v1']:+.1f}p" if base else "n/a"
        vs_raw = f"{r['mean']['v1'] - raw['v1']:+.1f}p" if raw and name != "raw" else "n/a"
        print(
            f"{name:8} {r['mean']['v1']:6.1f} {r['mean']['v2']:6.1f} {vs_base:>10} {vs_raw:>9} "
            f"{r['format_complete']:8.0%} {r['echo_rate']:5.0%} {r['distinct_lex'] or 0:8.2f} {r['gate_pass']:7.0%} "
            f"{r.get('template_rate', 0):6.0%} {r.get('steps', 0):5} {r.get('train_seconds', 0) / 60:9.1f} {r['eval_seconds']:6.0f}"
        )
    if "curated" in results and "raw" in results:
        for rubric in RUBRICS:
            delta = results["curated"]["mean"][rubric] - results["raw"]["mean"][rubric]
            print(f"curated - raw ({rubric}): {delta:+.1f} points")
    cats = sorted({c for r in results.values() for c in r["categories"]})
    print(f"\n{'category (v1/v2)':24}" + "".join(f"{name:>14}" for name in runs))
    for cat in cats:
        cells = []
        for name in runs:
            c = results[name]["categories"].get(cat)
            cells.append(f"{c['v1']:6.1f}/{c['v2']:5.1f}" if c else "")
        print(f"{cat:24}" + "".join(f"{cell:>14}" for cell in cells))
    if collection is not None:
        print_retrieval(collection, {"gold": results_gold, **{n: results[n]["retrieval"] for n in runs}})
    print(f"total wall time {time.monotonic() - started:.0f}s; load {os.getloadavg()[0]:.2f}")
    summary = {
        "recipe": recipe,
        "config": str(args.config),
        "decoding": args.decoding,
        "curate_args": args.curate_args,
        "load_average": os.getloadavg(),
        "prepare": prep,
        "results": results,
        "retrieval_gold": results_gold if collection is not None else None,
    }
    (out / "bench.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    chart(results, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")


if __name__ == "__main__":
    main()
