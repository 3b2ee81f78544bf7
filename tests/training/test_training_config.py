"""Config loading: YAML + TRL-style overrides, validated before any weights load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.training.cli import app
from qmd_finetune.training.config import (
    ConfigError,
    GRPORunConfig,
    SFTRunConfig,
    load_config,
    parse_overrides,
)

ROOT = Path(__file__).resolve().parents[2]


def test_yaml_scientific_notation_is_a_number(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 2e-4\nmax_steps: 3\n", encoding="utf-8")
    config = load_config(SFTRunConfig, path)
    assert config.learning_rate == pytest.approx(2e-4)
    assert config.max_steps == 3


def test_overrides_use_config_key_names_and_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 3\nmerge: true\n", encoding="utf-8")
    overrides = parse_overrides(
        ["--max_steps", "2", "--merge=false", "--learning-rate", "1e-3", "--gradient_checkpointing"]
    )
    config = load_config(SFTRunConfig, path, overrides)
    assert (config.max_steps, config.merge, config.learning_rate, config.gradient_checkpointing) == (
        2,
        False,
        1e-3,
        True,
    )


def test_list_override_accepts_commas() -> None:
    config = load_config(SFTRunConfig, None, {"lora_target_modules": "q_proj,v_proj"})
    assert config.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="max_stpes.*did you mean 'max_steps'"):
        load_config(SFTRunConfig, None, {"max_stpes": "2"})


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("learnin_rate: 1e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml"):
        load_config(SFTRunConfig, path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_steps", "two", "max_steps: expected an integer"),
        ("max_steps", 2.5, "max_steps: expected an integer"),
        ("learning_rate", "fast", "learning_rate: expected a number"),
        ("merge", "maybe", "merge: expected true or false"),
        ("device", "tpu", "device: 'tpu' is not one of"),
        ("per_device_train_batch_size", 0, "must be positive"),
    ],
)
def test_wrong_types_and_values_fail_clearly(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(SFTRunConfig, None, {key: value})


def test_missing_config_file_fails() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(SFTRunConfig, "does/not/exist.yaml")


def test_grpo_generation_batch_must_be_divisible() -> None:
    with pytest.raises(ConfigError, match="num_generations"):
        load_config(GRPORunConfig, None, {"per_device_train_batch_size": 3, "num_generations": 2})


@pytest.mark.parametrize(
    "name", ["sft.yaml", "grpo.yaml", "sft-qwen3-1.7b-gpu.yaml", "grpo-qwen3-1.7b-gpu.yaml"]
)
def test_shipped_configs_validate(name: str) -> None:
    cls = GRPORunConfig if name.startswith("grpo") else SFTRunConfig
    load_config(cls, ROOT / "configs" / name)


def test_dry_run_prints_resolved_config() -> None:
    result = CliRunner().invoke(app, ["sft", "--dry-run", "--max_steps", "2", "--learning_rate", "2e-4"])
    assert result.exit_code == 0, result.output
    assert "max_steps: 2" in result.output
    assert "learning_rate: 0.0002" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sft", "--max_stpes", "2"], "unknown key"),
        (["sft", "--max_steps", "two"], "expected an integer"),
        (["grpo", "--config", "missing.yaml"], "config file not found"),
    ],
)
def test_cli_config_errors_fail_before_loading_weights(args: list[str], message: str) -> None:
    """Run in a fresh interpreter so we can see that transformers was never imported."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from qmd_finetune.training.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "print(r.exit_code, 'transformers' in sys.modules, 'torch' in sys.modules)\n"
        "print(r.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    first, _, output = done.stdout.partition("\n")
    assert first == "2 False False", done.stdout + done.stderr
    assert message in output


def test_finetune_must_be_lora_or_full() -> None:
    from qmd_finetune.training.config import ConfigError, SFTRunConfig, load_config

    assert load_config(SFTRunConfig, None, {"finetune": "full", "packing": "true"}).packing is True
    with pytest.raises(ConfigError, match="finetune: 'qlora' is not one of lora, full"):
        load_config(SFTRunConfig, None, {"finetune": "qlora"})
