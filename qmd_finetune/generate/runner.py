"""The async request runner shared by every provider.

Bounded concurrency, optional RPM/TPM token buckets, per-request timeout, retries with
exponential backoff and jitter (Retry-After wins when the server sends it), the SQLite
response cache, and budgets (``max_cost``, ``max_tokens_total``) enforced *before* a request
is sent: each in-flight request reserves its worst case (prompt estimate + max_tokens), so
a run stops without overshooting and the next run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qmd_finetune.generate.cache import ResponseCache, request_key
from qmd_finetune.generate.providers import ChatResponse, GenerationParams, Pricing, Provider, ProviderError


@dataclass
class Job:
    key: str
    messages: list[dict[str, Any]]
    line: int | None = None
    payload: Any = None


@dataclass
class Outcome:
    job: Job
    response: ChatResponse | None
    error: str | None = None
    cached: bool = False
    cost: float = 0.0
    attempts: int = 0
    raw: str | None = None
    """The failed request's response body (redacted, capped), for the rejects ledger."""


@dataclass
class RunnerConfig:
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_cost: float | None = None
    max_tokens_total: int | None = None
    progress: bool = True
    seed: int | None = None


@dataclass
class RunStats:
    total: int = 0
    skipped: int = 0
    done: int = 0
    ok: int = 0
    failures: int = 0
    cache_hits: int = 0
    retries: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    stopped: str | None = None
    started: float = field(default_factory=time.monotonic)
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fail(self, reason: str) -> None:
        self.failures += 1
        short = reason.split(":", 1)[0][:60]
        self.reasons[short] = self.reasons.get(short, 0) + 1


class TokenBucket:
    """``per_minute`` units refilled continuously; holds at most one second's worth (at least one)."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        need = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= need:
                    self.tokens -= amount
                    return
                await asyncio.sleep((need - self.tokens) / self.rate)


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", ""))) for m in messages) // 4 + 4 * len(messages)


def backoff_delay(attempt: int, config: RunnerConfig, retry_after: float | None, rng: random.Random) -> float:
    if retry_after is not None:
        return retry_after + rng.uniform(0, 0.1)
    base = min(config.backoff_max, config.backoff_base * (2 ** (attempt - 1)))
    return base * rng.uniform(0.5, 1.5)


class Runner:
    def __init__(
        self,
        provider: Provider,
        model: str,
        params: GenerationParams,
        config: RunnerConfig,
        pricing: Pricing,
        cache: ResponseCache | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.params = params
        self.config = config
        self.pricing = pricing
        self.cache = cache
        self.stats = RunStats()
        self._rng = random.Random(config.seed)
        self._rpm = TokenBucket(config.rpm) if config.rpm else None
        self._tpm = TokenBucket(config.tpm) if config.tpm else None
        self._reserved_cost = 0.0
        self._reserved_tokens = 0
        self._stop = asyncio.Event()

    def stop(self, reason: str) -> None:
        if self.stats.stopped is None:
            self.stats.stopped = reason
        self._stop.set()

    # ------------------------------------------------------------ budget

    def _reserve(self, job: Job) -> tuple[float, int] | None:
        tokens = estimate_prompt_tokens(job.messages) + self.params.max_tokens
        cost = self.pricing.estimate(tokens - self.params.max_tokens, self.params.max_tokens)
        limit_cost, limit_tokens = self.config.max_cost, self.config.max_tokens_total
        if limit_cost is not None and self.stats.cost + self._reserved_cost + cost > limit_cost:
            self.stop(f"--max-cost {limit_cost:g} reached")
            return None
        if limit_tokens is not None and self.stats.tokens + self._reserved_tokens + tokens > limit_tokens:
            self.stop(f"--max-tokens-total {limit_tokens} reached")
            return None
        self._reserved_cost += cost
        self._reserved_tokens += tokens
        return cost, tokens

    def _release(self, reservation: tuple[float, int]) -> None:
        self._reserved_cost -= reservation[0]
        self._reserved_tokens -= reservation[1]

    # ------------------------------------------------------------ one job

    async def _process(self, job: Job) -> Outcome | None:
        key = request_key(self.model, job.messages, self.params.to_dict())
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                response = ChatResponse(hit.text, hit.prompt_tokens, hit.completion_tokens)
                return Outcome(job, response, cached=True, cost=0.0)
        reservation = self._reserve(job)
        if reservation is None:
            return None
        try:
            return await self._request(job, key, reservation[1])
        finally:
            self._release(reservation)

    async def _request(self, job: Job, key: str, est_tokens: int) -> Outcome | None:
        attempt = 0
        while True:
            attempt += 1
            if self._rpm:
                await self._rpm.acquire(1)
            if self._tpm:
                await self._tpm.acquire(est_tokens)
            self.stats.requests += 1
            try:
                response = await self.provider.complete(job.messages, self.params, self.config.timeout)
            except ProviderError as exc:
                if exc.reason == "interrupted" and self._stop.is_set():
                    return None  # not an answer and not a failure: resume does it again
                if exc.retryable and attempt <= self.config.max_retries and not self._stop.is_set():
                    self.stats.retries += 1
                    await asyncio.sleep(backoff_delay(attempt, self.config, exc.retry_after, self._rng))
                    continue
                return Outcome(job, None, error=exc.reason, attempts=attempt, raw=exc.body)
            cost = self.pricing.cost(response)
            self.stats.prompt_tokens += response.prompt_tokens
            self.stats.completion_tokens += response.completion_tokens
            self.stats.cost += cost
            if self.cache is not None:
                self.cache.put(
                    key,
                    self.model,
                    job.messages,
                    self.params.to_dict(),
                    response.text,
                    response.prompt_tokens,
                    response.completion_tokens,
                    cost,
                )
            return Outcome(job, response, cost=cost, attempts=attempt)

    # ------------------------------------------------------------ the loop

    async def run(
        self,
        jobs: list[Job],
        handle: Callable[[Outcome], str | None | Awaitable[str | None]],
        skipped: int = 0,
    ) -> RunStats:
        """Run ``jobs``; ``handle`` writes each outcome and returns a reject reason, or None when kept.

        ``handle`` may instead return an awaitable of that (work done off the event loop): the
        worker then takes its next job at once and the outcome is counted when it settles."""
        self.stats.total = len(jobs) + skipped
        self.stats.skipped = skipped
        progress = ProgressDisplay(self.stats, enabled=self.config.progress)
        pending = iter(jobs)
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal)
                installed.append(sig)

        async def worker() -> None:
            while not self._stop.is_set():
                job = next(pending, None)
                if job is None:
                    return
                outcome = await self._process(job)
                if outcome is None:
                    return
                rejected = handle(outcome)
                if inspect.isawaitable(rejected):
                    future = asyncio.ensure_future(rejected)
                    # a failed future is raised by the gather below, once, not in this callback
                    future.add_done_callback(
                        lambda f, o=outcome: None if f.cancelled() or f.exception() else count(o, f.result())
                    )
                    settling.append(future)
                else:
                    count(outcome, rejected)

        def count(outcome: Outcome, rejected: str | None) -> None:
            if outcome.error is not None or rejected:
                self.stats.fail(outcome.error or rejected or "rejected")
            else:
                self.stats.ok += 1
            self.stats.done += 1
            progress.update()

        settling: list[asyncio.Future] = []
        with progress:
            try:
                await asyncio.gather(*(worker() for _ in range(max(1, self.config.concurrency))))
                await asyncio.gather(*settling)
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)
                await self.provider.aclose()
        return self.stats

    def _on_signal(self) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        self.stop("interrupted (finishing in-flight requests; signal again to abort)")
        interrupt = getattr(self.provider, "interrupt", None)
        if interrupt is not None:
            interrupt()  # a local model stops between two tokens; its requests are left undone


class ProgressDisplay:
    """rich progress bar: done/total, rate, ETA, tokens, cost, cache hits, failures (on stderr)."""

    def __init__(self, stats: RunStats, enabled: bool = True) -> None:
        self.stats = stats
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> ProgressDisplay:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tok  ${task.fields[cost]:.4f}"),
            TextColumn("cache {task.fields[hits]}  fail {task.fields[fail]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(
            "generate",
            total=self.stats.total,
            completed=self.stats.skipped,
            rate=0.0,
            tokens=0,
            cost=0.0,
            hits=0,
            fail=0,
        )
        return self

    def update(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        s = self.stats
        self._progress.update(
            self._task,
            completed=s.skipped + s.done,
            rate=s.done / max(s.elapsed, 1e-9),
            tokens=s.tokens,
            cost=s.cost,
            hits=s.cache_hits,
            fail=s.failures,
        )

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self.update(force=True)
            self._progress.__exit__(*exc)
