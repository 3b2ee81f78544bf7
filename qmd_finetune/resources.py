"""Paths of the files shipped with the package: JSON Schemas and project data."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    return PACKAGE_DIR / "schemas" / f"{name}.schema.json"


def data_path(name: str) -> Path:
    return PACKAGE_DIR / "data" / name


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


@cache
def validator(name: str) -> Any:
    """A compiled Draft 2020-12 validator for one of the shipped schemas."""
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@cache
def _rust_validator(name: str) -> Any:
    """jsonschema-rs's validator for the schema, or None when the package is missing."""
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - a dependency, but the Python validator suffices
        return None
    return jsonschema_rs.validator_for(load_schema(name))


def is_valid(name: str, instance: Any) -> bool:
    """Whether ``instance`` (JSON data: dicts, lists, str, numbers, bool, None) is valid.

    jsonschema-rs answers in about 3 microseconds where jsonschema takes about 250 for a record.
    It only ever *accepts*: whatever it rejects is asked again of jsonschema, which stays the
    reference (the two differ on NaN, which jsonschema lets through a minimum; on tuples, which
    only jsonschema-rs takes for arrays, and JSON data has none); what it cannot read (a lone
    surrogate, an integer past 64 bits) goes to jsonschema too. ``tests/test_schema_fast.py``
    checks on every reference row, the bad-input rows and mutations of real rows that
    jsonschema-rs never accepts what jsonschema rejects."""
    fast = _rust_validator(name)
    if fast is not None and _accepts(fast, instance):
        return True
    return validator(name).is_valid(instance)


_UNREADABLE = (ValueError, TypeError, OverflowError, RecursionError)
"""What jsonschema-rs raises on data it cannot read (a lone surrogate, an integer past 64 bits)."""


def _accepts(fast: Any, instance: Any) -> bool:
    try:
        return bool(fast.is_valid(instance))
    except _UNREADABLE:
        return False


def first_error(name: str, instance: Any) -> Any:
    """The first error by instance path (jsonschema's, for its messages), or None when valid."""
    if is_valid(name, instance):
        return None
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.path))
    return errors[0] if errors else None
