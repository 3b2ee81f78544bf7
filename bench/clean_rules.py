"""Measure the clean rules on the reference data: what each junk rule removes, and what each fix changes.

    python bench/clean_rules.py [--samples 10] [--seed 0] [--json out/clean_rules.json]

Prints, on ../shared/data/qmd-reference/*.jsonl after normalize:

1. per junk rule (degenerate by gate rule, boilerplate, lex_filler): rows it fires on, rows it
   removes by default (the first rule in clean.RULE_NAMES names the reason), per input file;
2. the boilerplate threshold sweep (rows firing at each ``boilerplate_min_queries``, per file);
3. ``--samples`` seeded random examples per rule, to be read and judged by a person
   (docs/curate-stages.md records the judgements and the precision);
4. per fix (hyde_trim, lex_echo, lex_longer, the ``train`` preset) on the rows clean keeps:
   rows changed and the rubric deductions before/after (hyde too long, lex echoes the query,
   lex longer than vec, hyde repeats words) under rubric v1 and v2, and the mean score.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

import polars as pl

from qmd_finetune import reward
from qmd_finetune.curate import clean, normalize
from qmd_finetune.io import read_records

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "qmd-reference"
DEDUCTIONS = {
    "hyde too long": re.compile(r"^hyde too long|^hyde length \d+ outside"),
    "lex echoes query": re.compile(r"^lex echoes query"),
    "lex longer than vec": re.compile(r"^lex lines longer than vec"),
    "hyde repeats words": re.compile(r"^hyde repeats words"),
}
JUNK = ("degenerate", "boilerplate", "lex_filler")


def file_of(source: str) -> str:
    return Path(source).stem.removeprefix("qmd_").removeprefix("expansion_")


def junk_rules(frame: pl.DataFrame, samples: int, seed: int) -> dict:
    flagged = clean.run(frame, keep_flagged=True).kept
    default = clean.run(frame)
    removed = Counter(reason for reason in default.rejected["_reason"].to_list())  # by the reason that won
    out: dict = {"rows": frame.height, "kept_by_default": default.kept.height, "rules": {}}
    rng = random.Random(seed)
    rows = flagged.select("query", "output", "_source", "flags").to_dicts()
    labels = sorted(
        {
            f.split(":")[0] + (":" + f.split(":")[1] if f.startswith("degenerate") else "")
            for r in rows
            for f in r["flags"]
            if f.split(":")[0] in JUNK
        }
    )
    for label in labels:
        hits = [r for r in rows if any(f == label or f.startswith(label + ":") for f in r["flags"])]
        per_file = Counter(file_of(r["_source"]) for r in hits)
        picked = rng.sample(hits, min(samples, len(hits)))
        out["rules"][label] = {
            "fired": len(hits),
            "per_file": dict(per_file.most_common()),
            "examples": [
                {"file": file_of(r["_source"]), "query": r["query"], "output": r["output"]} for r in picked
            ],
        }
    out["removed_by_reason"] = dict(removed.most_common())
    return out


def boilerplate_sweep(frame: pl.DataFrame) -> dict:
    sweep = {}
    only = {name: "off" for name in clean.RULE_NAMES if name != "boilerplate"}
    for threshold in (3, 5, 10, 20, 50, 100):
        kept = clean.run(frame, keep_flagged=True, actions=only, boilerplate_min_queries=threshold).kept
        hit = kept.filter(pl.col("flags").list.len() > 0)
        sweep[threshold] = {
            "rows": hit.height,
            "per_file": dict(Counter(map(file_of, hit["_source"])).most_common()),
        }
    return sweep


def deductions(frame: pl.DataFrame, rubric: str) -> dict:
    counts: Counter = Counter()
    scores = []
    for query, output in zip(frame["query"].to_list(), frame["output"].to_list()):
        result = reward.score(query, reward.render_items(output), rubric=rubric)
        scores.append(result.percentage)
        for name, pattern in DEDUCTIONS.items():
            if any(pattern.search(d) for d in result.deductions):
                counts[name] += 1
    return {
        "rows": frame.height,
        "mean": round(sum(scores) / max(1, len(scores)), 2),
        **{k: counts[k] for k in DEDUCTIONS},
    }


def fix_effects(frame: pl.DataFrame) -> dict:
    base = clean.run(frame)
    before = base.kept
    effects = {"none": {r: deductions(before, r) for r in ("v1", "v2")}}
    for fix in ("hyde_trim", "lex_echo", "lex_longer", "train"):
        result = clean.run(frame, fix=fix)
        after = result.kept
        changed = int((before["output"] != after["output"]).sum())
        effects[fix] = {
            "rows_changed": changed,
            "counts": {
                k: v for k, v in result.counts.items() if k.startswith("fixed:") or k == "flagged:hyde_length"
            },
            **{r: deductions(after, r) for r in ("v1", "v2")},
        }
    return effects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    frame = normalize.run(read_records(sorted(REFERENCE.glob("*.jsonl"))).frame).kept
    report = {
        "junk": junk_rules(frame, args.samples, args.seed),
        "boilerplate_sweep": boilerplate_sweep(frame),
        "fixes": fix_effects(frame),
    }
    junk = report["junk"]
    print(f"rows after normalize: {junk['rows']}; kept by clean's defaults: {junk['kept_by_default']}")
    print("removed by reason:", json.dumps(junk["removed_by_reason"]))
    for label, data in junk["rules"].items():
        print(f"\n== {label}: fires on {data['fired']} rows {data['per_file']}")
        for example in data["examples"]:
            lines = "  |  ".join(f"{k}: {t}" for k, t in example["output"])
            print(f"  [{example['file']}] {example['query']}  ->  {lines}")
    print("\n== boilerplate_min_queries sweep (rows flagged, per file)")
    for threshold, data in report["boilerplate_sweep"].items():
        print(f"  {threshold:>4}: {data['rows']:>5} {data['per_file']}")
    print("\n== fixes on the rows clean keeps (deductions: rows with it)")
    for name, data in report["fixes"].items():
        print(f"  {name}: changed {data.get('rows_changed', 0)} {data.get('counts', '')}")
        for rubric in ("v1", "v2"):
            print(f"     {rubric}: {data[rubric]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
