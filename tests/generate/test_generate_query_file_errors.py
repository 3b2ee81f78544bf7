"""A broken line in a queries file is an error naming file and line, never a dropped query."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmd_finetune.generate.expand import read_queries


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"query": "auth', "invalid JSON"),
        ('{"category": "tech"}', "no query string"),
        ('{"query": "  "}', "no query string"),
    ],
)
def test_bad_query_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"query": "docker networking"}\n# comment\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"queries.jsonl:3: {reason}"):
        read_queries(path)


def test_text_and_json_lines_are_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_text('auth config\n\n{"query": "git rebase", "category": "technology"}\nauth config\n')
    assert [(q.query, q.category, q.line) for q in read_queries(path)] == [
        ("auth config", None, 1),
        ("git rebase", "technology", 3),
    ]
