"""Benchmark: the curation pipeline on 1,000,000 rows, against a per-row Python baseline.

Rows are made from ../shared/data/qmd-reference/*.jsonl with perturbations: case and
spacing changes, near-duplicate edits of the query, conflicting outputs for the same query,
new distinct queries, legacy formats ({"input", "output": "lex: ..\\nvec: .."} and
{"query", "searches": [...]}) and some bad lines. The pipeline is

    validate -> normalize -> clean -> dedup (exact + near) -> score -> balance -> write

run through the real runner (qmd_finetune.curate.pipeline) on the full file, and, on a
100k-row sample of the same file, both the runner and a straightforward per-row Python
implementation of the same stages (json.loads + coerce_record + schema check per line,
regexes per row, dict for exact dedup, datasketch MinHash + LSH per row, reward.score per
row, sort for balance, json.dumps per row). Each measurement runs in its own process; peak
memory is the process tree's PSS (the scorer forks workers that share the parent's pages;
summing their RSS would count those twice), sampled every 50 ms; the parent's own peak RSS
is printed too.

    python bench/curate_pipeline.py [--rows 1000000] [--sample 100000] [--workdir DIR]

Targets (2-core machine): 1M rows under 60 s and under 4 GiB. The machine may be shared:
the load average before and after each run is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "qmd-reference"
MODIFIERS = (
    "for beginners", "in 2025", "near me", "checklist", "on a budget", "for kids", "step by step",
    "mistakes to avoid", "vs alternatives", "history", "cost", "at home", "for teams", "examples",
    "pros and cons", "faq", "in python", "on linux", "for small business", "in winter", "quick tips",
    "best practices", "troubleshooting", "cheat sheet", "for seniors", "without tools", "from scratch",
    "explained simply", "in spanish", "case study", "common questions", "myths", "safety", "timeline",
    "comparison", "advanced", "templates", "metrics", "for students", "weekend plan",
)  # fmt: skip
BALANCE_TARGETS = {"default": 0.12}
"""Every category capped at 12% of the rows reaching balance (the bench has no categorize)."""


# ---------------------------------------------------------------- the input


def _load_reference() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(REFERENCE.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _case(rng: random.Random, text: str) -> str:
    choice = rng.random()
    if choice < 0.3:
        return text.lower()
    if choice < 0.5:
        return text.title()
    if choice < 0.6:
        return text.upper()
    return text


def _spacing(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    if len(words) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(words) - 1)
        words[i] = words[i] + " "
    out = " ".join(words)
    return ("  " if rng.random() < 0.3 else "") + out + (" " if rng.random() < 0.3 else "")


def _near_edit(rng: random.Random, query: str) -> str:
    base, sep, suffix = query.partition(" /only:")
    chars = list(base)
    if len(chars) < 4:
        return base + "s" + (sep + suffix if sep else "")
    i = rng.randrange(1, len(chars) - 1)
    op = rng.randrange(4)
    if op == 0:
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    elif op == 1:
        del chars[i]
    elif op == 2:
        chars.insert(i, chars[i])
    else:
        chars.append("s")
    return "".join(chars) + (sep + suffix if sep else "")


def _items(record: dict[str, Any]) -> list[list[str]]:
    output = record.get("output")
    return [list(item) for item in output] if isinstance(output, list) else []


def _legacy(rng: random.Random, query: str, items: list[list[str]]) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"input": query, "output": "\n".join(f"{k}: {t}" for k, t in items)}
    return {"query": query, "searches": [{"type": k, "query": t} for k, t in items]}


BAD_LINES = (
    '{"query": "truncated line", "output": [["lex", "x"]',
    '["not", "an", "object"]',
    '{"query": "", "output": [["lex", "empty query"]]}',
    '{"query": "unknown kind", "output": [["keywords", "a b c"]]}',
    '{"query": "empty text", "output": [["lex", "  "]]}',
    '{"query": "wrong type", "output": 42}',
)


def make_dataset(path: Path, rows: int, seed: int = 0) -> Counter[str]:
    """Write ``rows`` perturbed lines; returns how many of each kind were made."""
    rng = random.Random(seed)
    reference = [r for r in _load_reference() if _items(r) and isinstance(r.get("query"), str)]
    made: Counter[str] = Counter()
    with open(path, "w", encoding="utf-8") as handle:
        lines = []
        for _ in range(rows):
            base = rng.choice(reference)
            query, items = base["query"], _items(base)
            roll = rng.random()
            record: dict[str, Any] | None = None
            if roll < 0.01:
                lines.append(rng.choice(BAD_LINES))
                made["bad line"] += 1
                continue
            if roll < 0.05:
                record = _legacy(rng, _spacing(rng, query), items)
                made["legacy format"] += 1
            elif roll < 0.20:
                query = f"{query.partition(' /only:')[0]} {rng.choice(MODIFIERS)}"
                made["new distinct query"] += 1
            elif roll < 0.55:
                query = _near_edit(rng, query)
                made["near-duplicate edit"] += 1
            else:
                query = _spacing(rng, _case(rng, query))
                made["case/spacing copy"] += 1
                if len(items) > 2 and rng.random() < 0.15:
                    items = items[:-1]  # a conflicting output for the same query
                    made["conflicting output"] += 1
            if record is None:
                if rng.random() < 0.2:
                    items = [[k, f"  {t}  "] for k, t in items]
                record = {"query": query, "output": items}
                if base.get("category"):
                    record["category"] = base["category"]
            lines.append(json.dumps(record, ensure_ascii=False))
            if len(lines) >= 50_000:
                handle.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            handle.write("\n".join(lines) + "\n")
    return made


# ---------------------------------------------------------------- the pipeline (runner)


def run_fast(input_path: Path, output: Path) -> dict[str, Any]:
    from qmd_finetune.curate.pipeline import PipelineConfig, StageSpec, run_pipeline

    config = PipelineConfig(
        inputs=[input_path],
        output=output,
        stages=[
            StageSpec("validate"),
            StageSpec("normalize"),
            StageSpec("clean"),
            StageSpec("dedup", {"exact": True, "near": True}),
            StageSpec("score"),
            StageSpec("balance", {"targets": BALANCE_TARGETS, "seed": 0}),
        ],
    )
    started = time.perf_counter()
    run = run_pipeline(config, command="bench")
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "rows_in": run.rows_in,
        "kept": run.kept,
        "rejected": run.rejected,
        "stages": [(s.name, s.rows_in, s.kept, s.rejected, round(s.seconds, 2)) for s in run.stages],
        "write": round(wall - sum(s.seconds for s in run.stages), 2),
    }


# ---------------------------------------------------------------- the per-row baseline

_WS = re.compile(r"\s+")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_CHAT = re.compile(r"<\|(?:im_start|im_end|endoftext)\|>")
_ONLY = re.compile(r"\s+/only:(lex|vec|hyde)\s*$", re.IGNORECASE)
_WORDS = re.compile(r"[^\w\s]")


def _word_re(words: list[str]) -> re.Pattern[str]:
    alternatives = sorted({w.lower() for w in words}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in alternatives) + r")\b", re.IGNORECASE)


def run_baseline(input_path: Path, output: Path) -> dict[str, Any]:
    """The same stages, one row at a time in plain Python."""
    from datasketch import MinHash, MinHashLSH

    from qmd_finetune.curate.clean import load_rules
    from qmd_finetune.records import KIND_ORDER, RecordError, coerce_record, modernize_only
    from qmd_finetune.resources import validator
    from qmd_finetune.reward import echoes, score

    timings: dict[str, float] = {}
    started = t = time.perf_counter()
    schema = validator("record")
    rows: list[dict[str, Any]] = []
    rejected: Counter[str] = Counter()
    with open(input_path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = coerce_record(json.loads(line))
                errors = list(schema.iter_errors(record.to_dict()))
                if errors:
                    raise RecordError(errors[0].message)
            except (ValueError, RecordError):
                rejected["validate"] += 1
                continue
            rows.append({"query": record.query, "output": list(record.output), "category": record.category})
    timings["validate"] = time.perf_counter() - t

    t = time.perf_counter()
    normalized = []
    for row in rows:
        query, _ = modernize_only(_WS.sub(" ", row["query"]).strip())
        items = []
        for kind, text in row["output"]:
            text = _WS.sub(" ", _CHAT.sub(" ", _THINK.sub(" ", text))).strip()
            if text:
                items.append((kind.lower(), text))
        items.sort(key=lambda item: KIND_ORDER[item[0]])
        if not query or not items:
            rejected["normalize"] += 1
            continue
        row["query"], row["output"] = query, items
        normalized.append(row)
    rows = normalized
    timings["normalize"] = time.perf_counter() - t

    t = time.perf_counter()
    rules = load_rules()
    settings = rules.settings
    filler = _word_re(settings["filler_words"])
    tech_context = rules.tech_context
    terms = [
        (_word_re(s.forms), _word_re(s.tech + tech_context), _word_re(s.everyday), s.term)
        for s in rules.terms
    ]
    signatures: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        base = _ONLY.sub("", row["query"]).strip().lower()
        row["_base"] = base
        base_words = set(_WORDS.sub(" ", base).split())
        row["_sigs"] = []
        for kind, text in row["output"]:
            if kind in settings["boilerplate_kinds"]:
                sig = " ".join(sorted(set(_WORDS.sub(" ", text.lower()).split()) - base_words))
                signatures[(kind, sig)].add(base)
                row["_sigs"].append((kind, sig))
    for row in rows:
        flags = []
        base = row["_base"]
        only = _ONLY.search(row["query"])
        kinds = Counter(kind for kind, _ in row["output"])
        if only and not kinds[only.group(1).lower()]:
            flags.append("only_mode_missing_kind")
        text = " ".join(t for _, t in row["output"])
        for forms, tech, everyday, term in terms:
            if forms.search(base) and tech.search(base) and everyday.search(text):
                flags.append(f"everyday_sense:{term}")
                break
        for kind, sig in row["_sigs"]:
            if sig and len(signatures[(kind, sig)]) >= settings["boilerplate_min_queries"]:
                flags.append(f"boilerplate:{kind}")
        lex = [t for k, t in row["output"] if k == "lex"]
        if lex and all(set(m.lower() for m in filler.findall(t)) - set(base.split()) for t in lex):
            flags.append("lex_filler")
        for kind, item in row["output"]:
            if kind in ("lex", "vec") and echoes(item, base):
                flags.append(f"echo:{kind}")
        if not only:
            flags.extend(f"missing:{k}" for k in ("lex", "vec") if not kinds[k])
            hyde = [t for k, t in row["output"] if k == "hyde"]
            if hyde and not settings["hyde_min_chars"] <= len(hyde[0]) <= settings["hyde_max_chars"]:
                flags.append("hyde_length")
        row["flags"] = flags
    kept = [r for r in rows if "only_mode_missing_kind" not in r["flags"]]
    rejected["clean"] += len(rows) - len(kept)
    rows = kept
    timings["clean"] = time.perf_counter() - t

    t = time.perf_counter()

    def render(items: list[tuple[str, str]]) -> str:
        return "\n".join(f"{k}: {v}" for k, v in items)

    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["query"].lower().rstrip("?!.")
        current = best.get(key)
        if current is None:
            best[key] = row
            continue
        rejected["dedup"] += 1
        if current["output"] != row["output"]:
            for candidate in (current, row):
                if "score" not in candidate:
                    candidate["score"] = score(candidate["query"], render(candidate["output"])).percentage
            if row["score"] > current["score"]:
                best[key] = row
    rows = list(best.values())
    lsh = MinHashLSH(threshold=0.85, num_perm=64)
    kept = []
    for i, row in enumerate(rows):
        padded = f" {row['query'].lower()} "
        minhash = MinHash(num_perm=64, seed=1)
        for j in range(len(padded) - 2):
            minhash.update(padded[j : j + 3].encode("utf-8"))
        if lsh.query(minhash):
            rejected["dedup"] += 1
            continue
        lsh.insert(str(i), minhash)
        kept.append(row)
    rows = kept
    timings["dedup"] = time.perf_counter() - t

    t = time.perf_counter()
    for row in rows:
        result = score(row["query"], render(row["output"]))
        row["score"], row["rating"], row["deductions"] = result.percentage, result.rating, result.deductions
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    cap = round(BALANCE_TARGETS["default"] * len(rows))
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_category[row["category"] or "uncategorized"].append(row)
    rng = random.Random(0)
    kept = []
    for group in by_category.values():
        rng.shuffle(group)
        group.sort(key=lambda r: -r["score"])
        kept.extend(group[:cap])
        rejected["balance"] += max(0, len(group) - cap)
    rows = kept
    timings["balance"] = time.perf_counter() - t

    t = time.perf_counter()
    with open(output, "w", encoding="utf-8") as handle:
        for row in rows:
            record = {k: v for k, v in row.items() if not k.startswith("_")}
            record["output"] = [list(item) for item in record["output"]]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    timings["write"] = time.perf_counter() - t
    return {
        "wall": time.perf_counter() - started,
        "kept": len(rows),
        "rejected": sum(rejected.values()),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }


# ---------------------------------------------------------------- measuring


def measure(mode: str, input_path: Path, output: Path) -> dict[str, Any]:
    """Run one mode in a child process; peak memory (tree PSS, parent RSS) sampled every 50 ms."""
    import psutil

    load_before = os.getloadavg()[0]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--input", str(input_path), "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak_pss = peak_rss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_pss, peak_rss
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                # PSS splits pages shared with forked scoring workers; RSS would count them twice.
                peak_pss = max(peak_pss, sum(p.memory_full_info().pss for p in tree))
                peak_rss = max(peak_rss, parent.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_gib"] = round(peak_pss / 2**30, 2)
    result["peak_parent_rss_gib"] = round(peak_rss / 2**30, 2)
    result["load_before"] = round(load_before, 2)
    result["load_after"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["fast", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = (run_fast if args.child == "fast" else run_baseline)(args.input, args.output)
        print(json.dumps(result))
        return

    if not REFERENCE.exists():
        sys.exit(f"reference data not found at {REFERENCE}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    full, sample = workdir / "input.jsonl", workdir / "sample.jsonl"
    t = time.perf_counter()
    made = make_dataset(full, args.rows, args.seed)
    with open(full, encoding="utf-8") as src, open(sample, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= args.sample:
                break
            dst.write(line)
    print(f"made {args.rows:,} rows in {time.perf_counter() - t:.1f}s ({full.stat().st_size / 2**20:.0f} MiB): "
          + ", ".join(f"{k} {v:,}" for k, v in made.most_common()))  # fmt: skip
    print(f"cores: {os.cpu_count()}, load average now: {os.getloadavg()[0]:.2f}")

    big = measure("fast", full, workdir / "out_full.jsonl")
    fast = measure("fast", sample, workdir / "out_sample_fast.jsonl")
    base = measure("baseline", sample, workdir / "out_sample_baseline.jsonl")

    print(f"\npipeline on {args.rows:,} rows: {big['wall']:.1f} s wall, peak memory {big['peak_rss_gib']:.2f} GiB "
          f"(tree PSS; parent RSS {big['peak_parent_rss_gib']:.2f} GiB; load {big['load_before']} -> {big['load_after']})")  # fmt: skip
    print(f"  {'stage':<10} {'in':>10} {'kept':>10} {'rejected':>10} {'seconds':>8}")
    for name, rows_in, kept, rejected, seconds in big["stages"]:
        print(f"  {name:<10} {rows_in:>10,} {kept:>10,} {rejected:>10,} {seconds:>8.2f}")
    print(f"  {'write':<10} {'':>10} {'':>10} {'':>10} {big['write']:>8.2f}")
    print(f"  rows in {big['rows_in']:,} = kept {big['kept']:,} + rejected {big['rejected']:,}")
    target = "met" if big["wall"] < 60 and big["peak_rss_gib"] < 4 else "MISSED"
    print(f"  target (< 60 s, < 4 GiB): {target}")

    print(f"\nsample of {args.sample:,} rows, same stages:")
    print(
        f"  runner:   {fast['wall']:.1f} s, peak memory {fast['peak_rss_gib']:.2f} GiB, kept {fast['kept']:,}"
    )
    print(f"  per-row:  {base['wall']:.1f} s, peak memory {base['peak_rss_gib']:.2f} GiB, kept {base['kept']:,}  "
          f"({', '.join(f'{k} {v}s' for k, v in base['timings'].items())})")  # fmt: skip
    print(f"  ratio (per-row / runner): {base['wall'] / fast['wall']:.1f}x")
    print(f"\nfiles in {workdir}")


if __name__ == "__main__":
    main()
