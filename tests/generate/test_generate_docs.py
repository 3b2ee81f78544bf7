"""docs/generate.md: every flag used in an example exists in that command's --help."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import invoke

DOC = Path(__file__).resolve().parents[2] / "docs" / "generate.md"


def _examples() -> list[tuple[str, set[str]]]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            match = re.match(r"\s*generate (queries|expand|offline)\b(.*)", line)
            if match:
                commands.append(
                    (match.group(1), set(re.findall(r"(--[a-z][a-z-]*)", match.group(2).split("#")[0])))
                )
    return commands


def test_doc_examples_use_only_real_flags():
    examples = _examples()
    assert {name for name, _ in examples} == {"queries", "expand", "offline"}
    helps = {
        name: invoke([name, "--help"], env={"COLUMNS": "200"}).output
        for name in ("queries", "expand", "offline")
    }
    for name, flags in examples:
        missing = [flag for flag in flags if flag not in helps[name]]
        assert not missing, f"generate {name}: {missing} not in --help"
