"""``gepa optimize``: DSPy GEPA over the expansion prompt, with the reward as metric.

Everything that can be wrong with a configuration (budget flags, unknown providers, missing
files, a run directory from another run) is reported by :func:`validate` and
:func:`prepare` before any model is loaded or called.

Run directory layout (written as the run goes; rerunning with the same ``--run-dir`` resumes
from GEPA's saved state in ``gepa/``):

- ``run.json``: what the run optimizes (models, queries, seed prompt); a resume must match it
- ``gepa/``: GEPA's own state (``gepa_state.bin``, ``candidates.json``, ``run_log.json``)
- ``scores.json``: every candidate's instruction, parents and validation scores, metric calls
- ``best_prompt.txt``: the best instruction so far
- ``rubric_proposals.jsonl``: with ``--reflection-model rubric``, each proposal's problems and edits
- ``lm_cache/``: DSPy's response cache, so a resumed run re-pays no model call
- ``report.json``: the before/after report on the validation set
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qmd_finetune.generate.prompts import builtin_prompt_path
from qmd_finetune.gepa.metric import Judgement, judge, metric_for
from qmd_finetune.gepa.program import (
    ProviderEngine,
    QueryExpander,
    build_lm,
    prompt_file_text,
    prompt_sha,
    student_lm,
)
from qmd_finetune.gepa.report import build_report
from qmd_finetune.gepa.rubric import LABEL as RUBRIC_LABEL
from qmd_finetune.gepa.rubric import RubricProposer
from qmd_finetune.io import read_json_objects
from qmd_finetune.reward import DEFAULT_RUBRIC

DEFAULT_SEED_PROMPT = builtin_prompt_path()

AUTO_LEVELS = ("light", "medium", "heavy")
RUBRIC = "rubric"
COMPONENT = "expand"


class ConfigError(ValueError):
    """A configuration problem found before any model is called; the message lists every problem."""


DEFAULT_AUTO = "light"


@dataclass
class OptimizeConfig:
    model: str
    train: Path
    reflection_model: str | None = None  # None: the task model, or rubric for the embedded model
    save_prompt: Path | None = None  # None: <run dir>/prompt.txt
    val: Path | None = None
    limit: int | None = None
    val_limit: int | None = None
    auto: str | None = None
    max_metric_calls: int | None = None
    max_full_evals: int | None = None
    max_tokens: int = 256
    reflection_max_tokens: int = 8000
    temperature: float = 0.0
    seed_prompt: Path | None = None
    run_dir: Path | None = None
    save_program: Path | None = None
    emit: Path | None = None
    api_base: str | None = None
    reflection_api_base: str | None = None
    threads: int = 4
    minibatch_size: int = 3
    seed: int = 0
    rubric: str = DEFAULT_RUBRIC


# ---------------------------------------------------------------- validation


def default_reflection(model: str) -> tuple[str, str]:
    """The reflection model when none is named, and why: the task model itself when it is a
    real LLM; ``rubric`` for the embedded 135M model, which cannot rewrite a prompt."""
    if model.split("/", 1)[0] == "local":
        return RUBRIC, "default for the embedded model, which is too small to rewrite a prompt"
    return model, "default: the task model reflects on its own answers"


def resolve_defaults(cfg: OptimizeConfig) -> str | None:
    """Fill the reflection model and budget left out; returns the note the summary prints."""
    note = None
    if cfg.reflection_model is None:
        cfg.reflection_model, why = default_reflection(cfg.model)
        note = f"reflection: {cfg.reflection_model} ({why}; --reflection-model to change)"
        if cfg.reflection_model != RUBRIC and cfg.reflection_api_base is None:
            cfg.reflection_api_base = cfg.api_base
    if cfg.auto is None and cfg.max_metric_calls is None and cfg.max_full_evals is None:
        cfg.auto = DEFAULT_AUTO
    return note


def model_problem(model: str, flag: str, allow_rubric: bool = False) -> str | None:
    """Why ``model`` is not a usable LiteLLM model string, or None. No network, no model load."""
    if allow_rubric and model == RUBRIC:
        return None
    if model == RUBRIC:
        return f"{flag}: 'rubric' is only a reflection model (--reflection-model rubric)"
    import litellm

    from qmd_finetune.generate.local_llm import MODEL_NAMES

    provider, sep, name = model.partition("/")
    hint = "use a LiteLLM model string such as ollama_chat/qwen3:1.7b, anthropic/<model>, openai/<model> with --api-base, or local/smollm2"
    if not sep:
        return None if model in litellm.model_cost else f"{flag}: unknown model {model!r}; {hint}"
    if not name:
        return f"{flag}: {model!r} names a provider but no model"
    if provider == "local":
        if name in MODEL_NAMES:
            return None
        from qmd_finetune.generate.local_llm import check_model

        try:  # local/<dir>: a `train sft` output or a model directory, as `generate expand` takes
            check_model(model)
        except ValueError as exc:
            return f"{flag}: {exc}"
        return None
    providers = {getattr(p, "value", p) for p in litellm.provider_list}
    if provider not in providers:
        return f"{flag}: unknown provider {provider!r} in {model!r}; {hint}"
    return None


def validate(cfg: OptimizeConfig) -> None:
    problems: list[str] = []
    budgets = [
        name
        for name, value in (
            ("--auto", cfg.auto),
            ("--max-metric-calls", cfg.max_metric_calls),
            ("--max-full-evals", cfg.max_full_evals),
        )
        if value is not None
    ]
    if len(budgets) > 1:
        problems.append(
            "give one budget: --auto light|medium|heavy (default light), --max-metric-calls N or "
            f"--max-full-evals N (given: {', '.join(budgets)})"
        )
    if cfg.auto is not None and cfg.auto not in AUTO_LEVELS:
        problems.append(f"--auto must be one of {', '.join(AUTO_LEVELS)} (got {cfg.auto!r})")
    for flag, value in (
        ("--max-metric-calls", cfg.max_metric_calls),
        ("--max-full-evals", cfg.max_full_evals),
        ("--limit", cfg.limit),
        ("--val-limit", cfg.val_limit),
        ("--max-tokens", cfg.max_tokens),
        ("--reflection-max-tokens", cfg.reflection_max_tokens),
        ("--threads", cfg.threads),
        ("--minibatch-size", cfg.minibatch_size),
    ):
        if value is not None and value < 1:
            problems.append(f"{flag} must be at least 1 (got {value})")
    if not 0 <= cfg.temperature <= 2:
        problems.append(f"--temperature must be between 0 and 2 (got {cfg.temperature})")
    for flag, path in (("--train", cfg.train), ("--val", cfg.val), ("--seed-prompt", cfg.seed_prompt)):
        if path is not None and not Path(path).is_file():
            problems.append(f"{flag}: {path}: no such file")
    if cfg.seed_prompt is None and not DEFAULT_SEED_PROMPT.is_file():
        problems.append(f"no --seed-prompt and the default prompt {DEFAULT_SEED_PROMPT} is missing")
    reflection = cfg.reflection_model or default_reflection(cfg.model)[0]
    for problem in (
        model_problem(cfg.model, "--model"),
        model_problem(reflection, "--reflection-model", allow_rubric=True),
    ):
        if problem:
            problems.append(problem)
    from qmd_finetune.generate.http11 import url_problem

    for flag, base in (("--api-base", cfg.api_base), ("--reflection-api-base", cfg.reflection_api_base)):
        problem = url_problem(base) if base else None
        if problem:
            problems.append(f"{flag}: {problem}")
    if reflection == RUBRIC and cfg.reflection_api_base:
        problems.append("--reflection-api-base makes no sense with --reflection-model rubric")
    outputs = [p for p in (cfg.save_prompt, cfg.save_program, cfg.emit) if p is not None]
    if len({Path(p).resolve() for p in outputs}) != len(outputs):
        problems.append("--save-prompt, --save-program and --emit must be different files")
    if cfg.save_program is not None and Path(cfg.save_program).suffix not in (".json", ".pkl"):
        problems.append(f"--save-program must end in .json (got {cfg.save_program})")
    if problems:
        raise ConfigError("\n".join(problems))


# ---------------------------------------------------------------- data


def read_queries(path: Path) -> list[str]:
    """Queries from a text file (one per line, ``#`` comments) or JSONL (``query`` or ``input``)."""
    path = Path(path)
    queries: list[str] = []
    if path.suffix in (".jsonl", ".ndjson"):
        for number, row in read_json_objects(path, ConfigError):
            query = row.get("query", row.get("input"))
            if not isinstance(query, str) or not query.strip():
                raise ConfigError(f"{path}:{number}: no query string")
            queries.append(query.strip())
    else:
        text = path.read_text(encoding="utf-8-sig")
        queries = [
            line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    return list(dict.fromkeys(queries))


def split_queries(cfg: OptimizeConfig) -> tuple[list[str], list[str]]:
    """Train and validation queries. Without ``--val`` a seeded shuffle holds out a quarter (or ``--val-limit``)."""
    train = read_queries(cfg.train)
    if not train:
        raise ConfigError(f"--train: {cfg.train}: no queries")
    if cfg.val is not None:
        val = read_queries(cfg.val)
        if not val:
            raise ConfigError(f"--val: {cfg.val}: no queries")
        return train[: cfg.limit], val[: cfg.val_limit]
    if len(train) < 2:
        raise ConfigError(
            f"--train: {cfg.train}: need at least 2 queries to hold out a validation set (or pass --val)"
        )
    shuffled = list(train)
    random.Random(cfg.seed).shuffle(shuffled)
    n_val = min(cfg.val_limit or max(1, len(train) // 4), len(train) - 1)
    return shuffled[n_val:][: cfg.limit], shuffled[:n_val]


@dataclass
class Prepared:
    """A validated run: its data, seed instruction and run directory, before any model is touched."""

    cfg: OptimizeConfig
    train: list[str]
    val: list[str]
    seed_instruction: str
    run_dir: Path
    resumed: bool
    identity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_identity(
    cfg: OptimizeConfig, train: list[str], val: list[str], seed_instruction: str
) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "reflection_model": cfg.reflection_model,
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "rubric": cfg.rubric,
        "seed_prompt_sha": prompt_sha(seed_instruction),
        "train": train,
        "val": val,
    }


def prepare(cfg: OptimizeConfig) -> Prepared:
    from qmd_finetune.generate.providers import served_note

    validate(cfg)
    notes = [note for note in (resolve_defaults(cfg), served_note(cfg.model)) if note]
    train, val = split_queries(cfg)
    seed_instruction = Path(cfg.seed_prompt or DEFAULT_SEED_PROMPT).read_text(encoding="utf-8").strip()
    if not seed_instruction:
        raise ConfigError(f"--seed-prompt: {cfg.seed_prompt}: empty")
    run_dir = (
        Path(cfg.run_dir) if cfg.run_dir else Path("out") / f"gepa-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    )
    if cfg.save_prompt is None:
        cfg.save_prompt = run_dir / "prompt.txt"
    identity = run_identity(cfg, train, val, seed_instruction)
    marker = run_dir / "run.json"
    resumed = (run_dir / "gepa" / "gepa_state.bin").exists()
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8")).get("identity", {})
        changed = [key for key in identity if previous.get(key) != identity[key]]
        if changed:
            raise ConfigError(
                f"--run-dir {run_dir} belongs to a run with different {', '.join(changed)}; "
                "use a new --run-dir (or the original settings to resume)"
            )
    return Prepared(cfg, train, val, seed_instruction, run_dir, resumed, identity, notes)


# ---------------------------------------------------------------- run directory


def _write_json(path: Path, data: Any) -> None:
    from qmd_finetune.io import atomic_write

    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def _write_text(path: Path, text: str) -> None:
    from qmd_finetune.io import atomic_write

    with atomic_write(path) as fh:
        fh.write(prompt_file_text(text))


def best_index(state: Any) -> int:
    averages = [state.get_program_average_val_subset(i)[0] for i in range(len(state.program_candidates))]
    return max(range(len(averages)), key=lambda i: averages[i])


class RunRecorder:
    """GEPA callback: keeps ``scores.json`` and ``best_prompt.txt`` current while the run goes."""

    def __init__(self, run_dir: Path, val: list[str], budget: int, echo: Callable[[str], None]) -> None:
        self.run_dir = run_dir
        self.val = val
        self.budget = budget
        self.echo = echo

    def on_valset_evaluated(self, event: dict[str, Any]) -> None:
        instruction = event["candidate"].get(COMPONENT, "")
        marker = " (new best)" if event["is_best_program"] and event["candidate_idx"] else ""
        self.echo(
            f"candidate {event['candidate_idx']}: val mean {event['average_score'] * 100:.1f}%"
            f" on {event['num_examples_evaluated']} queries{marker}"
        )
        if event["is_best_program"]:
            _write_text(self.run_dir / "best_prompt.txt", instruction)

    def on_iteration_end(self, event: dict[str, Any]) -> None:
        self.write(event["state"], event["iteration"])

    def on_optimization_end(self, event: dict[str, Any]) -> None:
        self.write(event["final_state"], event["total_iterations"])

    def write(self, state: Any, iteration: int) -> None:
        best = best_index(state)
        candidates = []
        for idx, candidate in enumerate(state.program_candidates):
            subscores = state.prog_candidate_val_subscores[idx]
            mean, n = state.get_program_average_val_subset(idx)
            candidates.append(
                {
                    "idx": idx,
                    "parents": list(state.parent_program_for_candidate[idx]),
                    "val_mean": mean,
                    "val_evaluated": n,
                    "val_scores": {self.val[int(k)]: v for k, v in sorted(subscores.items())},
                    "metric_calls_at_discovery": state.num_metric_calls_by_discovery[idx],
                    "instruction": candidate.get(COMPONENT, ""),
                }
            )
        _write_json(
            self.run_dir / "scores.json",
            {
                "iteration": iteration,
                "metric_calls": state.total_num_evals,
                "budget": self.budget,
                "best_idx": best,
                "candidates": candidates,
            },
        )
        _write_text(self.run_dir / "best_prompt.txt", state.program_candidates[best].get(COMPONENT, ""))


# ---------------------------------------------------------------- evaluation


def run_program(
    program: QueryExpander, queries: list[str], threads: int, rubric: str = DEFAULT_RUBRIC
) -> list[Judgement]:
    """The program's reply to each query, judged with ``rubric``; model errors become failed judgements."""
    from dspy.utils.parallelizer import ParallelExecutor

    def one(query: str) -> Judgement:
        return judge(query, program(query=query).expansion, rubric)

    executor = ParallelExecutor(num_threads=threads, max_errors=len(queries) + 1, disable_progress_bar=True)
    results = executor.execute(one, queries)
    return [r if isinstance(r, Judgement) else judge(q, "", rubric) for q, r in zip(queries, results)]


# ---------------------------------------------------------------- the run


@dataclass
class OptimizeResult:
    run_dir: Path
    report: dict[str, Any]
    instruction: str
    emitted: int | None = None
    emit_failed: int | None = None


def budget_for(cfg: OptimizeConfig, n_train: int, n_val: int) -> int | str:
    if cfg.max_metric_calls is not None:
        return cfg.max_metric_calls
    if cfg.max_full_evals is not None:
        return cfg.max_full_evals * (n_train + n_val)
    return f"auto={cfg.auto}"


def run_optimize(prep: Prepared, echo: Callable[[str], None] = print) -> OptimizeResult:
    import dspy

    cfg = prep.cfg
    run_dir = prep.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "run.json", {"identity": prep.identity, "config": _config_dict(cfg)})
    dspy.configure_cache(disk_cache_dir=str(run_dir / "lm_cache"))
    # GEPA's iteration log (full proposed prompts) goes to gepa.log; the terminal gets one line per
    # candidate from RunRecorder. Truncation warnings of small models are expected, not news.
    log_handler = logging.FileHandler(run_dir / "gepa.log", encoding="utf-8")
    log_handler.setLevel(logging.INFO)
    gepa_logger = logging.getLogger("dspy.teleprompt.gepa")
    lm_logger = logging.getLogger("dspy.clients.lm")
    saved = (gepa_logger.level, gepa_logger.propagate, lm_logger.level)
    gepa_logger.addHandler(log_handler)
    gepa_logger.setLevel(logging.INFO)
    gepa_logger.propagate = False
    lm_logger.setLevel(logging.ERROR)

    engine = ProviderEngine(cfg.model, api_base=cfg.api_base, pool=cfg.threads)
    student = student_lm(engine, max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    reflection_lm = None
    proposer = None
    if cfg.reflection_model == RUBRIC:
        proposer = RubricProposer(log_path=run_dir / "rubric_proposals.jsonl", rubric=cfg.rubric)
        reflection_label = RUBRIC_LABEL
    else:
        reflection_lm = build_lm(
            cfg.reflection_model,
            max_tokens=cfg.reflection_max_tokens,
            temperature=1.0,
            api_base=cfg.reflection_api_base,
        )
        reflection_label = cfg.reflection_model

    trainset = [dspy.Example(query=q).with_inputs("query") for q in prep.train]
    valset = [dspy.Example(query=q).with_inputs("query") for q in prep.val]
    budget = budget_for(cfg, len(trainset), len(valset))
    echo(
        f"{'resuming' if prep.resumed else 'starting'} GEPA in {run_dir}: {len(trainset)} train / {len(valset)} val queries, "
        f"student {cfg.model}, reflection {reflection_label}, budget {budget}"
    )
    recorder = RunRecorder(run_dir, prep.val, budget if isinstance(budget, int) else 0, echo)
    optimizer = dspy.GEPA(
        metric=metric_for(cfg.rubric),
        auto=cfg.auto,
        max_metric_calls=cfg.max_metric_calls,
        max_full_evals=cfg.max_full_evals,
        reflection_lm=reflection_lm,
        instruction_proposer=proposer,
        reflection_minibatch_size=cfg.minibatch_size,
        use_merge=False,
        num_threads=cfg.threads,
        log_dir=str(run_dir / "gepa"),
        track_stats=True,
        warn_on_score_mismatch=False,
        seed=cfg.seed,
        gepa_kwargs={"callbacks": [recorder]},
    )
    seed_program = QueryExpander(prep.seed_instruction)
    started = time.monotonic()
    try:
        with dspy.context(lm=student):
            optimized = optimizer.compile(seed_program, trainset=trainset, valset=valset)
            details = optimized.detailed_results
            before = run_program(seed_program, prep.val, cfg.threads, cfg.rubric)
            after = run_program(optimized, prep.val, cfg.threads, cfg.rubric)
            emitted = emit_failed = None
            if cfg.emit is not None:
                emitted, emit_failed = emit_dataset(optimized, prep, cfg.emit)
    finally:
        engine.close()
        gepa_logger.removeHandler(log_handler)
        gepa_logger.setLevel(saved[0])
        gepa_logger.propagate = saved[1]
        lm_logger.setLevel(saved[2])
        log_handler.close()
    duration = time.monotonic() - started

    instruction = optimized.instruction
    _write_text(Path(cfg.save_prompt), instruction)
    _write_text(run_dir / "best_prompt.txt", instruction)
    if cfg.save_program is not None:
        Path(cfg.save_program).parent.mkdir(parents=True, exist_ok=True)
        optimized.save(str(cfg.save_program))
    report = build_report(
        before,
        after,
        meta={
            "model": cfg.model,
            "rubric": cfg.rubric,
            "reflection": reflection_label,
            "budget": budget,
            "train_queries": len(prep.train),
            "val_queries": len(prep.val),
            "candidates": len(details.candidates),
            "best_idx": details.best_idx,
            "metric_calls": details.total_metric_calls,
            "gepa_val_means": list(details.val_aggregate_scores),
            "resumed": prep.resumed,
            "duration_s": round(duration, 1),
            "seed_prompt_sha": prompt_sha(prep.seed_instruction),
            "prompt_sha": prompt_sha(instruction),
            "run_dir": str(run_dir),
        },
    )
    _write_json(run_dir / "report.json", report)
    return OptimizeResult(run_dir, report, instruction, emitted, emit_failed)


def _config_dict(cfg: OptimizeConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def emit_dataset(program: QueryExpander, prep: Prepared, path: Path) -> tuple[int, int]:
    """Records from the optimized program for every train and val query; failures to the rejects ledger."""
    import polars as pl

    from qmd_finetune.generate.providers import served_model
    from qmd_finetune.io import REJECT_SCHEMA, atomic_write, default_rejects_path, write_rejects

    cfg = prep.cfg
    queries = list(dict.fromkeys(prep.train + prep.val))
    judged = run_program(program, queries, cfg.threads, cfg.rubric)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {
        "source": "gepa",
        "provider": cfg.model.split("/", 1)[0] if "/" in cfg.model else "litellm",
        "model": served_model(cfg.model),
        "prompt_sha": prompt_sha(program.instruction),
        "params": {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature},
        "gepa_run": str(prep.run_dir),
        "created": created,
    }
    kept, rejects = [], []
    for j in judged:
        if j.items:
            kept.append(
                {
                    "query": j.query,
                    "output": [list(item) for item in j.items],
                    "meta": {**meta, "score": j.percentage, "score_rubric": cfg.rubric},
                }
            )
        else:
            rejects.append(
                {
                    "source": "gepa",
                    "line": None,
                    "stage": "gepa-emit",
                    "reason": j.parse_error,
                    "path": None,
                    "raw": json.dumps({"query": j.query, "response": j.raw}, ensure_ascii=False),
                }
            )
    with atomic_write(path) as fh:
        for record in kept:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    if rejects:
        write_rejects(pl.DataFrame(rejects, schema=REJECT_SCHEMA), default_rejects_path(path))
    return len(kept), len(rejects)
