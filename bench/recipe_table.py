"""The SFT recipe search as markdown tables, from the bench.json files of bench/train_quality.py runs.

    python bench/recipe_table.py out/r1-lora out/r1-full out/final   # dirs or bench.json files

One row per (run, model): the settings that differ between the runs (finetune, LoRA rank,
learning rate, steps, batch x accumulation, packing, max_length, ...), train minutes, the
eval mean under rubric v1 and v2, format-complete and echo rates, the load average at the end;
then a second table with the per-category means (v1/v2). Settings every run shares are listed
once under the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SETTINGS = (
    "finetune",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "learning_rate",
    "lr_scheduler_type",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "packing",
    "max_length",
    "completion_only_loss",
    "torch_num_threads",
)


def load(path: Path) -> dict[str, Any]:
    file = path / "bench.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.exit(f"{file}: {exc}")


def cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v).replace("_proj", "") for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="bench/train_quality.py --out dirs or bench.json files"
    )
    args = parser.parse_args()
    rows = []
    for path in args.runs:
        bench = load(path)
        recipe = bench.get("recipe") or {}
        for model, result in bench["results"].items():
            if model == "base":
                continue
            rows.append((path.name if path.is_dir() else path.parent.name, model, recipe, result, bench))
    if not rows:
        sys.exit("no trained model in the given runs")
    varying = [k for k in SETTINGS if len({cell(r[2].get(k)) for r in rows}) > 1]
    head = ["run", "data", *varying, "train min", "v1 %", "v2 %", "complete", "echo", "load"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(" --- " for _ in head) + "|")
    for run, model, recipe, result, bench in rows:
        cells = [run, model, *(cell(recipe.get(k)) for k in varying)]
        cells += [
            f"{result.get('train_seconds', 0) / 60:.1f}",
            f"{result['mean']['v1']:.1f}",
            f"{result['mean']['v2']:.1f}",
            f"{result['format_complete']:.0%}",
            f"{result['echo_rate']:.0%}",
            f"{bench['load_average'][0]:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")
    cats = sorted({c for *_, result, _ in rows for c in result["categories"]})
    print()
    print("| run | data | " + " | ".join(cats) + " |")
    print("|" + "|".join(" --- " for _ in range(len(cats) + 2)) + "|")
    for run, model, _, result, _ in rows:
        per = result["categories"]
        cells = [f"{per[c]['v1']:.0f}/{per[c]['v2']:.0f}" if c in per else "" for c in cats]
        print(f"| {run} | {model} | " + " | ".join(cells) + " |")
    shared = [k for k in SETTINGS if k not in varying and k in rows[0][2]]
    print("\nshared: " + "; ".join(f"{k} {cell(rows[0][2][k])}" for k in shared))


if __name__ == "__main__":
    main()
