"""Load exactly the model a user names: an embedded-model name, an adapter dir, or a merged dir.

An adapter directory (``adapter_config.json``) is applied to the base model it records; a
merged directory (``config.json`` + weights) loads directly. Anything else is an error:
the base model is never scored in place of something we could not load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmd_finetune.embedded import EMBEDDED_NAME, EMBEDDED_REPO_ID, resolve_model_path

EMBEDDED_NAMES = {EMBEDDED_NAME, f"local/{EMBEDDED_NAME}", "embedded", EMBEDDED_REPO_ID}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class ModelLoadError(RuntimeError):
    pass


@dataclass
class ModelSource:
    requested: str
    kind: str  # "adapter" | "merged" | "hub"
    path: str
    base: str | None = None  # adapters only: the resolved base model path
    base_name: str | None = None  # adapters only: as recorded in adapter_config.json
    run_dir: str | None = None  # set when a `train sft`/`grpo` output directory was named

    def describe(self) -> str:
        what = (
            f"adapter {self.path} on base {self.base_name}"
            if self.kind == "adapter"
            else f"{self.kind} model {self.path}"
        )
        if self.run_dir is None:
            return what
        which = "its merged model" if self.kind == "merged" else "its adapter (no merged/ model in it)"
        return f"{what} ({self.run_dir} is a training output directory: {which})"


def is_embedded(name: str) -> bool:
    return name in EMBEDDED_NAMES


def resolve_base(name: str) -> str:
    return resolve_model_path(name) if is_embedded(name) else name


def inspect_model(name_or_path: str) -> ModelSource:
    """Decide what ``name_or_path`` is without loading weights."""
    if is_embedded(name_or_path):
        return ModelSource(name_or_path, "merged", resolve_model_path(name_or_path))
    path = Path(name_or_path)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            try:
                adapter = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"{path}/adapter_config.json is not valid JSON: {exc}") from exc
            base_name = adapter.get("base_model_name_or_path")
            if not base_name:
                raise ModelLoadError(f"{path}/adapter_config.json does not name its base model")
            base = resolve_base(base_name)
            if not is_embedded(base_name) and not Path(base).is_dir() and Path(base).is_absolute():
                raise ModelLoadError(
                    f"adapter {path} needs its base model {base_name}, which does not exist here"
                )
            return ModelSource(name_or_path, "adapter", str(path), base=base, base_name=base_name)
        if _is_merged_dir(path):
            return ModelSource(name_or_path, "merged", str(path))
        if _is_merged_dir(path / "merged") or (path / "adapter" / "adapter_config.json").is_file():
            # A `train sft` output directory: its merged model, or its adapter when not merged.
            inner = path / "merged" if _is_merged_dir(path / "merged") else path / "adapter"
            source = inspect_model(str(inner))
            source.requested, source.run_dir = name_or_path, str(path)
            return source
        hint = ""
        subdirs = [d.name for d in path.iterdir() if d.is_dir() and d.name in {"adapter", "merged"}]
        if subdirs:
            hint = f"; it contains {' and '.join(d + '/' for d in sorted(subdirs))}: pass one of those"
        raise ModelLoadError(
            f"{path} is neither an adapter directory (adapter_config.json) nor a model directory "
            f"(config.json + weights){hint}"
        )
    if path.exists():
        raise ModelLoadError(f"{path} is a file, not a model directory")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ModelLoadError(f"model not found: {name_or_path} (not a directory and not a known model name)")
    return ModelSource(name_or_path, "hub", name_or_path)


def _is_merged_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    where = source.path
    if source.kind == "adapter" and not (Path(source.path) / "tokenizer_config.json").is_file():
        where = source.base
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except OSError as exc:
        raise ModelLoadError(f"cannot load a tokenizer from {where}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelSource, dtype: Any = None, merge: bool = True) -> Any:
    """Load weights in fp32 (adapters merged in fp32), then cast: the same bits either way."""
    import torch
    from transformers import AutoModelForCausalLM

    where = source.base if source.kind == "adapter" else source.path
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model weights from {where}: {exc}") from exc
    if source.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.path)
        if merge:
            model = model.merge_and_unload()
    if dtype is not None and dtype != torch.float32:
        model = model.to(dtype)
    model.eval()
    return model


def load(name_or_path: str, dtype: Any = None, merge: bool = True) -> tuple[Any, Any, ModelSource]:
    source = inspect_model(name_or_path)
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype=dtype, merge=merge)
    return model, tokenizer, source
