"""The README's commands use only options that the real CLIs define."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
APPS = {
    "curate": "qmd_finetune.curate.cli",
    "generate": "qmd_finetune.generate.cli",
    "gepa": "qmd_finetune.gepa.cli",
    "train": "qmd_finetune.training.cli",
}


def readme_commands() -> list[str]:
    lines, inside = [], False
    for raw in (ROOT / "README.md").read_text().splitlines():
        if raw.startswith("```"):
            inside = not inside
        elif inside:
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if line.split(" ", 1)[0] in APPS:
                lines.append(line)
    return lines


def command_options(program: str, sub: str) -> set[str]:
    import importlib

    module = importlib.import_module(APPS[program])
    group = typer.main.get_command(module.app)
    assert hasattr(group, "commands"), group
    command = group.commands.get(sub)
    assert command is not None, f"README uses `{program} {sub}`, which does not exist"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    if program == "train" and sub in ("sft", "grpo", "rft"):
        from qmd_finetune.training import config

        cls = {"sft": config.SFTRunConfig, "grpo": config.GRPORunConfig, "rft": config.RFTRunConfig}[sub]
        options |= {f"--{field.name}" for field in dataclasses.fields(cls)}
    return options


COMMANDS = readme_commands()


def test_readme_documents_every_command() -> None:
    documented = {" ".join(line.split()[:2]) for line in COMMANDS}
    for program in APPS:
        import importlib

        group = typer.main.get_command(importlib.import_module(APPS[program]).app)
        for sub in group.commands:
            assert f"{program} {sub}" in documented, f"`{program} {sub}` has no example in the README"


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_uses_real_options(line: str) -> None:
    words = shlex.split(line.replace("*.jsonl", "x.jsonl"))
    program, sub = words[0], words[1]
    options = command_options(program, sub)
    used = [w.split("=", 1)[0] for w in words[2:] if w.startswith("--")]
    unknown = [w for w in used if w not in options]
    assert not unknown, f"{program} {sub}: {unknown} not in --help"
