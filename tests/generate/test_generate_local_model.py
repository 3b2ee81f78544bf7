"""The embedded model end to end: LiteLLM provider local/smollm2 (sync, async) and `generate expand`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import invoke

pytestmark = pytest.mark.slow


def test_litellm_reaches_the_embedded_model_sync_and_async():
    import litellm

    from qmd_finetune.generate.local_llm import register_litellm_provider

    register_litellm_provider()
    register_litellm_provider()  # idempotent
    messages = [{"role": "user", "content": "Say hello."}]
    response = litellm.completion(model="local/smollm2", messages=messages, max_tokens=8)
    assert isinstance(response.choices[0].message.content, str) and response.choices[0].message.content
    assert 0 < response.usage.completion_tokens <= 8

    async def many():
        calls = [
            litellm.acompletion(model="local/smollm2", messages=messages, max_tokens=8) for _ in range(3)
        ]
        return await asyncio.gather(*calls)

    answers = asyncio.run(many())
    # greedy decoding: the batched answers equal each other
    assert len({a.choices[0].message.content for a in answers}) == 1


def test_expand_with_the_embedded_model(tmp_path: Path):
    queries = tmp_path / "q.txt"
    queries.write_text("docker compose networking\nwho is Marie Curie\n")
    out = tmp_path / "out.jsonl"
    args = ["expand", "--model", "local/smollm2", "--queries", str(queries), "--output", str(out)]
    result = invoke([*args, "--max-tokens", "24", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert len(rows) + len(rejects) == 2
    for row in rows:
        assert row["meta"]["provider"] == "local" and row["meta"]["usage"]["completion_tokens"] > 0
    for reject in rejects:
        assert reject["stage"] in {"parse", "gate", "validate"} and reject["raw"] is not None
