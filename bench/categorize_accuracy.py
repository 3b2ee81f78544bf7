"""Categorize accuracy: keywords against meaning on hand-labelled queries, and on the reference data.

Prints, as markdown for docs/curate-stages.md:

1. accuracy of both methods on ``tests/data/category_eval.tsv`` (hand-labelled, disjoint from
   the seeds), a per-category recall/precision table with the commonest confusions, and the
   embedding method's errors;
2. leave-one-out accuracy on the seeds for the settings grid (how ``neighbors`` and
   ``tie_margin`` were chosen), the percentiles ``min_similarity`` was taken from, and the
   cascade's accuracy and full-model share per ``cascade_margin``;
3. on ``../shared/data/qmd-reference/*.jsonl`` (normalized, every row recategorized), the
   category distribution under each method and where the tmux rows land.

Usage: ``python bench/categorize_accuracy.py [--eval TSV] [--data DIR] [--errors N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qmd_finetune.curate import categorize, category_eval, normalize
from qmd_finetune.io import read_records

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL = ROOT / "tests" / "data" / "category_eval.tsv"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "qmd-reference"


def accuracy_tables(path: Path, errors: int) -> None:
    results = category_eval.evaluate(path)
    keywords, embedding = results["keywords"], results["embedding"]
    print(f"## accuracy on {path.name} ({embedding['n']} queries)\n")
    print("| method | correct | accuracy |\n| --- | --- | --- |")
    for name, summary in results.items():
        print(f"| {name} | {summary['correct']} / {summary['n']} | {summary['accuracy']:.3f} |")
    print(
        "\n| category | n | keywords recall | embedding recall | embedding precision | embedding confused with |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for category, row in embedding["per_category"].items():
        old = keywords["per_category"].get(category, {})
        confused = ", ".join(f"{c} {n}" for c, n in row["confused_with"].items()) or "-"
        print(
            f"| {category} | {row['n']} | {old.get('recall')} | {row['recall']} | {row['precision']} | {confused} |"
        )
    print(f"\nembedding errors (first {errors} of {len(embedding['errors'])}):\n")
    for error in embedding["errors"][:errors]:
        print(f'- "{error["query"]}": labelled {error["label"]}, got {error["predicted"]}')


def leave_one_out_table() -> None:
    result = category_eval.leave_one_out()
    print(f"\n## leave-one-out on the {result['seeds']} seeds\n")
    print("| setting | accuracy |\n| --- | --- |")
    for setting, accuracy in result["accuracy"].items():
        print(f"| {setting} | {accuracy:.3f} |")
    percentiles = ", ".join(f"p{p}: {v}" for p, v in result["best_score_percentiles"].items())
    print(f"\nbest leave-one-out score percentiles: {percentiles}")
    cascade = category_eval.cascade_leave_one_out()
    print(f"\ncascade on the seeds (full model alone: {cascade['full_model']:.3f})\n")
    print("| cascade_margin | accuracy | re-encoded by the full model |\n| --- | --- | --- |")
    for setting, row in cascade.items():
        if setting.startswith("cascade_margin="):
            print(f"| {setting.split('=')[1]} | {row['accuracy']:.3f} | {row['full_model_share']:.2f} |")


def reference_tables(data: Path) -> None:
    files = sorted(data.glob("*.jsonl"))
    if not files:
        print(f"\n(no reference data in {data})")
        return
    frame = normalize.run(read_records(files).frame).kept
    by_method = {m: categorize.run(frame, recategorize=True, method=m).kept for m in categorize.METHODS}
    counts = {m: dict(k.group_by("category").len().iter_rows()) for m, k in by_method.items()}
    print(f"\n## reference data ({frame.height} rows, every row recategorized)\n")
    print("| category | keywords | embedding | change |\n| --- | --- | --- | --- |")
    names = sorted(
        set(counts["keywords"]) | set(counts["embedding"]), key=lambda c: -counts["embedding"].get(c, 0)
    )
    for name in names:
        old, new = counts["keywords"].get(name, 0), counts["embedding"].get(name, 0)
        print(f"| {name} | {old} | {new} | {new - old:+d} |")
    tmux = {m: k.filter(k["query"].str.contains("(?i)tmux")) for m, k in by_method.items()}
    print("\ntmux rows:")
    for method, rows in tmux.items():
        cats = ", ".join(f"{c} {n}" for c, n in rows.group_by("category").len().iter_rows())
        print(f"- {method}: {cats}")
    moved = (
        by_method["keywords"]
        .select("query", old="category")
        .with_columns(new=by_method["embedding"]["category"])
    )
    moved = moved.filter(moved["old"] != moved["new"]).unique("query").head(15)
    print("\nexamples of rows that changed category (keywords -> embedding):")
    for query, old, new in moved.iter_rows():
        print(f'- "{query}": {old} -> {new}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL, help="labelled TSV (query<TAB>category)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of reference *.jsonl")
    parser.add_argument("--errors", type=int, default=40, help="embedding errors to list")
    args = parser.parse_args(argv)
    accuracy_tables(args.eval, args.errors)
    leave_one_out_table()
    reference_tables(args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
