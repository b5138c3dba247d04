"""Read a YAML rules file and check its fields, naming the file and the field in every error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmaudit.errors import RulesError


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(path, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(path, "(file)", f"invalid YAML: {' '.join(str(exc).split())}") from exc


def check_mapping(path, field: str, value, allowed: set[str], required: set[str] = frozenset()) -> dict:
    """Fail on a non-mapping, a missing required key or an unknown key."""
    if not isinstance(value, dict):
        raise RulesError(path, field, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise RulesError(path, f"{field}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required - set(value)):
        raise RulesError(path, f"{field}.{key}", "missing")
    return value


def check_list(path, field: str, value, item_type=None, non_empty: bool = False) -> list:
    if not isinstance(value, list):
        raise RulesError(path, field, f"expected a list, got {type(value).__name__}")
    if non_empty and not value:
        raise RulesError(path, field, "must not be empty")
    for i, item in enumerate(value):
        if item_type is not None and not isinstance(item, item_type):
            raise RulesError(path, f"{field}[{i}]", f"expected {item_type.__name__}, got {type(item).__name__}")
    return value


def check_str(path, field: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RulesError(path, field, "expected a non-empty string")
    return value


def check_unit_float(path, field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise RulesError(path, field, f"expected a number between 0 and 1, got {value!r}")
    return float(value)
