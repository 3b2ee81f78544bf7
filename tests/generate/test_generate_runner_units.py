"""Runner pieces: token buckets, backoff, Retry-After parsing, secret redaction, failed awaitable outcomes."""

from __future__ import annotations

import asyncio
import random

import pytest

from qmd_finetune.generate import runner as runner_mod
from qmd_finetune.generate.providers import parse_retry_after, redact
from qmd_finetune.generate.runner import RunnerConfig, TokenBucket, backoff_delay


def test_token_bucket_spaces_requests_at_the_configured_rate(monkeypatch: pytest.MonkeyPatch):
    clock = {"now": 1000.0}
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock["now"] += seconds

    monkeypatch.setattr(runner_mod.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(runner_mod.asyncio, "sleep", fake_sleep)

    async def go() -> None:
        bucket = TokenBucket(per_minute=120)  # 2 per second, burst of 2
        for _ in range(6):
            await bucket.acquire()

    asyncio.run(go())
    assert sum(slept) == pytest.approx(2.0)  # 6 requests at 2/s after a burst of 2


def test_backoff_doubles_with_jitter_and_retry_after_wins():
    config = RunnerConfig(backoff_base=0.5, backoff_max=4.0)
    rng = random.Random(0)
    delays = [backoff_delay(attempt, config, None, rng) for attempt in range(1, 6)]
    for attempt, delay in enumerate(delays, start=1):
        base = min(4.0, 0.5 * 2 ** (attempt - 1))
        assert 0.5 * base <= delay <= 1.5 * base
    assert 7.0 <= backoff_delay(1, config, 7.0, rng) <= 7.1


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_redact_hides_the_key():
    assert redact("401: bad key sk-abcdef123", "sk-abcdef123") == "401: bad key ***"


def test_a_failed_awaitable_outcome_fails_the_run_once_without_callback_tracebacks(llm_server, caplog):
    """``handle`` may return an awaitable; when it fails, ``run`` raises its error (once), the
    other outcomes are counted, and asyncio logs no 'Exception in callback' per failure."""
    from qmd_finetune.generate.providers import GenerationParams, Pricing, ProviderConfig, make_provider
    from qmd_finetune.generate.runner import Job, Runner

    provider = make_provider(ProviderConfig(model="openai/m", api_base=llm_server.url + "/v1"), 4)
    run = Runner(
        provider,
        "openai/m",
        GenerationParams(max_tokens=50),
        RunnerConfig(concurrency=4, progress=False),
        Pricing(0, 0),
    )
    jobs = [
        Job(key=f"q{i}", messages=[{"role": "user", "content": f"kubernetes ingress {i}"}]) for i in range(6)
    ]

    async def judged(outcome):  # noqa: ANN001
        await asyncio.sleep(0)
        if outcome.job.key in ("q2", "q4"):
            raise RuntimeError(f"writing {outcome.job.key} failed")
        return None

    with (
        caplog.at_level("ERROR", logger="asyncio"),
        pytest.raises(RuntimeError, match="writing q[24] failed"),
    ):
        asyncio.run(run.run(jobs, judged))
    assert run.stats.ok == 4 and run.stats.done == 4
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]
