"""Locate the rules directory (shipped or --rules DIR) and load what it holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmaudit.errors import UserError
from vlmaudit.rulebook.taxonomy import Taxonomy, load_taxonomy
from vlmaudit.rulebook.thresholds import Thresholds, load_thresholds


SINGULAR = {"policies": "policy", "prompts": "prompt"}


def shipped_rules_dir() -> Path:
    """rules/ as installed inside the package (vlmaudit/rules in the wheel), or at the top of a
    source checkout (editable installs and running from the tree)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "rules", package.parent / "rules"):
        if (candidate / "taxonomy.yaml").is_file():
            return candidate
    return package / "rules"


@dataclass
class Rules:
    directory: Path
    taxonomy: Taxonomy
    thresholds: Thresholds


def find_rule_file(kind: str, name_or_path: str, rules_dir: Path | None = None) -> Path:
    """A policy/prompt file: an existing path, or NAME in DIR/kind/ then in the shipped rules."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
        raise UserError(f"{name_or_path}: no such file")
    for base in filter(None, (rules_dir, shipped_rules_dir())):
        path = Path(base) / kind / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = sorted(p.stem for p in (shipped_rules_dir() / kind).glob("*.yaml"))
    raise UserError(f"no {SINGULAR.get(kind, kind)} named {name_or_path!r} (shipped: {', '.join(known)}); or give a .yaml path")


def load_rules(directory: Path | None = None, thresholds_file: Path | None = None) -> Rules:
    """The rules in DIRECTORY (default: shipped); `thresholds_file` (e.g. from `vlmaudit calibrate`)
    overrides the directory's thresholds where it sets them."""
    directory = Path(directory) if directory else shipped_rules_dir()
    if not directory.is_dir():
        raise UserError(f"--rules {directory}: not a directory")
    taxonomy_path = directory / "taxonomy.yaml"
    if not taxonomy_path.is_file():
        raise UserError(f"--rules {directory}: no taxonomy.yaml in it")
    taxonomy = load_taxonomy(taxonomy_path)
    threshold_path = directory / "thresholds.yaml"
    thresholds = load_thresholds(threshold_path if threshold_path.is_file() else None, taxonomy)
    if thresholds_file:
        thresholds = load_thresholds(Path(thresholds_file), taxonomy, base=thresholds)
    return Rules(directory, taxonomy, thresholds)
