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
