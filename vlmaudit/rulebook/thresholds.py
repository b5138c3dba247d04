"""Per-concept, per-modality flag thresholds (rules/thresholds.yaml)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmaudit.errors import RulesError
from vlmaudit.rulebook.taxonomy import Taxonomy
from vlmaudit.rulebook.yamlfile import check_mapping, check_unit_float, read_yaml

MODALITIES = ("image", "caption")


@dataclass
class Thresholds:
    """Two float32 arrays in taxonomy concept order: a score >= threshold flags the concept."""

    image: np.ndarray
    caption: np.ndarray

    @classmethod
    def uniform(cls, taxonomy: Taxonomy, value: float) -> "Thresholds":
        n = len(taxonomy.concepts)
        return cls(np.full(n, value, np.float32), np.full(n, value, np.float32))

    def as_dict(self, taxonomy: Taxonomy) -> dict:
        return {cid: {"image": float(i), "caption": float(c)}
                for cid, i, c in zip(taxonomy.concept_ids, self.image, self.caption)}

    def fingerprint(self) -> str:
        return hashlib.sha256(self.image.tobytes() + self.caption.tobytes()).hexdigest()

    def set(self, taxonomy: Taxonomy, target: str, value, path="--threshold", field="") -> None:
        """Set `value` (number or {image, caption}) for 'default', a category id or a concept id."""
        categories = [c.category for c in taxonomy.concepts]
        mask = target_mask(taxonomy.concept_ids, categories, target, path, field or target)
        per_modality = _per_modality(value, path, field or target)
        for modality, v in per_modality.items():
            getattr(self, modality)[mask] = v


def target_mask(concept_ids: list[str], concept_categories: list[str], target: str, path, field: str) -> np.ndarray:
    """Boolean mask over concepts for 'default'/'*', a category id or a concept id."""
    if target in ("default", "*"):
        return np.ones(len(concept_ids), bool)
    if target in concept_categories:
        return np.array([c == target for c in concept_categories])
    if target in concept_ids:
        return np.array([c == target for c in concept_ids])
    raise RulesError(path, field, f"unknown category or concept {target!r}")


def _per_modality(value, path, field) -> dict[str, float]:
    if isinstance(value, dict):
        check_mapping(path, field, value, set(MODALITIES))
        return {m: check_unit_float(path, f"{field}.{m}", v) for m, v in value.items()}
    v = check_unit_float(path, field, value)
    return {m: v for m in MODALITIES}


def load_thresholds(path: Path | None, taxonomy: Taxonomy, default: float = 0.8,
                    base: Thresholds | None = None) -> Thresholds:
    """Thresholds from a YAML file (default, then categories, then concepts) on top of BASE (or a
    uniform DEFAULT); uniform / BASE if no file."""
    result = Thresholds(base.image.copy(), base.caption.copy()) if base else Thresholds.uniform(taxonomy, default)
    if path is None:
        return result
    data = check_mapping(path, "(top)", read_yaml(path) or {}, {"default", "categories", "concepts"})
    if "default" in data:
        result.set(taxonomy, "default", data["default"], path, "default")
    for section, known in (("categories", taxonomy.category_ids), ("concepts", taxonomy.concept_ids)):
        for key, value in check_mapping(path, section, data.get(section) or {}, set(known)).items():
            result.set(taxonomy, key, value, path, f"{section}.{key}")
    return result


def apply_to_report(path: Path, meta: dict, image: np.ndarray, caption: np.ndarray) -> None:
    """Apply a thresholds file to a report's threshold arrays (in place), using the taxonomy stored in
    the report's metadata (report code never needs the rules)."""
    from types import SimpleNamespace

    concepts = tuple(SimpleNamespace(category=c) for c in meta["concept_categories"])
    ids = SimpleNamespace(concepts=concepts, concept_ids=list(meta["concepts"]), category_ids=list(meta["categories"]))
    loaded = load_thresholds(path, ids, base=Thresholds(image.astype(np.float32), caption.astype(np.float32)))
    image[:], caption[:] = loaded.image, loaded.caption


def thresholds_yaml(sections: dict[str, dict[str, dict[str, float]]], header: str = "") -> str:
    """The YAML text of {"categories": {id: {modality: value}}, "concepts": {...}}: the format
    load_thresholds reads (no default: what is not listed keeps the thresholds it is applied to)."""
    import yaml

    body = {name: {key: {m: float(v) for m, v in values.items()} for key, values in entries.items()}
            for name, entries in sections.items() if entries}
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + (yaml.safe_dump(body, sort_keys=False, default_flow_style=None) if body else "{}\n")
