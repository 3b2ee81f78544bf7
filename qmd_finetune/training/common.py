"""What SFT and GRPO share: device and precision choice, dataset loading, LoRA, saving outputs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmd_finetune.training.config import config_to_dict
from qmd_finetune.training.models import ModelLoadError, inspect_model, is_embedded, load_model
from qmd_finetune.training.prompts import TRAINING_INFO, PromptFormat, format_for, read_format

Log = Callable[[str], None]


@dataclass
class Runtime:
    device: str  # "cpu" | "cuda"
    bf16: bool
    fp16: bool

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"


def choose_runtime(device: str, precision: str) -> Runtime:
    """``auto`` picks CUDA when present; bf16 only where the hardware supports it."""
    import torch

    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ModelLoadError("device: cuda requested but no CUDA device is available (use device: cpu)")
    chosen = "cuda" if (device == "cuda" or (device == "auto" and cuda)) else "cpu"
    if precision == "auto":
        if chosen == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            return Runtime(chosen, bf16=bf16, fp16=not bf16)
        # On CPU autocast-bf16 LoRA training is no faster here and less stable: keep fp32.
        return Runtime(chosen, bf16=False, fp16=False)
    if precision == "bf16":
        if chosen == "cuda" and not torch.cuda.is_bf16_supported():
            raise ModelLoadError("precision: bf16 is not supported on this GPU (use fp16 or auto)")
        if chosen == "cpu":
            from qmd_finetune.embedded import best_dtype

            if best_dtype() != torch.bfloat16:
                raise ModelLoadError("precision: bf16 is not supported by this CPU (use fp32 or auto)")
        return Runtime(chosen, bf16=True, fp16=False)
    if precision == "fp16":
        if chosen == "cpu":
            raise ModelLoadError("precision: fp16 needs a GPU (use fp32, bf16 or auto on CPU)")
        return Runtime(chosen, bf16=False, fp16=True)
    return Runtime(chosen, bf16=False, fp16=False)


def dataset_dir(path: str) -> Path:
    root = Path(path)
    if not (root / "train.jsonl").is_file():
        raise FileNotFoundError(f"{root}/train.jsonl not found (make it with: train prepare --output {root})")
    return root


def load_split(root: Path, split: str, columns: list[str], limit: int | None, seed: int) -> Any:
    from datasets import load_dataset

    path = root / f"{split}.jsonl"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    data = load_dataset("json", data_files=str(path), split="train")
    keep = [c for c in columns if c in data.column_names]
    data = data.select_columns(keep)
    if limit is not None and limit < len(data):
        data = data.shuffle(seed=seed).select(range(limit))
    return data


def prompt_format_for(root: Path, model: str) -> PromptFormat:
    return read_format(root) or format_for(model)


def starting_model(name: str) -> str:
    """The path of a full model to train from; adapters must be merged first."""
    source = inspect_model(name)
    if source.kind == "adapter":
        sibling = Path(source.path).parent / "merged"
        hint = f" (use {sibling})" if sibling.is_dir() else " (merge it first: train export)"
        raise ModelLoadError(f"{name} is a LoRA adapter; training starts from a full model{hint}")
    return source.path


def lora_config(config: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def resume_checkpoint(checkpoints: Path, resume: bool) -> str | None:
    if not resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is None:
        raise FileNotFoundError(f"--resume: no checkpoint-* directory in {checkpoints}")
    return last


def loss_callback(log: Log) -> Any:
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if not logs:
                return
            elapsed = time.monotonic() - self.start
            parts = [f"step {state.global_step}/{state.max_steps}"]
            for key in ("loss", "reward", "reward_std", "grad_norm", "learning_rate", "train_loss"):
                if key in logs:
                    value = logs[key]
                    parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
            parts.append(f"{elapsed:.0f}s")
            log("  ".join(parts))

    return LossLog()


def quiet_printer(trainer: Any) -> None:
    """Our loss callback prints one line per log; drop transformers' raw dict printer."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def save_outputs(
    trainer: Any,
    tokenizer: Any,
    config: Any,
    base_name: str,
    fmt: PromptFormat,
    kind: str,
    seconds: float,
    log: Log,
) -> dict[str, Any]:
    """Write ``adapter/`` (portable base name), ``merged/`` (fp32 safetensors) and the run info.

    A full fine-tune (``finetune: full``) has no adapter: its weights go to ``merged/`` only.
    """
    out = Path(config.output_dir)
    info = _run_info(trainer, config, base_name, fmt, kind, seconds)
    text = json.dumps(info, indent=2, default=str) + "\n"
    (out / "train_log.json").write_text(
        json.dumps(info["log_history"], indent=2, default=str) + "\n", encoding="utf-8"
    )
    merged_dir = out / "merged"
    if getattr(config, "finetune", "lora") == "full":
        trainer.model.save_pretrained(str(merged_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(merged_dir))
        (merged_dir / TRAINING_INFO).write_text(text, encoding="utf-8")
        log(f"fully fine-tuned model written to {merged_dir}")
        return info
    adapter_dir = out / "adapter"
    trainer.model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    adapter_cfg_path = adapter_dir / "adapter_config.json"
    adapter_cfg = json.loads(adapter_cfg_path.read_text(encoding="utf-8"))
    adapter_cfg["base_model_name_or_path"] = (
        base_name if is_embedded(base_name) else str(Path(starting_model(base_name)).resolve())
    )
    adapter_cfg_path.write_text(json.dumps(adapter_cfg, indent=2) + "\n", encoding="utf-8")
    (adapter_dir / TRAINING_INFO).write_text(text, encoding="utf-8")
    log(f"adapter written to {adapter_dir}")
    if config.merge:
        merged = load_model(inspect_model(str(adapter_dir)), dtype=None, merge=True)
        merged.save_pretrained(str(merged_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(merged_dir))
        (merged_dir / TRAINING_INFO).write_text(text, encoding="utf-8")
        log(f"merged model written to {merged_dir}")
    return info


def _run_info(
    trainer: Any, config: Any, base_name: str, fmt: PromptFormat, kind: str, seconds: float
) -> dict[str, Any]:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    train_loss = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
    return {
        "kind": kind,
        "base_model": base_name,
        "prompt_format": fmt.to_dict(),
        "config": config_to_dict(config),
        "global_step": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": train_loss,
        "seconds": round(seconds, 1),
        "log_history": history,
    }


def loss_summary(info: dict[str, Any]) -> str:
    """The loss part of a run's one-line summary. Fewer steps than ``logging_steps`` log no
    per-step loss; the run's mean ``train_loss`` is then the only figure there is."""
    first, last = info.get("first_loss"), info.get("last_loss")
    if first is not None and last is not None:
        return f"loss {first:.4g} -> {last:.4g}"
    mean = info.get("train_loss")
    every = (info.get("config") or {}).get("logging_steps")
    if mean is None:
        return f"no loss logged (logging_steps {every})"
    return (
        f"mean train loss {mean:.4g} (no per-step loss: {info['global_step']} steps < logging_steps {every})"
    )
