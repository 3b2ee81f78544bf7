"""resources.is_valid: jsonschema-rs accepts, jsonschema decides what it rejects.

The fast path is only sound if jsonschema-rs never accepts what jsonschema rejects. This checks
the two validators directly on every reference row, on the bad-input corpus's rows and on
mutations of real rows that break each rule of the record schema."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from qmd_finetune.io import read_json_objects
from qmd_finetune.resources import _accepts, _rust_validator, first_error, is_valid, validator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bad_inputs  # noqa: E402

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"


def _reference_rows() -> list[dict]:
    return [row for path in sorted(REFERENCE_DIR.glob("*.jsonl")) for _, row in read_json_objects(path)]


def _mutations(row: dict) -> list[dict]:
    """One variant of ``row`` per rule of the record schema it could break."""
    output = row.get("output")
    pairs = (
        output if isinstance(output, list) and output and isinstance(output[0], list) else [["lex", "a b"]]
    )
    base = {"query": row.get("query") if isinstance(row.get("query"), str) else "a query", "output": pairs}
    variants = [
        base,
        {**base, "query": ""},
        {**base, "query": "two\nlines"},
        {**base, "query": 17},
        {"output": pairs},
        {**base, "output": []},
        {**base, "output": [[pairs[0][0]]]},
        {**base, "output": [[*pairs[0], "extra"]]},
        {**base, "output": [["LEX", pairs[0][1]]]},
        {**base, "output": [[pairs[0][0], ""]]},
        {**base, "output": [[pairs[0][0], "a\rb"]]},
        {**base, "output": "lex: a"},
        {**base, "category": 5},
        {**base, "category": None},
        {**base, "meta": []},
        {**base, "meta": {"source": 3}},
        {**base, "score": 100.5},
        {**base, "score": -1},
        {**base, "score": 87.5, "rating": "Good"},
        {**base, "rating": "Great"},
        {**base, "deductions": ["x", 3]},
        {**base, "flags": None},
        {**base, "split": "dev"},
        {**base, "split": "test"},
    ]
    return [copy.deepcopy(v) for v in variants]


def _instances() -> list[object]:
    instances: list[object] = []
    for n, row in enumerate(_reference_rows()):
        instances.append(row)
        if n % 5 == 0:  # every row's shape is checked; every fifth row's mutations are enough
            instances.extend(_mutations(row))
    for kind in bad_inputs._row_kinds():
        if kind.bad_line is None or kind.name.startswith("deep_"):
            continue
        try:
            instances.append(json.loads(kind.bad_line.decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            continue
    return instances


def test_the_rust_validator_is_installed():
    assert _rust_validator("record") is not None, "jsonschema-rs is a dependency (pyproject.toml)"


def test_jsonschema_rs_never_accepts_what_jsonschema_rejects():
    if not REFERENCE_DIR.is_dir():
        pytest.skip("../shared/data/qmd-reference not present")
    fast, reference = _rust_validator("record"), validator("record")
    instances = _instances()
    assert len(instances) > 15_000  # about 3,400 rows, 24 mutations of every fifth, the corpus
    verdicts = [(_accepts(fast, i), reference.is_valid(i)) for i in instances]
    wrongly_accepted = [i for i, (rs, py) in zip(instances, verdicts) if rs and not py]
    assert wrongly_accepted == []
    # The other way round costs only time: the corpus's two lone surrogates, which jsonschema-rs
    # cannot read and jsonschema's pattern lets through (the reader rejects them before this).
    left_to_jsonschema = [i for i, (rs, py) in zip(instances, verdicts) if py and not rs]
    assert len(left_to_jsonschema) == 2
    assert all("surrogate" not in json.dumps(i) and "\\ud" in json.dumps(i) for i in left_to_jsonschema)
    valid = sum(reference.is_valid(i) for i in instances)
    assert 3_000 < valid < len(instances) - 10_000  # both answers are well represented


def test_nan_score_is_left_to_jsonschema():
    row = {"query": "q", "output": [["lex", "a"]], "score": float("nan")}
    assert not _rust_validator("record").is_valid(row)
    assert is_valid("record", row) == validator("record").is_valid(row)


def test_first_error_names_jsonschemas_first_error_by_path():
    row = {"query": "q", "output": [["lex", "a\nb"]], "rating": "Great"}
    error = first_error("record", row)
    assert list(error.path) == ["output", 0, 1]
    assert first_error("record", {"query": "q", "output": [["lex", "a"]]}) is None
