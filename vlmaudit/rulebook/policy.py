"""Filtering policies (rules/policies/*.yaml): per concept a threshold, a modality and an action."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmaudit.errors import RulesError
from vlmaudit.rulebook.yamlfile import check_mapping, check_str, check_unit_float, read_yaml

MODALITIES = ("image", "caption", "any", "both")
ACTIONS = ("keep", "review", "drop")  # in increasing severity
RULE_KEYS = {"threshold", "modality", "action"}


def rule_parts(modality: int) -> tuple[bool, bool, bool]:
    """The modality rule, coded once: (looks at the image score, looks at the caption score,
    needs every score it looks at). A rule fires when its scores reach the threshold, all of
    them when it needs both, any of them otherwise; report and filter both build on this."""
    name = MODALITIES[modality]
    return name != "caption", name != "image", name != "any"


@dataclass
class Policy:
    """Arrays in report concept order: threshold (float32), modality and action (index arrays)."""

    name: str
    description: str
    concepts: list[str]
    threshold: np.ndarray
    modality: np.ndarray  # index into MODALITIES
    action: np.ndarray  # index into ACTIONS
    fingerprint: str
    match: int = 2  # action (index into ACTIONS) for known-content matches: review or drop, never keep


def load_policy(path: Path, concepts: list[str], concept_categories: list[str]) -> Policy:
    data = check_mapping(path, "(top)", read_yaml(path) or {},
                         {"description", "default", "categories", "concepts", "match"}, {"default"})
    base = _rule(path, "default", data["default"], required=True)
    category_rules = {k: _rule(path, f"categories.{k}", v)
                      for k, v in _section(path, data, "categories", set(concept_categories)).items()}
    concept_rules = {k: _rule(path, f"concepts.{k}", v) for k, v in _section(path, data, "concepts", set(concepts)).items()}
    merged = [{**base, **category_rules.get(cat, {}), **concept_rules.get(cid, {})}
              for cid, cat in zip(concepts, concept_categories)]
    return Policy(
        name=Path(path).stem, description=str(data.get("description", "")), concepts=list(concepts),
        threshold=np.array([r["threshold"] for r in merged], np.float32),
        modality=np.array([MODALITIES.index(r["modality"]) for r in merged]),
        action=np.array([ACTIONS.index(r["action"]) for r in merged]),
        fingerprint=hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16],
        match=_match_action(path, data.get("match", "drop")),
    )


def _match_action(path, value) -> int:
    """`match: drop|review`: what happens to a sample that matched a hash bank (never keep)."""
    if check_str(path, "match", value) not in ("review", "drop"):
        raise RulesError(path, "match", f"{value!r} is not one of review, drop (a known-content match is never kept)")
    return ACTIONS.index(value)


def _section(path, data, name, known: set[str]) -> dict:
    section = data.get(name) or {}
    check_mapping(path, name, section, known)
    return section


def _rule(path, field, value, required=False) -> dict:
    check_mapping(path, field, value, RULE_KEYS, RULE_KEYS if required else set())
    rule = {}
    if "threshold" in value:
        rule["threshold"] = check_unit_float(path, f"{field}.threshold", value["threshold"])
    for key, allowed in (("modality", MODALITIES), ("action", ACTIONS)):
        if key in value:
            if check_str(path, f"{field}.{key}", value[key]) not in allowed:
                raise RulesError(path, f"{field}.{key}", f"{value[key]!r} is not one of {', '.join(allowed)}")
            rule[key] = value[key]
    return rule
