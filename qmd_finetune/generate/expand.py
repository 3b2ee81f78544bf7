"""``generate expand``: queries in, validated records out (and every failure in the rejects ledger)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmd_finetune import quality
from qmd_finetune.generate.cache import ResponseCache
from qmd_finetune.generate.journal import JsonlAppender, iter_json_lines
from qmd_finetune.generate.judge import WORKER_CODE, Checks, judge_answer
from qmd_finetune.generate.prompts import Prompt, load_prompt
from qmd_finetune.generate.providers import (
    GenerationParams,
    ProviderConfig,
    make_provider,
    pricing_for,
    served_model,
)
from qmd_finetune.generate.runner import Job, Outcome, Runner, RunnerConfig, RunStats
from qmd_finetune.io import check_readable
from qmd_finetune.locks import hold
from qmd_finetune.records import (
    CONTROL_RE,
    has_visible_text,
)
from qmd_finetune.redact import secret_values
from qmd_finetune.reward import DEFAULT_RUBRIC, check_rubric

# Rejects at these stages are final: a re-run skips their queries. "request" rejects
# (retries exhausted, budget) are tried again by the next run.
FINAL_STAGES = {"query", "parse", "gate", "validate", "score"}
RAW_LIMIT = 4000
# From this many queries on, answers are judged in a worker process: starting one costs about
# 0.2 s of CPU, the judging it takes off the event loop about 0.2-0.3 ms an answer.
OFFLOAD_MIN = 256


@dataclass
class QueryItem:
    query: str
    line: int
    category: str | None = None
    problem: str | None = None
    """Why this query cannot be sent (it goes to the ledger at stage ``query``), else None."""


@dataclass
class ExpandConfig:
    model: str
    queries: Path
    output: Path
    rejects: Path | None = None
    prompt_file: str | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    api_base: str | None = None
    api_key_env: str | None = None
    client: str = "auto"
    min_score: float | None = None
    quality_gate: bool = True
    """Reject degenerate answers (qmd_finetune.quality) with the gate's reason, stage ``gate``."""
    rubric: str = DEFAULT_RUBRIC
    cache_path: Path | None = None
    use_cache: bool = True
    batch: bool = False
    poll_interval: float = 30.0
    limit: int | None = None
    price_in: float | None = None
    price_out: float | None = None

    def __post_init__(self) -> None:
        self.model = served_model(self.model)
        self.rubric = check_rubric(self.rubric)

    @property
    def rejects_path(self) -> Path:
        return self.rejects or self.output.with_name(self.output.stem + ".rejects.jsonl")

    @property
    def resolved_cache_path(self) -> Path:
        return self.cache_path or self.output.with_name(self.output.stem + ".cache.sqlite")


@dataclass
class ExpandResult:
    stats: RunStats
    output: Path
    rejects: Path
    kept: int
    rejected_by_stage: dict[str, int]
    repaired_bytes: int
    stale_lock_pid: int | None = None
    """The PID of a killed run whose lock on the output this run took over."""


def read_queries(path: Path) -> list[QueryItem]:
    """Queries from a text file (one per line, ``#`` comments) or JSONL (``query``/``input``, ``category``).

    A line that is not a query at all (broken JSON, no query string) is an error naming it. A
    query holding control characters or nothing visible comes back with ``problem`` set: it
    is rejected in the ledger and the others run.
    """
    items: list[QueryItem] = []
    seen: set[str] = set()
    check_readable(path, records=False)
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip().lstrip("\ufeff").strip()  # a BOM mid-file, from `cat a.txt b.txt`
            if not text or text.startswith("#"):
                continue
            category = None
            if text.startswith("{"):
                # a broken line is an error naming it, never a query silently dropped
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
                query = obj.get("query", obj.get("input")) if isinstance(obj, dict) else None
                if not isinstance(query, str) or not query.strip():
                    raise ValueError(f"{path}:{number}: no query string")
                category = obj.get("category") if isinstance(obj.get("category"), str) else None
                text = query.strip()
            problem = None
            if CONTROL_RE.search(text):
                problem = "control character in query"
            elif not has_visible_text(text):
                problem = "query has no visible characters"
            if text not in seen:
                seen.add(text)
                items.append(QueryItem(query=text, line=number, category=category, problem=problem))
    return items


def finished_queries(output: Path, rejects: Path) -> set[str]:
    done = {obj["query"] for obj in iter_json_lines(output) if isinstance(obj.get("query"), str)}
    for obj in iter_json_lines(rejects):
        if obj.get("stage") in FINAL_STAGES and isinstance(obj.get("query"), str):
            done.add(obj["query"])
    return done


def provider_label(config: ProviderConfig, provider_name: str) -> str:
    return provider_name if provider_name != "litellm" else f"litellm:{config.provider}"


class RecordBuilder:
    """Turns an outcome into a record or a reject, and writes it."""

    def __init__(
        self,
        cfg: ExpandConfig,
        prompt: Prompt,
        provider: str,
        out: JsonlAppender,
        rejects: JsonlAppender,
    ) -> None:
        self.cfg = cfg
        self.prompt = prompt
        self.prompt_lines = quality.prompt_lines([prompt.text])  # a copy of its own examples fails the gate
        self.provider = provider
        self.out = out
        self.rejects = rejects
        self.kept = 0
        self.rejected: dict[str, int] = {}
        self.params = cfg.params.to_dict()
        self.checks = Checks(cfg.rubric, cfg.quality_gate, cfg.min_score, self.prompt_lines, secret_values())
        self.offload: Offload | None = None
        self.dtype = None  # the embedded model's weights, recorded in meta
        if cfg.model.startswith("local/"):
            from qmd_finetune.embedded import generation_dtype_name

            self.dtype = generation_dtype_name()

    def reject(self, item: QueryItem, stage: str, reason: str, raw: str | None) -> str:
        row: dict[str, Any] = {
            "source": str(self.cfg.queries),
            "line": item.line,
            "stage": stage,
            "reason": reason,
            "raw": raw[:RAW_LIMIT] if raw is not None else None,
            "query": item.query,
            "model": self.cfg.model,
        }
        if raw is not None and len(raw) > RAW_LIMIT:
            row["raw_truncated"] = True
        self.rejects.append(row)
        self.rejected[stage] = self.rejected.get(stage, 0) + 1
        return f"{stage}: {reason}"

    def handle(self, outcome: Outcome) -> str | None | asyncio.Future:
        item: QueryItem = outcome.job.payload
        if outcome.response is None:
            return self.reject(item, "request", outcome.error or "request failed", outcome.raw)
        text = outcome.response.text
        row = (item.query, item.category, text, self.meta(outcome))
        if self.offload is None:
            return self.finish(item, text, judge_answer(self.checks, *row))
        return self.offload.submit(row, lambda verdict: self.finish(item, text, verdict))

    def meta(self, outcome: Outcome) -> dict[str, Any]:
        response = outcome.response
        assert response is not None
        meta = {
            "source": "generate",
            "provider": self.provider,
            "model": self.cfg.model,
            "prompt": self.prompt.name,
            "prompt_sha": self.prompt.sha,
            "params": self.params,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "score_rubric": self.cfg.rubric,
            "usage": {
                "prompt_tokens": response.prompt_tokens,
                "completion_tokens": response.completion_tokens,
                "cost_usd": round(outcome.cost, 8),
                "cached": outcome.cached,
            },
        }
        if self.cfg.batch:
            meta["batch"] = True
        if self.dtype is not None:
            meta["dtype"] = self.dtype
        return meta

    def finish(self, item: QueryItem, text: str, verdict: bytes | tuple[str, str]) -> str | None:
        """Write a judged answer: its record line, or its reject."""
        if isinstance(verdict, tuple):
            return self.reject(item, verdict[0], verdict[1], text)
        self.out.append_line(verdict)
        self.kept += 1
        return None


class WorkerFailed(ValueError):
    """The judging process died (killed, out of memory) before answering a batch. The records
    written so far are kept and the answers are in the response cache: a rerun resumes."""


class Offload:
    """Judges answers in one worker process, in batches of whatever arrived while the previous
    batch was being judged. The event loop then only sends requests and writes finished lines:
    parse, gate, score and the schema check (about 0.2-0.3 ms an answer) would otherwise cap the
    request rate at high concurrency.

    The batches go over a pipe the event loop itself watches (``add_reader``), not through a
    ProcessPoolExecutor: its two helper threads (pickling batches, collecting results) took the
    interpreter lock from the event loop at every batch, which delayed the answers waiting on
    the loop (docs/generate.md, "Performance")."""

    def __init__(self, checks: Checks) -> None:
        import socket
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        import qmd_finetune

        # A plain interpreter running judge.serve, not multiprocessing's spawn: spawn imports
        # the caller's __main__ again in the child (the CLI's whole import graph for
        # `generate expand`; a script calling run_expand without a __main__ guard ran itself
        # again and the worker died at once). Its own session: Ctrl-C reaches only the parent,
        # which stops the worker by closing the socket.
        mine, child = socket.socketpair()
        root = str(Path(qmd_finetune.__file__).resolve().parents[1])
        self._process = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE, root, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child.close()
        self._conn = Connection(mine.detach())
        self._pending: list[tuple[tuple, Callable[[Any], str | None], asyncio.Future]] = []
        self._inflight: list[tuple[tuple, Callable[[Any], str | None], asyncio.Future]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: Exception | None = None
        try:
            self._conn.send(checks)
        except (OSError, ValueError) as exc:  # the worker died at once: every answer fails in one line
            self._fail([], exc)

    def submit(self, row: tuple, finish: Callable[[Any], str | None]) -> asyncio.Future:
        """The future of ``finish(verdict)``, once ``row`` is judged."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._failed is not None:
            future.set_exception(self._failed)
            return future
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._conn.fileno(), self._on_verdicts)
        self._pending.append((row, finish, future))
        if not self._inflight:
            self._send()
        return future

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        try:
            self._conn.send([row for row, _, _ in batch])
        except (OSError, ValueError) as exc:
            self._fail(batch, exc)
            return
        self._inflight = batch

    def _on_verdicts(self) -> None:
        batch, self._inflight = self._inflight, []
        try:
            verdicts = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._fail(batch + self._pending, exc)
            self._pending = []
            return
        if self._pending:
            self._send()  # the worker starts on the next batch while this one is written
        for (_, finish, future), verdict in zip(batch, verdicts):
            if not future.done():
                try:
                    future.set_result(finish(verdict))
                except Exception as exc:  # noqa: BLE001 - a write that failed (a full disk) fails its answer
                    future.set_exception(exc)

    def _fail(self, batch: list, exc: BaseException) -> None:
        import subprocess

        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(1.0)
        self._failed = WorkerFailed(
            f"the process judging the answers stopped (exit code {self._process.returncode}, "
            f"{type(exc).__name__}); the records written so far are kept, rerun to resume"
        )
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
        for _, _, future in batch:
            if not future.done():
                future.set_exception(self._failed)

    def close(self) -> None:
        """Stop the worker. After a finished run its batches are all answered; after an
        interrupted one the batch it is judging is dropped. It exits on its own (about 0.1 s of
        interpreter teardown the run does not wait for)."""
        if self._loop is not None and self._failed is None:
            self._loop.remove_reader(self._conn.fileno())
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._conn.close()
        for _, _, future in self._pending + self._inflight:
            future.cancel()
        # Reaped by a thread that only waits (no zombie left behind in a long-lived caller).
        threading.Thread(target=self._process.wait, name="judge-reaper", daemon=True).start()


def run_expand(cfg: ExpandConfig) -> ExpandResult:
    # The imported libraries' objects (LiteLLM alone: ~380k) are never garbage; frozen, they are
    # not rescanned by the collections a long run triggers (20% of its time at concurrency 64).
    gc.freeze()
    return asyncio.run(run_expand_async(cfg))


async def run_expand_async(cfg: ExpandConfig) -> ExpandResult:
    """One run per output and per response cache at a time: a second run refuses at once
    (it would pay for every request again and write each record twice)."""
    with contextlib.ExitStack() as locks:
        lock = locks.enter_context(hold(cfg.output))
        if cfg.use_cache:
            locks.enter_context(hold(cfg.resolved_cache_path, "the response cache"))
        result = await _run_expand(cfg)
        result.stale_lock_pid = lock.stale_pid
        return result


async def _run_expand(cfg: ExpandConfig) -> ExpandResult:
    prompt = load_prompt(cfg.prompt_file)
    items = read_queries(cfg.queries)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    provider_cfg = ProviderConfig(
        model=cfg.model, api_base=cfg.api_base, api_key_env=cfg.api_key_env, client=cfg.client
    )
    pricing = pricing_for(cfg.model, cfg.price_in, cfg.price_out)
    if cfg.runner.max_cost is not None and not pricing.known:
        raise ValueError(
            f"no price for {cfg.model} in LiteLLM's cost map; --max-cost needs --price-in/--price-out (USD per 1M tokens)"
        )
    out = JsonlAppender(cfg.output)
    rejects = JsonlAppender(cfg.rejects_path)
    repaired = out.repaired + rejects.repaired
    done = finished_queries(cfg.output, cfg.rejects_path)
    todo = [item for item in items if item.query not in done and item.problem is None]
    unusable = [item for item in items if item.query not in done and item.problem is not None]
    jobs = [
        Job(key=item.query, messages=prompt.messages(item.query), line=item.line, payload=item)
        for item in todo
    ]
    cache = ResponseCache(cfg.resolved_cache_path) if cfg.use_cache else None
    provider = make_provider(provider_cfg, concurrency=cfg.runner.concurrency)
    builder = RecordBuilder(cfg, prompt, provider_label(provider_cfg, provider.name), out, rejects)
    for item in unusable:
        builder.reject(item, "query", item.problem or "", item.query)
    if not cfg.batch and len(jobs) >= OFFLOAD_MIN:
        builder.offload = Offload(builder.checks)
    # int8 weights answer differently: their answers get cache keys of their own (the other
    # dtypes keep the keys they always had)
    cache_model = f"{cfg.model} (int8)" if builder.dtype == "int8" else cfg.model
    runner = Runner(provider, cache_model, cfg.params, cfg.runner, pricing, cache)
    try:
        if cfg.batch:
            from qmd_finetune.generate.batch import run_anthropic_batch

            stats = await run_anthropic_batch(
                cfg, provider, runner, jobs, builder.handle, skipped=len(items) - len(todo)
            )
        else:
            stats = await runner.run(jobs, builder.handle, skipped=len(items) - len(todo))
    finally:
        if builder.offload is not None:
            builder.offload.close()
        out.close()
        rejects.close()
        if cache is not None:
            cache.close()
    return ExpandResult(
        stats=stats,
        output=cfg.output,
        rejects=cfg.rejects_path,
        kept=builder.kept,
        rejected_by_stage=builder.rejected,
        repaired_bytes=repaired,
    )
