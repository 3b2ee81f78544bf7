"""Fixtures for the generate tests: offline environment, a scripted local LLM server, a CLI runner."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}.items():
    os.environ.setdefault(_name, _value)

sys.path.insert(0, str(Path(__file__).parent))

from _generate_servers import FakeLLMServer  # noqa: E402

SECRET = "sk-test-DO-NOT-LEAK-9f8e7d6c5b4a"


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


@pytest.fixture
def queries_file(tmp_path: Path) -> Path:
    path = tmp_path / "queries.txt"
    path.write_text(
        "# test queries\ndocker compose networking\nsourdough starter\nwho is Marie Curie\npython async await /only:lex\n",
        encoding="utf-8",
    )
    return path


def invoke(args: list[str], env: dict[str, str] | None = None):
    from typer.testing import CliRunner

    from qmd_finetune.generate.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=False, env=env)
