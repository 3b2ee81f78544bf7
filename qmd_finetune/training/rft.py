"""``train rft``: rejection-sampling fine-tuning.

Each round samples ``samples_per_query`` answers per training query from the current model,
scores them with the reward, drops every answer the quality gate fails (a gate failure is a
fault the reward may miss, so it is never learnt), keeps the best answer per query when it
reaches ``threshold``, and fine-tunes with the SFT recipe on the kept answers mixed with a
share of the gold rows. The merged result is the next round's model.

A round's directory keeps what it decided: ``samples.jsonl`` (every query, its samples with
scores and gate reasons, and the outcome), ``data/`` (the training set, `train prepare`
format) and ``sft/`` (the SFT outputs). ``rounds.json`` sums each round up.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from qmd_finetune import quality
from qmd_finetune.io import read_json_objects
from qmd_finetune.records import parse_prefixed
from qmd_finetune.reward import score
from qmd_finetune.training.common import Log, dataset_dir, prompt_format_for, starting_model
from qmd_finetune.training.config import (
    ConfigError,
    RFTRunConfig,
    SFTRunConfig,
    build_config,
    config_to_dict,
    load_config,
)
from qmd_finetune.training.models import is_embedded
from qmd_finetune.training.prepare import make_row
from qmd_finetune.training.prompts import PromptFormat

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Keys of the rft config that override the sft recipe when set (not null).
SFT_OVERRIDES = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "finetune",
    "packing",
    "device",
    "precision",
    "seed",
    "torch_num_threads",
)
OUTCOMES = ("kept", "all_gate_failed", "no_valid_lines", "below_threshold", "not_above_gold")


@dataclass
class Query:
    """A training query with its gold row (the first train.jsonl row that asks it)."""

    query: str
    category: str
    gold: dict[str, Any]

    @property
    def gold_text(self) -> str:
        return self.gold["completion"][0]["content"]


@dataclass
class Sample:
    text: str
    percentage: float
    gate: list[str] = field(default_factory=list)


def sft_config_path(config: RFTRunConfig) -> Path | None:
    """The sft YAML as given, else relative to the project (``configs/sft.yaml`` from anywhere)."""
    if config.sft_config is None:
        return None
    path = Path(config.sft_config)
    if not path.is_file() and not path.is_absolute() and (PROJECT_ROOT / path).is_file():
        return PROJECT_ROOT / path
    return path


def round_sft_config(config: RFTRunConfig, model: str, dataset: Path, output_dir: Path) -> SFTRunConfig:
    """The SFT config of one round: the sft recipe, the rft overrides, this round's paths.

    ``model`` is resolved to the full model's directory (a `train sft` output dir to its
    ``merged/``): the round's adapter must name a base that loads."""
    base = load_config(SFTRunConfig, sft_config_path(config))
    values = config_to_dict(base)
    values.update({k: getattr(config, k) for k in SFT_OVERRIDES if getattr(config, k) is not None})
    values.update(
        model=model if is_embedded(model) else starting_model(model),
        dataset=str(dataset),
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        merge=True,
        eval_steps=None,
    )
    return build_config(SFTRunConfig, values, f"sft config for {config.output_dir}")


def check(config: RFTRunConfig) -> None:
    """Everything that can be checked without weights: model, dataset, the sft recipe."""
    dataset_dir(config.dataset)
    starting_model(config.model)
    try:
        round_sft_config(config, config.model, Path(config.dataset), Path(config.output_dir))
    except ConfigError as exc:
        raise ConfigError(f"sft_config {config.sft_config}: {exc}") from exc


def read_train_rows(root: Path) -> list[dict[str, Any]]:
    path = root / "train.jsonl"
    rows = []
    for number, row in read_json_objects(path):
        if not isinstance(row.get("query"), str) or not row.get("completion"):
            raise ValueError(f"{path}:{number}: not a train prepare row (needs query and completion)")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no training rows")
    return rows


def pick_queries(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[Query]:
    """Distinct queries in file order, or a seeded sample of ``limit`` of them."""
    seen: dict[str, Query] = {}
    for row in rows:
        if row["query"] not in seen:
            seen[row["query"]] = Query(row["query"], row.get("category") or "", row)
    queries = list(seen.values())
    if limit is not None and limit < len(queries):
        queries = random.Random(seed).sample(queries, limit)
    return queries


def judge(
    query: Query, texts: list[str], config: RFTRunConfig
) -> tuple[str, Sample | None, list[Sample], float]:
    """(outcome, the kept sample or None, all samples scored, the gold target's percentage)."""
    samples = [
        Sample(
            text,
            score(query.query, text, config.rubric).percentage,
            quality.reasons(quality.check_text(query.query, text)),
        )
        for text in texts
    ]
    gold = score(query.query, query.gold_text, config.rubric).percentage
    passing = [s for s in samples if not s.gate]
    if not passing:
        return "all_gate_failed", None, samples, gold
    passing = [s for s in passing if parse_prefixed(s.text)[0]]
    if not passing:
        return "no_valid_lines", None, samples, gold
    best = max(passing, key=lambda s: s.percentage)
    if best.percentage < config.threshold:
        return "below_threshold", None, samples, gold
    if config.require_beat_gold and best.percentage <= gold:
        return "not_above_gold", None, samples, gold
    return "kept", best, samples, gold


def sample_round(
    model_name: str, queries: list[Query], fmt: PromptFormat, config: RFTRunConfig, seed: int, log: Log
) -> list[list[str]]:
    """``samples_per_query`` sampled answers per query, batched like ``train eval``; sampling
    takes minutes on CPU, so progress is logged every few batches."""
    import torch

    from qmd_finetune.training.evaluate import generate
    from qmd_finetune.training.models import load

    model, tokenizer, _ = load(model_name, dtype=torch.float32)
    n = config.samples_per_query
    prompts = [q.query for q in queries for _ in range(n)]
    chunk = config.batch_size * 4
    texts: list[str] = []
    torch.manual_seed(seed)
    start = time.monotonic()
    for first in range(0, len(prompts), chunk):
        texts += generate(
            model,
            tokenizer,
            prompts[first : first + chunk],
            fmt,
            config.batch_size,
            config.max_new_tokens,
            config.decoding,
            temperature=config.temperature,
            top_p=config.top_p,
        )
        log(f"  sampled {len(texts)}/{len(prompts)} answers ({time.monotonic() - start:.0f}s)")
    del model
    gc.collect()
    return [texts[i * n : (i + 1) * n] for i in range(len(queries))]


def judge_round(
    queries: list[Query], texts: list[list[str]], config: RFTRunConfig
) -> tuple[dict[str, Any], list[tuple[Query, Sample]], list[dict[str, Any]]]:
    """(the round's counts and means, the kept answers, the per-query ledger)."""
    outcomes: Counter[str] = Counter()
    gate_rules: Counter[str] = Counter()
    kept: list[tuple[Query, Sample]] = []
    best: list[float] = []
    everything: list[float] = []
    golds: list[float] = []
    ledger = []
    for query, answers in zip(queries, texts):
        outcome, chosen, samples, gold = judge(query, answers, config)
        outcomes[outcome] += 1
        golds.append(gold)
        everything.extend(s.percentage for s in samples)
        passing = [s.percentage for s in samples if not s.gate]
        if passing:
            best.append(max(passing))
        for s in samples:
            gate_rules.update({quality.rule_of(r) for r in s.gate})
        if chosen is not None:
            kept.append((query, chosen))
        ledger.append(
            {
                "query": query.query,
                "outcome": outcome,
                "gold_percentage": gold,
                "kept": chosen.text if chosen else None,
                "samples": [asdict(s) for s in samples],
            }
        )

    def average(values: list[float]) -> float | None:
        return round(mean(values), 2) if values else None

    stats = {
        "queries": len(queries),
        "sampled": sum(len(a) for a in texts),
        "kept": len(kept),
        "outcomes": {k: outcomes[k] for k in OUTCOMES},
        "mean_best_reward": average(best),
        "mean_kept_reward": average([s.percentage for _, s in kept]),
        "mean_sample_reward": average(everything),
        "mean_gold_reward": average(golds),
        "gate_failures": dict(gate_rules.most_common()),
    }
    return stats, kept, ledger


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    _write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_round_dataset(
    out: Path,
    kept: list[tuple[Query, Sample]],
    gold_rows: list[dict[str, Any]],
    fmt: PromptFormat,
    seed: int,
) -> int:
    """Kept answers as `train prepare` rows plus the gold rows, shuffled; returns the row count."""
    rows = []
    for query, sample in kept:
        items, _ = parse_prefixed(sample.text)
        row = make_row(query.query, items, fmt, query.category, "rft")
        row["reward"] = sample.percentage
        rows.append(row)
    rows.extend({**row, "origin": "gold"} for row in gold_rows)
    random.Random(seed).shuffle(rows)
    _write_jsonl(out / "train.jsonl", rows)
    info = {"prompt_format": fmt.to_dict(), "counts": {"train": len(rows), "rft": len(kept)}}
    _write_text(out / "dataset_info.json", json.dumps(info, indent=2) + "\n")
    return len(rows)


def link_tree(source: Path, target: Path) -> None:
    """Replace ``target`` with a copy of ``source`` made of hard links where the disk allows."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    def copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, tmp, copy_function=copy)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)


def run_rft(config: RFTRunConfig, log: Log = print) -> dict[str, Any]:
    """Run every round; returns the summary written to ``output_dir/rounds.json``."""
    check(config)
    root = dataset_dir(config.dataset)
    rows = read_train_rows(root)
    fmt = prompt_format_for(root, config.model)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = config.model
    rounds: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"config": config_to_dict(config), "rounds": rounds}
    for number in range(1, config.rounds + 1):
        seed = config.seed + number
        round_dir = out / f"round-{number}"
        queries = pick_queries(rows, config.max_queries, seed)
        log(
            f"rft round {number}/{config.rounds}: sampling {config.samples_per_query} x {len(queries)} from {model}"
        )
        start = time.monotonic()
        texts = sample_round(model, queries, fmt, config, seed, log)
        sample_seconds = time.monotonic() - start
        stats, kept, ledger = judge_round(queries, texts, config)
        _write_jsonl(round_dir / "samples.jsonl", ledger)
        gold_rows = random.Random(seed).sample(rows, round(len(rows) * config.gold_fraction))
        data_dir = round_dir / "data"
        n_train = write_round_dataset(data_dir, kept, gold_rows, fmt, seed)
        record: dict[str, Any] = {
            "round": number,
            "model": model,
            **stats,
            "gold_rows": len(gold_rows),
            "train_rows": n_train,
            "sample_seconds": round(sample_seconds, 1),
        }
        log(
            f"rft round {number}: kept {len(kept)}/{len(queries)} "
            f"(mean best {record['mean_best_reward']}, mean sample {record['mean_sample_reward']}), "
            f"training on {n_train} rows"
        )
        if not n_train:
            log(f"rft round {number}: nothing to train on; the model stays {model}")
            record.update(train_seconds=0.0, global_step=0)
        else:
            from qmd_finetune.training.sft import run_sft

            sft_dir = round_dir / "sft"
            info = run_sft(round_sft_config(config, model, data_dir, sft_dir), log=log)
            record.update(train_seconds=info["seconds"], global_step=info["global_step"])
            model = str(sft_dir / "merged")
        record["next_model"] = model
        rounds.append(record)
        _write_text(out / "rounds.json", json.dumps(summary, indent=2) + "\n")
    link_tree(Path(starting_model(model)), out / "merged")
    summary["final_model"] = str(out / "merged")
    _write_text(out / "rounds.json", json.dumps(summary, indent=2) + "\n")
    log(f"rft: final model in {out / 'merged'}")
    return summary
