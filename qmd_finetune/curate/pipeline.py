"""The pipeline runner: read, run a list of stages, write output + rejects ledger + summary.

The stage list comes from a YAML config (``curate run --config pipeline.yaml``) or from
code (``curate balance`` uses :data:`BALANCE_STAGES`). Stages are looked up by name in
:data:`STAGES` and know nothing about how they are run. After every stage the runner
checks ``in == kept + rejected``; at the end it checks that every row read is in the
output or in the ledger (``rows_in == kept + rejected``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from qmd_finetune.curate.report import input_stats, write_run_report
from qmd_finetune.curate.stage import REASON, StageResult
from qmd_finetune.curate.summary import group_reasons
from qmd_finetune.io import (
    ReadResult,
    atomic_write,
    default_rejects_path,
    empty_rejects,
    expand_inputs,
    output_group,
    read_frame,
    rejects_from_frame,
    write_records,
    write_rejects,
)
from qmd_finetune.locks import hold
from qmd_finetune.reward import DEFAULT_RUBRIC, check_rubric

STAGES: dict[str, str] = {
    "normalize": "qmd_finetune.curate.normalize",
    "clean": "qmd_finetune.curate.clean",
    "dedup": "qmd_finetune.curate.dedup",
    "score": "qmd_finetune.curate.score",
    "categorize": "qmd_finetune.curate.categorize",
    "balance": "qmd_finetune.curate.balance",
    "split": "qmd_finetune.curate.split",
    "leakage": "qmd_finetune.curate.leakage",
}
"""Stage name -> module with ``run(frame, **options) -> StageResult``."""

BALANCE_STAGES: tuple[str, ...] = ("normalize", "clean", "dedup", "score", "categorize", "balance")
"""The default pipeline up to balance (``curate balance``)."""

VALIDATE = "validate"
CONFIG_KEYS = {"input", "output", "rejects", "report", "stats", "targets", "rubric", "stages"}


class PipelineError(ValueError):
    """A bad config (unknown stage or option) or broken row accounting."""


def stage_function(name: str) -> Callable[..., StageResult]:
    if name not in STAGES:
        raise PipelineError(f"unknown stage {name!r} (known: {', '.join([VALIDATE, *STAGES])})")
    try:
        module = importlib.import_module(STAGES[name])
    except ModuleNotFoundError as exc:
        raise PipelineError(f"stage {name!r} is not available: {exc}") from exc
    return module.run


@dataclass
class StageSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Fail early on an unknown stage or option (before any data is read)."""
        if self.name == VALIDATE:
            if self.options:
                raise PipelineError("stage 'validate' takes no options (reading validates every row)")
            return
        params = inspect.signature(stage_function(self.name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        allowed = [p for p in params if p != "frame"]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise PipelineError(
                f"stage {self.name!r}: unknown option(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
            )


@dataclass
class PipelineConfig:
    inputs: list[Path]
    output: Path | None
    stages: list[StageSpec]
    rejects: Path | None = None
    report: Path | None = None
    """Self-contained HTML report of the run (before/after)."""
    stats: Path | None = None
    """Run summary JSON; default ``<output>.run.json``."""
    targets: Path | None = None
    """Balance targets used by the report's category-vs-target view."""
    rubric: str = DEFAULT_RUBRIC
    """Reward rubric of every stage that scores (score, dedup), unless the stage sets its own."""

    def check(self) -> None:
        if not self.inputs:
            raise PipelineError("no input files")
        if not self.stages:
            raise PipelineError("no stages")
        try:
            check_rubric(self.rubric)
        except ValueError as exc:
            raise PipelineError(f"rubric: {exc}") from exc
        for spec in self.stages:
            spec.check()

    def stage_specs(self) -> list[StageSpec]:
        """The stages with the pipeline's ``rubric`` passed to each stage that takes one."""
        return [
            StageSpec(spec.name, {**spec.options, "rubric": self.rubric})
            if spec.name != VALIDATE
            and "rubric" not in spec.options
            and "rubric" in inspect.signature(stage_function(spec.name)).parameters
            else spec
            for spec in self.stages
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": [str(p) for p in self.inputs],
            "output": None if self.output is None else str(self.output),
            "rejects": None if self.rejects is None else str(self.rejects),
            "report": None if self.report is None else str(self.report),
            "stats": None if self.stats is None else str(self.stats),
            "targets": None if self.targets is None else str(self.targets),
            "rubric": self.rubric,
            "stages": [{spec.name: spec.options} for spec in self.stages],
        }


def parse_stage(entry: Any) -> StageSpec:
    """``"dedup"``, ``{"dedup": {...}}`` or ``{"stage": "dedup", ...}``."""
    if isinstance(entry, str):
        return StageSpec(entry)
    if isinstance(entry, dict) and "stage" in entry:
        options = {k: v for k, v in entry.items() if k != "stage"}
        return StageSpec(str(entry["stage"]), options)
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, options),) = entry.items()
        if options is not None and not isinstance(options, dict):
            raise PipelineError(f"stage {name!r}: options must be a mapping")
        return StageSpec(str(name), dict(options or {}))
    raise PipelineError(f"cannot read stage entry {entry!r}")


def load_config(path: str | Path, **overrides: Any) -> PipelineConfig:
    """Read a pipeline YAML; non-None ``overrides`` (input, output, rejects, report, stats) win."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: a pipeline config must be a mapping")
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    given = {k: v for k, v in overrides.items() if v is not None and v != []}
    data.update(given)
    if "output" in given:
        _move_derived_outputs(data, Path(given["output"]), set(given))
    inputs = data.get("input") or []
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    inputs = expand_inputs(inputs)

    def opt_path(key: str) -> Path | None:
        return Path(data[key]) if data.get(key) else None

    config = PipelineConfig(
        inputs=inputs,
        output=opt_path("output"),
        stages=[parse_stage(entry) for entry in data.get("stages") or []],
        rejects=opt_path("rejects"),
        report=opt_path("report"),
        stats=opt_path("stats"),
        targets=opt_path("targets"),
        rubric=str(data.get("rubric") or DEFAULT_RUBRIC),
    )
    config.check()
    return config


def _move_derived_outputs(data: dict[str, Any], output: Path, given: set[str]) -> None:
    """An output given on the command line takes every derived output with it: the config's
    rejects, summary, report, balance plan and split directory move beside it (unless the
    command line set them too), so a run told to write elsewhere never overwrites the
    config's files."""
    for key in ("rejects", "stats"):
        if key not in given:
            data[key] = None  # the defaults are beside the output
    if data.get("report") and "report" not in given:
        data["report"] = str(beside(output, ".report.html"))
    stages = []
    for entry in data.get("stages") or []:
        spec = parse_stage(entry)
        if spec.name == "balance" and spec.options.get("plan"):
            spec.options["plan"] = str(plan_path(output))
        if spec.name == "split" and spec.options.get("output_dir"):
            spec.options["output_dir"] = str(beside(output, ".splits"))
        stages.append({"stage": spec.name, **spec.options})
    data["stages"] = stages


# ---------------------------------------------------------------- running


@dataclass
class StageSummary:
    name: str
    rows_in: int
    kept: int
    rejected: int
    rejected_by_reason: dict[str, int]
    counts: dict[str, Any]
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.rows_in,
            "kept": self.kept,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "counts": {k: v for k, v in self.counts.items() if isinstance(v, (int, float))},
            "seconds": round(self.seconds, 3),
        }


@dataclass
class PipelineRun:
    """Everything a run did. The input frame is not kept (memory): ``before_stats`` holds its
    statistics when a report was asked for; ``after`` is the output frame."""

    inputs: list[dict[str, Any]]
    stages: list[StageSummary]
    rows_read: int
    after: pl.DataFrame
    ledger: pl.DataFrame
    started: str
    finished: str = ""
    command: str = "curate run"
    outputs: dict[str, str | None] = field(default_factory=dict)
    before_stats: dict[str, Any] | None = None
    rubric: str | None = None
    """The rubric of the score stage, when the run scored."""

    @property
    def rows_in(self) -> int:
        return sum(f["rows"] for f in self.inputs) if self.inputs else self.rows_read

    @property
    def kept(self) -> int:
        return self.after.height

    @property
    def rejected(self) -> int:
        return self.ledger.height

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.kept + self.rejected

    def stage(self, name: str) -> StageSummary | None:
        return next((s for s in self.stages if s.name == name), None)

    def summary(self) -> dict[str, Any]:
        """The run summary (schemas/run-summary.schema.json)."""
        return {
            "command": self.command,
            **({"rubric": self.rubric} if self.rubric else {}),
            "started": self.started,
            "finished": self.finished,
            "inputs": self.inputs,
            "stages": [s.to_dict() for s in self.stages],
            "rows_in": self.rows_in,
            "kept": self.kept,
            "rejected": self.rejected,
            "outputs": dict(self.outputs),
            "reports": {s.name: _jsonable(s.report) for s in self.stages if s.report},
        }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def validate_summary(read: ReadResult, seconds: float = 0.0) -> StageSummary:
    reasons = (
        dict(read.rejects.group_by("reason").len().sort("len", descending=True).iter_rows())
        if read.rejects.height
        else {}
    )
    return StageSummary(
        name=VALIDATE,
        rows_in=read.rows,
        kept=read.frame.height,
        rejected=read.rejects.height,
        rejected_by_reason=group_reasons(reasons),
        counts={},
        seconds=seconds,
        report={"files": [f.to_dict() for f in read.files]},
    )


def run_stages(
    frame: pl.DataFrame,
    stages: Sequence[StageSpec],
    on_stage: Callable[[StageSummary], None] | None = None,
) -> tuple[pl.DataFrame, list[StageSummary], list[pl.DataFrame]]:
    """Run stages in order on a frame; returns (kept, summaries, ledger parts)."""
    summaries: list[StageSummary] = []
    ledger: list[pl.DataFrame] = []
    for spec in stages:
        if spec.name == VALIDATE:
            continue
        function = stage_function(spec.name)
        started = time.perf_counter()
        result = function(frame, **spec.options)
        seconds = time.perf_counter() - started
        if frame.height != result.kept.height + result.rejected.height:
            raise PipelineError(
                f"stage {spec.name!r} lost rows: in {frame.height} != kept {result.kept.height}"
                f" + rejected {result.rejected.height}"
            )
        summary = StageSummary(
            name=spec.name,
            rows_in=frame.height,
            kept=result.kept.height,
            rejected=result.rejected.height,
            rejected_by_reason=group_reasons(result.rejected_by_reason()),
            counts=dict(result.counts),
            seconds=seconds,
            report=result.report,
        )
        summaries.append(summary)
        if result.rejected.height:
            ledger.append(rejects_from_frame(result.rejected, spec.name))
        if on_stage is not None:
            on_stage(summary)
        frame = result.kept
        del result  # the rejected rows live on in the ledger only
    return frame, summaries, ledger


def _take_frame(read: ReadResult) -> pl.DataFrame:
    frame, read.frame = read.frame, read.frame.head(0)
    return frame


def run_pipeline(
    config: PipelineConfig,
    command: str = "curate run",
    on_stage: Callable[[StageSummary], None] | None = None,
) -> PipelineRun:
    """Read the inputs, run the stages, write output, ledger, summary and (optionally) report.

    One run per output at a time (a lock beside it); everything is written together at the
    end, or nothing is."""
    config.check()
    target = config.output or config.rejects or config.stats
    with hold(target) if target is not None else contextlib.nullcontext():
        return _run_pipeline(config, command, on_stage)


def _run_pipeline(
    config: PipelineConfig, command: str, on_stage: Callable[[StageSummary], None] | None
) -> PipelineRun:
    started = _now()
    t0 = time.perf_counter()
    read = read_frame(config.inputs)
    first = validate_summary(read, time.perf_counter() - t0)
    if on_stage is not None:
        on_stage(first)
    before_stats = None
    if config.report is not None:
        before_stats = input_stats(read.frame, config.stages, config.rubric)
    # Hand the frame over: nothing here keeps the input alive while the stages run.
    # The plan and the split files are written with the other outputs, once the run has succeeded.
    deferred = {"balance": "plan", "split": "output_dir"}
    stages = [
        StageSpec(spec.name, {k: v for k, v in spec.options.items() if k != deferred.get(spec.name)})
        for spec in config.stage_specs()
    ]
    after, summaries, ledger_parts = run_stages(_take_frame(read), stages, on_stage)
    ledger = pl.concat([read.rejects, *ledger_parts], how="vertical") if ledger_parts else read.rejects
    run = PipelineRun(
        inputs=[f.to_dict() for f in read.files],
        stages=[first, *summaries],
        rows_read=first.rows_in,
        before_stats=before_stats,
        after=after,
        ledger=ledger if ledger.height else empty_rejects(),
        started=started,
        command=command,
        rubric=next(
            (s.options["rubric"] for s in stages if s.name == "score" and "rubric" in s.options), None
        ),
    )
    if not run.balanced:
        raise PipelineError(
            f"row accounting broken: in {run.rows_in} != kept {run.kept} + rejected {run.rejected}"
        )
    write_outputs(run, config)
    return run


def write_outputs(run: PipelineRun, config: PipelineConfig) -> None:
    with output_group():
        _write_outputs(run, config)


def _write_outputs(run: PipelineRun, config: PipelineConfig) -> None:
    if config.output is not None:
        write_records(run.after, config.output)
        rejects = config.rejects or default_rejects_path(config.output)
        stats = config.stats or summary_path(config.output)
    else:
        rejects, stats = config.rejects, config.stats
    if rejects is not None:
        write_rejects(run.ledger, rejects)
    run.outputs = {
        "output": None if config.output is None else str(config.output),
        "rejects": None if rejects is None else str(rejects),
        "stats": None if stats is None else str(stats),
        "report": None if config.report is None else str(config.report),
    }
    for name in ("balance", "split"):
        stage = run.stage(name)
        if stage is not None:
            spec = next(s for s in config.stages if s.name == name)
            if name == "balance" and spec.options.get("plan"):
                from qmd_finetune.curate.balance import write_plan

                write_plan(stage.report["plan"], spec.options["plan"])
                run.outputs["plan"] = str(spec.options["plan"])
            if name == "split" and spec.options.get("output_dir"):
                # Rewrite the split files from the final rows: later stages (leakage) may drop some.
                from qmd_finetune.curate.split import write_splits

                stage.report["files"] = write_splits(run.after, spec.options["output_dir"])
                run.outputs["splits"] = str(spec.options["output_dir"])
    run.finished = _now()
    if stats is not None:
        with atomic_write(stats) as handle:
            json.dump(run.summary(), handle, indent=2, default=str)
            handle.write("\n")
    if config.report is not None:
        write_run_report(run, config.report, targets=config.targets)


def beside(output: str | Path, suffix: str) -> Path:
    """``beside("out/train.jsonl", ".run.json")`` -> ``out/train.run.json``."""
    rejects = default_rejects_path(output)
    return rejects.with_name(rejects.name.replace(".rejects.jsonl", suffix))


def summary_path(output: str | Path) -> Path:
    """``out/train.jsonl`` -> ``out/train.run.json`` (beside the output)."""
    return beside(output, ".run.json")


def balance_config(
    inputs: Sequence[Path],
    output: Path,
    targets: Path | None = None,
    plan: Path | None = None,
    seed: int = 0,
    min_score: float | None = None,
    rejects: Path | None = None,
    report: Path | None = None,
    stats: Path | None = None,
    stage_options: dict[str, dict[str, Any]] | None = None,
    rubric: str = DEFAULT_RUBRIC,
) -> PipelineConfig:
    """The default pipeline up to balance, as used by ``curate balance``."""
    options: dict[str, dict[str, Any]] = {name: {} for name in BALANCE_STAGES}
    for name, extra in (stage_options or {}).items():
        options.setdefault(name, {}).update(extra)
    if min_score is not None:
        options["score"]["min_score"] = min_score
    options["balance"].update(seed=seed)
    if targets is not None:
        options["balance"]["targets"] = str(targets)
    options["balance"]["plan"] = str(plan) if plan is not None else str(plan_path(output))
    return PipelineConfig(
        inputs=list(inputs),
        output=output,
        stages=[StageSpec(name, options[name]) for name in BALANCE_STAGES],
        rejects=rejects,
        report=report,
        stats=stats,
        targets=targets,
        rubric=rubric,
    )


def plan_path(output: str | Path) -> Path:
    """``out/train.jsonl`` -> ``out/train.plan.json``."""
    return beside(output, ".plan.json")


__all__ = [
    "BALANCE_STAGES",
    "REASON",
    "STAGES",
    "PipelineConfig",
    "PipelineError",
    "PipelineRun",
    "StageSpec",
    "StageSummary",
    "balance_config",
    "load_config",
    "run_pipeline",
    "run_stages",
]
