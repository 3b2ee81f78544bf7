"""``train export``: a merged model as safetensors + tokenizer, an Ollama Modelfile, optional GGUF
(written with the ``gguf`` package: :mod:`qmd_finetune.training.gguf_export`)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from qmd_finetune.training.evaluate import prompt_format
from qmd_finetune.training.gguf_export import GGUF_TYPES, GGUFExportError, write_gguf
from qmd_finetune.training.models import inspect_model, load_model, load_tokenizer
from qmd_finetune.training.prompts import TRAINING_INFO, PromptFormat

_SYSTEM_RE = re.compile(r"<\|im_start\|>system(?:\\n|\n)(.+?)<\|im_end\|>")


@dataclass
class ExportResult:
    output_dir: Path
    modelfile: Path
    gguf: Path | None


def default_system_prompt(chat_template: str | None) -> str | None:
    """The system prompt a ChatML template injects when none is given (SmolLM2 has one)."""
    if not chat_template:
        return None
    match = _SYSTEM_RE.search(chat_template)
    return match.group(1) if match else None


def modelfile_text(source_line: str, chat_template: str | None, fmt: PromptFormat) -> str:
    """An Ollama Modelfile whose TEMPLATE renders prompts exactly as training did."""
    chatml = chat_template is not None and "<|im_start|>" in chat_template
    if not chatml:
        raise ValueError("only ChatML chat templates (<|im_start|>...) are supported for the Modelfile")
    think = "<think>\n\n</think>\n\n" if fmt.chat_template_kwargs.get("enable_thinking") is False else ""
    system = default_system_prompt(chat_template)
    lines = [
        "# Query expansion model exported by qmd-finetune (train export).",
        f"# Prompt it as in training: {fmt.template!r}",
        source_line,
        'TEMPLATE """{{ if .System }}<|im_start|>system',
        "{{ .System }}<|im_end|>",
        "{{ end }}{{ if .Prompt }}<|im_start|>user",
        "{{ .Prompt }}<|im_end|>",
        "{{ end }}<|im_start|>assistant",
        think + '{{ .Response }}<|im_end|>"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"', "PARAMETER temperature 0"]
    return "\n".join(lines) + "\n"


def export(
    model_name: str,
    output_dir: str | Path,
    gguf: bool = False,
    gguf_type: str = "f16",
) -> ExportResult:
    """Merged safetensors + tokenizer + Modelfile; with ``gguf`` also ``model.gguf`` (the
    Modelfile then says ``FROM ./model.gguf``)."""
    if gguf and gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"--gguf-type must be one of {', '.join(GGUF_TYPES)} (got {gguf_type!r})")
    source = inspect_model(model_name)
    out = Path(output_dir)
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype=None, merge=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    fmt = prompt_format(source)
    if (Path(source.path) / TRAINING_INFO).is_file():
        shutil.copyfile(Path(source.path) / TRAINING_INFO, out / TRAINING_INFO)
    gguf_path = write_gguf(out, out / "model.gguf", gguf_type) if gguf else None
    source_line = "FROM ./model.gguf" if gguf_path else "FROM ."
    modelfile = out / "Modelfile"
    modelfile.write_text(modelfile_text(source_line, tokenizer.chat_template, fmt), encoding="utf-8")
    return ExportResult(out, modelfile, gguf_path)
