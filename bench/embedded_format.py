"""How many embedded-model answers pass the quality gate, per decoding mode.

    python bench/embedded_format.py [--queries 50] [--max-new-tokens 96] [--modes strict,safe,prefill]

``prefill`` is the earlier provider decoding (answer prefilled with ``hyde:`` or the only-mode
kind, cut at the first blank line); ``safe``/``strict`` are :mod:`qmd_finetune.decoding`
modes with the line guard of :mod:`qmd_finetune.generate.local_llm`. The gate
(:mod:`qmd_finetune.quality`) checks lex and vec present, no repeated line, no copy of the
prompt's examples, a lex line sharing a key term with the query. ``-v`` prints every answer.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "data" / "qmd-reference"
EVAL = REFERENCE / "eval_queries.txt"
# eval_queries.txt holds 36 queries; the rest come from here, in file order (normal and /only:)
EXTRA = REFERENCE / "qmd_only_sampled.jsonl"


def bench_queries(count: int) -> list[str]:
    """The eval queries, then distinct queries of the reference data, ``count`` in all."""
    import json

    lines = [line.strip() for line in EVAL.read_text(encoding="utf-8").splitlines()]
    queries = [line for line in lines if line and not line.startswith("#")]
    with open(EXTRA, encoding="utf-8") as handle:
        for line in handle:
            query = str(json.loads(line).get("query", "")).strip()
            if query and query not in queries:
                queries.append(query)
            if len(queries) >= count:
                break
    return queries[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--modes", default="strict,safe,prefill")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    from qmd_finetune import quality
    from qmd_finetune.generate import local_llm
    from qmd_finetune.generate.prompts import load_prompt
    from qmd_finetune.records import only_mode

    queries = bench_queries(args.queries)
    prompt = load_prompt()
    eng = local_llm.engine()
    for mode in args.modes.split(","):
        start = time.perf_counter()
        if mode == "prefill":
            prefills = [f"{only_mode(q)[1] or 'hyde'}:" for q in queries]
            conversations = [
                [*prompt.messages(q), {"role": "assistant", "content": p}]
                for q, p in zip(queries, prefills, strict=True)
            ]
            params = local_llm.GenParams(max_new_tokens=args.max_new_tokens, stop=("\n\n",))
        else:
            prefills = [""] * len(queries)
            conversations = [prompt.messages(q) for q in queries]
            params = local_llm.GenParams(max_new_tokens=args.max_new_tokens, decoding=mode)
        answers = eng.generate(conversations, params)
        passed, rules = 0, collections.Counter()
        for query, prefill, answer in zip(queries, prefills, answers, strict=True):
            text = f"{prefill} {answer.text.lstrip()}" if prefill else answer.text
            failures = quality.check_text(query, text)
            passed += not failures
            rules.update(f.rule for f in failures)
            if args.verbose:
                print(f"## {query} {[f.reason for f in failures]}\n{text}")
        seconds = time.perf_counter() - start
        load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(
            f"{mode:<8} pass {passed}/{len(queries)}  failures {dict(rules)}  {seconds:.0f} s  (load {load})",
            flush=True,
        )


if __name__ == "__main__":
    main()
