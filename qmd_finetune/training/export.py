"""``train export``: a merged model as safetensors + tokenizer, an Ollama Modelfile, optional GGUF."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qmd_finetune.training.evaluate import prompt_format
from qmd_finetune.training.models import inspect_model, load_model, load_tokenizer
from qmd_finetune.training.prompts import TRAINING_INFO, PromptFormat

CONVERTER_ENV = "QMD_GGUF_CONVERTER"
CONVERTER_NAME = "convert_hf_to_gguf.py"
GGUF_HELP = f"""GGUF conversion needs llama.cpp's {CONVERTER_NAME}, which is not installed here.
Get it with:
  git clone --depth 1 https://github.com/ggml-org/llama.cpp
  pip install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt
then rerun with --converter llama.cpp/{CONVERTER_NAME} (or set {CONVERTER_ENV}=llama.cpp/{CONVERTER_NAME}).
The safetensors export is complete; Ollama can also import it directly (the Modelfile says FROM .)."""
_SYSTEM_RE = re.compile(r"<\|im_start\|>system(?:\\n|\n)(.+?)<\|im_end\|>")


class ConverterMissing(RuntimeError):
    pass


@dataclass
class ExportResult:
    output_dir: Path
    modelfile: Path
    gguf: Path | None


def find_converter(explicit: str | None = None) -> Path | None:
    for candidate in (explicit, os.environ.get(CONVERTER_ENV), shutil.which(CONVERTER_NAME)):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


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
    converter: str | None = None,
    outtype: str = "f16",
) -> ExportResult:
    source = inspect_model(model_name)
    out = Path(output_dir)
    converter_path = find_converter(converter) if gguf else None
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype=None, merge=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    fmt = prompt_format(source)
    if (Path(source.path) / TRAINING_INFO).is_file():
        shutil.copyfile(Path(source.path) / TRAINING_INFO, out / TRAINING_INFO)
    gguf_path = None
    if gguf and converter_path is not None:
        gguf_path = out / "model.gguf"
        subprocess.run(
            [
                sys.executable,
                str(converter_path),
                str(out),
                "--outfile",
                str(gguf_path),
                "--outtype",
                outtype,
            ],
            check=True,
        )
    source_line = "FROM ./model.gguf" if gguf_path else "FROM ."
    modelfile = out / "Modelfile"
    modelfile.write_text(modelfile_text(source_line, tokenizer.chat_template, fmt), encoding="utf-8")
    if gguf and converter_path is None:
        raise ConverterMissing(GGUF_HELP)
    return ExportResult(out, modelfile, gguf_path)
