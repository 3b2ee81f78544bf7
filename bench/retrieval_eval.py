"""Retrieval eval on the reference data: the gold upper bound, and the speed at 500 x 3,500.

1. Table: the reference test split (retrieval.held_out_by_query, 10%, seed 0; the split that
   bench/train_quality.py --retrieval holds out of training) as a known-item collection.
   recall@1/10 and MRR@10 per list family for the gold expansions (the records' own lines:
   an upper bound, since each document is made of its record's gold lines) and for no
   expansion at all (every family falls back to the raw query).
2. Speed: 500 queries over 3,500 documents (every reference record held out, first 500
   queries; the corpus padded with passages that pair one record's hyde with another's vec
   lines), gold answers. Times a cold index (corpus embedded; empty cache), a warm index
   (cached), and the eval itself; the baseline, measured in the same run, is embedding the
   same query-side texts alone (the model cost the eval cannot avoid).

    .venv/bin/python bench/retrieval_eval.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "qmd-reference"


def load() -> list:
    from qmd_finetune.training.retrieval import read_records_strict

    return read_records_strict(sorted(REFERENCE.glob("*.jsonl")))


def gold_table(records: list, cache: Path) -> None:
    from qmd_finetune.training import retrieval as rt

    collection = rt.known_item_collection(records, rt.held_out_by_query(records), "reference test split")
    searcher = rt.Searcher(collection.doc_texts, cache)
    gold = rt.evaluate_answers(collection, [collection.gold[q] for q in collection.query_ids], searcher)
    none = rt.evaluate_answers(collection, [""] * len(collection.query_ids), searcher)
    print(f"{collection.name}: {collection.counts}")
    print("| list | gold R@1 | gold R@10 | gold MRR@10 | no expansion R@1 | R@10 | MRR@10 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in rt.LISTS:
        g, n = gold["metrics"][name], none["metrics"][name]
        print(
            f"| `{name}` | {g['recall@1']:.3f} | {g['recall@10']:.3f} | {g['mrr@10']:.3f} "
            f"| {n['recall@1']:.3f} | {n['recall@10']:.3f} | {n['mrr@10']:.3f} |"
        )


def speed(records: list, queries: int, documents: int) -> None:
    from qmd_finetune.training import retrieval as rt

    full = rt.known_item_collection(records, [True] * len(records), "reference, all held out")
    collection = full.limit(queries)
    with_hyde = [r for r in records if rt.passage(r)]
    texts = set(collection.doc_texts)
    extra_ids, extra_texts = [], []
    step = 7
    while len(collection.doc_ids) + len(extra_ids) < documents:
        for i, record in enumerate(with_hyde):
            other = with_hyde[(i + step) % len(with_hyde)]
            hyde = "\n".join(t for k, t in record.output if k == "hyde")
            vec = "\n".join(t for k, t in other.output if k == "vec")
            text = f"{hyde}\n{vec}".strip()
            if text not in texts:
                texts.add(text)
                extra_ids.append(f"x{len(extra_ids)}")
                extra_texts.append(text)
            if len(collection.doc_ids) + len(extra_ids) >= documents:
                break
        step += 7
    collection = rt.Collection(
        collection.name,
        collection.doc_ids + extra_ids,
        collection.doc_texts + extra_texts,
        collection.query_ids,
        collection.queries,
        collection.qrels,
        collection.gold,
    )
    answers = [collection.gold[q] for q in collection.query_ids]
    print(f"\nspeed: {len(collection.query_ids)} queries over {len(collection.doc_ids)} documents")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.monotonic()
        rt.Searcher(collection.doc_texts, cache)
        cold = time.monotonic() - t0
        t0 = time.monotonic()
        searcher = rt.Searcher(collection.doc_texts, cache)
        warm = time.monotonic() - t0
        assert searcher.cache_hit
        report = rt.evaluate_answers(collection, answers, searcher, per_query=False)
    items = [rt.expansion_items(q, a) for q, a in zip(collection.queries, answers)]
    dense_texts = sorted({*collection.queries, *(t for its in items for k, t in its if k != "lex")})
    t0 = time.monotonic()
    searcher.embed(dense_texts)
    baseline = time.monotonic() - t0
    search = report["search_seconds"]
    print(f"index, cold (corpus embedded):  {cold:7.1f} s")
    print(f"index, warm (cached embeddings): {warm:7.1f} s")
    print(
        f"eval after answers:              {search:7.1f} s  (BM25 {report['bm25_seconds']} s over "
        f"{report['texts']['bm25']} texts, dense {report['dense_seconds']} s over {report['texts']['dense']})"
    )
    print(f"baseline, embedding the same {len(dense_texts)} texts alone: {baseline:.1f} s")
    print(f"eval / baseline: {search / baseline:.2f}x; warm index + eval: {warm + search:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--documents", type=int, default=3500)
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load before: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    records = load()
    if not args.skip_table:
        with tempfile.TemporaryDirectory() as cache:
            gold_table(records, Path(cache))
    if not args.skip_speed:
        speed(records, args.queries, args.documents)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
