"""Typed training configs: YAML file + TRL-style ``--key value`` overrides, validated up front.

Validation happens before any weights load, so a typo in a key or a value fails in a second.
YAML 1.1 reads ``2e-4`` as a string; float fields accept such strings as numbers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qmd_finetune.reward import DEFAULT_RUBRIC, RUBRICS

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what was wrong."""


@dataclass
class SFTRunConfig:
    """Supervised fine-tuning with a LoRA adapter (TRL SFTTrainer, completion-only loss)."""

    model: str = "local/smollm2"
    dataset: str = "out/train"
    output_dir: str = "out/sft"
    max_steps: int = -1
    num_train_epochs: float = 1.0
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.03
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 256
    max_train_samples: int | None = None
    # lora trains an adapter (written to adapter/ and merged/); full trains every weight
    # (written to merged/ only).
    finetune: str = "lora"
    # Pack several short examples into one max_length row (no padding; attention kept per example).
    packing: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    device: str = "auto"
    precision: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    save_steps: int = 200
    save_total_limit: int = 2
    eval_steps: int | None = None
    seed: int = 42
    torch_num_threads: int | None = None
    merge: bool = True
    report_to: str = "none"


@dataclass
class GRPORunConfig:
    """GRPO on top of the SFT model with its own small LoRA; the reward is qmd_finetune.reward."""

    model: str = "out/sft/merged"
    dataset: str = "out/train"
    output_dir: str = "out/grpo"
    max_steps: int = 50
    num_train_epochs: float = 1.0
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    num_generations: int = 4
    generation_batch_size: int | None = None
    # None fits it to the data: the 99th percentile of the training targets' tokens, +25%.
    max_completion_length: int | None = None
    # Stop after this many steps when rewards never differ within a group or more than
    # max_clipped_ratio of the completions hit max_completion_length (0 turns the check off).
    health_check_steps: int = 3
    max_clipped_ratio: float = 0.5
    temperature: float = 1.0
    beta: float = 0.0
    max_train_samples: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    device: str = "auto"
    precision: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    save_steps: int = 200
    save_total_limit: int = 2
    seed: int = 42
    torch_num_threads: int | None = None
    merge: bool = True
    report_to: str = "none"
    # The reward's rubric (qmd_finetune.reward): v2 (qmd's current, the default) or v1.
    rubric: str = DEFAULT_RUBRIC


@dataclass
class RFTRunConfig:
    """Rejection-sampling fine-tuning: sample, keep the best answer by the reward, SFT on it; repeat.

    Keys set to null here come from ``sft_config`` (the SFT recipe), so RFT trains like SFT.
    """

    model: str = "out/sft/merged"
    dataset: str = "out/train"
    output_dir: str = "out/rft"
    rounds: int = 1
    samples_per_query: int = 4
    max_queries: int | None = None
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 160
    batch_size: int = 8
    decoding: str = "safe"
    # A query's best sample is kept when its reward percentage is at least this (0-100).
    threshold: float = 80.0
    # Keep a sample only when it scores above the query's gold target too.
    require_beat_gold: bool = False
    # The fraction of the dataset's gold training rows mixed into each round's training set.
    gold_fraction: float = 0.5
    rubric: str = DEFAULT_RUBRIC
    # The SFT recipe for each round (a train sft YAML); null: the SFTRunConfig defaults.
    sft_config: str | None = "configs/sft.yaml"
    # SFT steps per round (-1: the sft config's num_train_epochs over the round's data).
    max_steps: int = 50
    learning_rate: float | None = None
    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    max_length: int | None = None
    finetune: str | None = None
    packing: bool | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 42
    torch_num_threads: int | None = None


CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "finetune": ("lora", "full"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "lr_scheduler_type": ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"),
    "rubric": RUBRICS,
    "decoding": ("free", "safe", "strict"),
}
POSITIVE = {
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "lora_r",
    "lora_alpha",
    "num_generations",
    "max_completion_length",
    "logging_steps",
    "save_steps",
    "rounds",
    "samples_per_query",
    "max_queries",
    "max_new_tokens",
    "batch_size",
    "temperature",
}


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(type, optional) for ``int``, ``int | None``, ``list[str]``."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"list": list, "str": str, "int": int, "float": float, "bool": bool})  # noqa: S307
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    kind, optional = _base_type(annotation)
    if value is None or (isinstance(value, str) and value.lower() in {"none", "null"} and optional):
        if optional:
            return None
        raise ConfigError(f"{key}: must not be empty (expected {getattr(kind, '__name__', kind)})")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    number = float(value)
                except ValueError:
                    number = None
                if number is not None and number.is_integer():
                    return int(number)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return list(value)
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def parse_overrides(args: list[str]) -> dict[str, str | None]:
    """``["--max_steps", "2", "--merge=false", "--gradient_checkpointing"]`` -> a dict.

    Dashes in key names are read as underscores; a flag without a value means true.
    """
    out: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r} (overrides look like --key value)")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = value
        i += 1
    return out


def build_config(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Instantiate ``cls`` from ``values``; unknown keys and wrong types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        import difflib

        hints_text = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            hints_text.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown key(s) in {source}: {', '.join(hints_text)}")
    kwargs = {key: _coerce(key, value, hints[key]) for key, value in values.items()}
    config = cls(**kwargs)
    validate(config)
    return config


def validate(config: Any) -> None:
    for key, allowed in CHOICES.items():
        value = getattr(config, key, None)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:
        value = getattr(config, key, None)
        if value is not None and value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    if getattr(config, "learning_rate", None) is not None and config.learning_rate <= 0:
        raise ConfigError(f"learning_rate: must be positive, got {config.learning_rate}")
    if config.max_steps == 0 or config.max_steps < -1:
        raise ConfigError("max_steps: use -1 (train by epochs) or a positive number")
    if isinstance(config, GRPORunConfig):
        batch = (
            config.generation_batch_size
            or config.per_device_train_batch_size * config.gradient_accumulation_steps
        )
        if batch % config.num_generations:
            raise ConfigError(
                f"num_generations ({config.num_generations}) must divide the generation batch ({batch}: "
                "per_device_train_batch_size x gradient_accumulation_steps, or generation_batch_size)"
            )
        if config.num_generations < 2:
            raise ConfigError("num_generations: GRPO needs at least 2 completions per prompt")
        if config.health_check_steps < 0:
            raise ConfigError(f"health_check_steps: must be 0 (off) or more, got {config.health_check_steps}")
        if not 0 < config.max_clipped_ratio <= 1:
            raise ConfigError(f"max_clipped_ratio: must be in (0, 1], got {config.max_clipped_ratio}")
    if isinstance(config, RFTRunConfig):
        if not 0 <= config.threshold <= 100:
            raise ConfigError(f"threshold: a reward percentage in [0, 100], got {config.threshold}")
        if not 0 <= config.gold_fraction <= 1:
            raise ConfigError(f"gold_fraction: must be in [0, 1], got {config.gold_fraction}")
        if not 0 < config.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {config.top_p}")


def load_config(cls: type, path: str | Path | None, overrides: dict[str, Any] | None = None) -> Any:
    """Read a YAML config (optional), apply overrides, validate. Never touches model weights."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value, got {type(loaded).__name__}")
        values.update(loaded)
    source = str(path) if path is not None else "config"
    build_config(cls, values, source)  # errors in the file are reported against the file
    values.update(overrides or {})
    return build_config(cls, values, "command-line overrides" if overrides else source)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
