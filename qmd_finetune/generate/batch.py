"""``generate expand --batch``: Claude's Message Batches API (half price, results within 24 h).

The batch id and the custom_id -> query map are saved beside the output
(``<output>.batch.json``) before polling starts, so an interrupted run resumes polling the
same batch instead of paying for a second one. Cache hits are answered before submitting;
the budget (at the batch discount) decides how many queries go into the batch.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qmd_finetune.generate.providers import (
    AnthropicProvider,
    ChatResponse,
    ProviderError,
    response_from_message,
)
from qmd_finetune.generate.runner import (
    Job,
    Outcome,
    ProgressDisplay,
    Runner,
    RunStats,
    estimate_prompt_tokens,
)
from qmd_finetune.redact import redact

BATCH_DISCOUNT = 0.5


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".batch.json")


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


async def run_anthropic_batch(
    cfg: Any,
    provider: Any,
    runner: Runner,
    jobs: list[Job],
    handle: Callable[[Outcome], str | None],
    skipped: int = 0,
) -> RunStats:
    if not isinstance(provider, AnthropicProvider):
        raise ValueError("--batch needs an anthropic/<model> model (the Message Batches API)")
    stats = runner.stats
    stats.total = len(jobs) + skipped
    stats.skipped = skipped
    client = provider._client
    state_file = state_path(cfg.output)
    by_query = {job.key: job for job in jobs}

    def record(outcome: Outcome) -> None:
        rejected = handle(outcome)
        if outcome.error is not None or rejected:
            stats.fail(outcome.error or rejected or "rejected")
        else:
            stats.ok += 1
        stats.done += 1

    with ProgressDisplay(stats, enabled=runner.config.progress) as progress:
        try:
            state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else None
            if state is None:
                state = await _submit(cfg, client, runner, jobs, record, state_file)
                progress.update(force=True)
            if state is not None:
                await _collect(cfg, client, runner, state, by_query, record, progress)
                state_file.unlink(missing_ok=True)
        finally:
            await provider.aclose()
    return stats


async def _submit(cfg: Any, client: Any, runner: Runner, jobs: list[Job], record: Callable, state_file: Path):
    """Answer cache hits, then submit the rest (within budget) as one batch; returns the saved state."""
    requests = []
    mapping: dict[str, str] = {}
    reserved_cost = 0.0
    reserved_tokens = 0
    limit_cost, limit_tokens = runner.config.max_cost, runner.config.max_tokens_total
    for job in jobs:
        key = _cache_key(runner, job)
        hit = runner.cache.get(key) if runner.cache is not None else None
        if hit is not None:
            runner.stats.cache_hits += 1
            record(
                Outcome(job, ChatResponse(hit.text, hit.prompt_tokens, hit.completion_tokens), cached=True)
            )
            continue
        tokens = estimate_prompt_tokens(job.messages) + runner.params.max_tokens
        cost = (
            runner.pricing.estimate(tokens - runner.params.max_tokens, runner.params.max_tokens)
            * BATCH_DISCOUNT
        )
        if limit_cost is not None and reserved_cost + cost > limit_cost:
            runner.stop(f"--max-cost {limit_cost:g} reached")
            break
        if limit_tokens is not None and reserved_tokens + tokens > limit_tokens:
            runner.stop(f"--max-tokens-total {limit_tokens} reached")
            break
        reserved_cost += cost
        reserved_tokens += tokens
        custom_id = f"q{len(requests)}"
        mapping[custom_id] = job.key
        body = AnthropicProvider.request_body(client_model(cfg), job.messages, runner.params)
        for name in ("temperature", "top_p"):
            if getattr(runner.params, name) is not None:
                body[name] = getattr(runner.params, name)
        requests.append({"custom_id": custom_id, "params": body})
    if not requests:
        return None
    batch = await _with_retries(runner, lambda: client.messages.batches.create(requests=requests))
    state = {"batch_id": batch.id, "model": cfg.model, "queries": mapping}
    _write_state(state_file, state)
    return state


def client_model(cfg: Any) -> str:
    return cfg.model.split("/", 1)[1]


def _cache_key(runner: Runner, job: Job) -> str:
    from qmd_finetune.generate.cache import request_key

    return request_key(runner.model, job.messages, runner.params.to_dict())


async def _with_retries(runner: Runner, call: Callable) -> Any:
    from qmd_finetune.generate.providers import classify_anthropic_error
    from qmd_finetune.generate.runner import backoff_delay

    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - classified
            error = exc if isinstance(exc, ProviderError) else classify_anthropic_error(exc, None)
            if error is None:
                raise
            if not error.retryable or attempt > runner.config.max_retries:
                raise error from exc
            runner.stats.retries += 1
            await asyncio.sleep(backoff_delay(attempt, runner.config, error.retry_after, runner._rng))


async def _collect(
    cfg: Any,
    client: Any,
    runner: Runner,
    state: dict[str, Any],
    by_query: dict[str, Job],
    record: Callable,
    progress: ProgressDisplay,
) -> None:
    batch_id = state["batch_id"]
    while True:
        batch = await _with_retries(runner, lambda: client.messages.batches.retrieve(batch_id))
        if batch.processing_status == "ended":
            break
        await asyncio.sleep(cfg.poll_interval)
    results = await _with_retries(runner, lambda: client.messages.batches.results(batch_id))
    async for entry in results:
        query = state["queries"].get(entry.custom_id)
        job = by_query.get(query) if query else None
        if job is None:
            continue  # already written by an earlier run
        result = entry.result
        if result.type != "succeeded":
            error = getattr(getattr(result, "error", None), "error", None)
            message = getattr(error, "message", None) or result.type
            raw = result.model_dump_json() if hasattr(result, "model_dump_json") else None
            record(
                Outcome(
                    job, None, error=redact(f"batch {result.type}: {message}"), raw=redact(raw or "") or None
                )
            )
            continue
        try:
            response = response_from_message(result.message)
        except ProviderError as exc:
            record(Outcome(job, None, error=exc.reason, raw=exc.body))
            continue
        cost = runner.pricing.cost(response, discount=BATCH_DISCOUNT)
        runner.stats.prompt_tokens += response.prompt_tokens
        runner.stats.completion_tokens += response.completion_tokens
        runner.stats.cost += cost
        runner.stats.requests += 1
        if runner.cache is not None:
            runner.cache.put(
                _cache_key(runner, job),
                runner.model,
                job.messages,
                runner.params.to_dict(),
                response.text,
                response.prompt_tokens,
                response.completion_tokens,
                cost,
            )
        record(Outcome(job, response, cost=cost))
        progress.update()
