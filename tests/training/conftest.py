"""Shared fixtures for the training tests: a small record set and one tiny trained model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECORDS = [
    {
        "query": "docker compose networking",
        "category": "technology",
        "output": [
            ["lex", "docker compose network bridge"],
            ["lex", "compose service dns names"],
            ["vec", "how do containers in a docker compose project talk to each other"],
            ["hyde", "Docker Compose creates a default network where each service is reachable by its name."],
        ],
    },
    {
        "query": "git rebase vs merge",
        "category": "technology",
        "output": [
            ["hyde", "Rebase rewrites your commits on top of another branch; merge keeps both histories."],
            ["lex", "git rebase merge difference"],
            ["vec", "when should I rebase instead of merging a git branch"],
        ],
    },
    {
        "query": "who is TDS motorsports",
        "category": "people",
        "output": [
            ["lex", "TDS motorsports history"],
            ["lex", "TDS motorsports founders"],
            ["vec", "information about TDS motorsports company"],
        ],
    },
    {
        "query": "sourdough starter feeding",
        "category": "food",
        "output": [
            ["hyde", "Feed a sourdough starter equal weights of flour and water once or twice a day."],
            ["lex", "sourdough starter feeding ratio"],
            ["vec", "how often should I feed my sourdough starter and with what"],
        ],
    },
    {
        "query": "auth",
        "category": "technology",
        "output": [
            ["lex", "authentication login"],
            ["lex", "auth token session"],
            ["vec", "how does user authentication work in web applications"],
        ],
    },
    {
        "query": "tomato blight prevention",
        "category": "garden",
        "output": [
            [
                "hyde",
                "Prevent tomato blight by watering at the base, spacing plants and removing lower leaves.",
            ],
            ["lex", "tomato blight prevent fungicide"],
            ["vec", "how can I keep blight from killing my tomato plants"],
        ],
    },
    {
        "query": "roman empire fall causes",
        "category": "history",
        "output": [
            ["lex", "roman empire decline causes"],
            ["vec", "why did the western roman empire collapse"],
            [
                "hyde",
                "The Western Roman Empire fell in 476 after economic crisis, invasions and political instability.",
            ],
        ],
    },
    {
        "query": "kubernetes pod restart /only:lex",
        "category": "technology",
        "output": [["lex", "kubectl rollout restart pod"], ["lex", "kubernetes pod crashloop restart"]],
    },
    {
        "query": "marathon training plan",
        "category": "sports",
        "output": [
            [
                "hyde",
                "A 16-week marathon plan builds weekly mileage gradually with one long run each weekend.",
            ],
            ["lex", "marathon training schedule weeks"],
            ["vec", "what does a beginner marathon training plan look like"],
        ],
    },
    {
        "query": "tax deduction home office",
        "category": "finance",
        "output": [
            ["lex", "home office tax deduction rules"],
            ["vec", "can I deduct my home office from my taxes if I work remotely"],
        ],
    },
]

EVAL_QUERIES = (
    "# Technical\ndocker compose networking\nauth /only:lex\n\n# Named entities\nwho is TDS motorsports\n"
)


@pytest.fixture(scope="session")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("records") / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def queries_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "queries.txt"
    path.write_text(EVAL_QUERIES, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, records_file: Path) -> Path:
    from qmd_finetune.training.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare([records_file], out, val_split=0.2, seed=7)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> Path:
    """Two SFT steps on the embedded model through the CLI, with a checkpoint at step 2."""
    from typer.testing import CliRunner

    from qmd_finetune.training.cli import app

    out = tmp_path_factory.mktemp("sft")
    result = CliRunner().invoke(app, ["sft", *sft_args(prepared, out), "--max_steps", "2"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def sft_cli_args():
    return sft_args


def sft_args(dataset: Path, out: Path) -> list[str]:
    return [
        "--dataset", str(dataset),
        "--output_dir", str(out),
        "--per_device_train_batch_size", "2",
        "--max_length", "128",
        "--logging_steps", "1",
        "--save_steps", "2",
        "--lora_r", "4",
        "--lora_alpha", "8",
        "--torch_num_threads", "1",
        "--learning_rate", "1e-3",
        "--packing", "false",
    ]  # fmt: skip
