"""Read a YAML rules file and check its fields, naming the file and the field in every error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmaudit.errors import RulesError


MAX_YAML_BYTES = 1 << 20  # the shipped taxonomy is ~20 KB
MAX_YAML_NODES = 200_000  # counted with aliases expanded: an alias bomb expands to billions


def read_yaml(path: Path) -> Any:
    """Parse a YAML file with the safe loader, refusing files over MAX_YAML_BYTES and documents
    whose aliases would expand to more than MAX_YAML_NODES nodes (before constructing anything)."""
    import yaml

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
        text = data.decode("utf-8")
    except OSError as exc:
        raise RulesError(path, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RulesError(path, "(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if len(data) > MAX_YAML_BYTES:
        raise RulesError(path, "(file)", f"over the {MAX_YAML_BYTES}-byte limit for a rules file")
    try:
        return _load_bounded(yaml, text, path)
    except yaml.YAMLError as exc:
        raise RulesError(path, "(file)", f"invalid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError:
        raise RulesError(path, "(file)", "nested too deeply") from None


def _load_bounded(yaml, text: str, path):
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, {}, set())
        if expanded > MAX_YAML_NODES:
            raise RulesError(path, "(file)", f"aliases expand to over {MAX_YAML_NODES} nodes (a YAML alias bomb?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node, sizes: dict, active: set) -> int:
    """Node count with every alias expanded, memoised per node, so shared subtrees are counted
    as often as they are referenced without walking them again; capped at just over the limit."""
    import yaml

    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:  # a recursive structure: its expansion is infinite
        return MAX_YAML_NODES + 1
    total = 1
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        active.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        for child in children:
            total += _expanded_size(child, sizes, active)
            if total > MAX_YAML_NODES:
                break
        active.discard(key)
    sizes[key] = min(total, MAX_YAML_NODES + 1)
    return sizes[key]


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
