"""A GGUF file from a merged Llama-architecture model, with the ``gguf`` package only.

No llama.cpp checkout: the tensors are renamed with gguf's own tensor-name map, the query
and key projections are permuted into llama.cpp's rotary layout (as its converter does and as
transformers undoes on load), and the tokenizer (BPE tokens, types, merges, special ids) and
chat template go into the metadata. ``f32`` is lossless; ``f16`` halves the file; ``q8_0``
quantizes the 2-D weights to 8 bits (norms stay f32, as llama.cpp keeps them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GGUF_TYPES = ("f32", "f16", "q8_0")
SUPPORTED_ARCHITECTURES = {"llama"}


class GGUFExportError(ValueError):
    pass


def _file_type(gguf: Any, kind: str) -> Any:
    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[kind]


def _permute(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's q/k permutation (``convert_hf_to_gguf.LlamaModel.permute``)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tokenizer_metadata(writer: Any, gguf: Any, model_dir: Path, tokenizer: Any, vocab_size: int) -> None:
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFExportError(f"only BPE tokenizers are supported for GGUF, not {model.get('type')!r}")
    by_id = {index: token for token, index in model["vocab"].items()}
    added = {item["id"]: item for item in data.get("added_tokens", [])}
    for index, item in added.items():
        by_id[index] = item["content"]
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index, f"[PAD{index}]")
        tokens.append(token)
        if index in added:
            special = added[index].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif index in by_id:
            types.append(gguf.TokenType.NORMAL)
        else:
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if "smollm" in str(model_dir).lower() else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(model_dir: str | Path, output: str | Path, kind: str = "f16") -> Path:
    """Write ``output`` (a .gguf file) from the merged model in ``model_dir``."""
    import gguf
    import numpy as np
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    if kind not in GGUF_TYPES:
        raise GGUFExportError(f"--gguf-type must be one of {', '.join(GGUF_TYPES)} (got {kind!r})")
    source = Path(model_dir)
    config = AutoConfig.from_pretrained(source)
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise GGUFExportError(
            f"GGUF export supports {', '.join(sorted(SUPPORTED_ARCHITECTURES))} models, not {config.model_type!r}"
        )
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise GGUFExportError(f"{source}: no safetensors weights to convert")
    tokenizer = AutoTokenizer.from_pretrained(source)
    n_head, n_head_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = getattr(config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name(source.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(_file_type(gguf, kind))
    _tokenizer_metadata(writer, gguf, source, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for path in weights:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    continue
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                target = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise GGUFExportError(f"{path.name}: no GGUF name for tensor {name}")
                data = handle.get_tensor(name).float().numpy()
                if name.endswith("q_proj.weight"):
                    data = _permute(data, n_head, n_head)
                elif name.endswith("k_proj.weight"):
                    data = _permute(data, n_head, n_head_kv)
                _add_tensor(writer, gguf, np, target, data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return out


def _add_tensor(writer: Any, gguf: Any, np: Any, name: str, data: Any, kind: str) -> None:
    """Norms and other 1-D tensors stay f32; 2-D weights take the requested type."""
    if data.ndim < 2 or kind == "f32":
        writer.add_tensor(name, data.astype(np.float32))
    elif kind == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType.Q8_0
        quantized = gguf.quants.quantize(data.astype(np.float32), qtype)
        writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=qtype)
