"""The concept taxonomy: categories, concepts and their prompts, loaded from rules/taxonomy.yaml."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vlmaudit.errors import RulesError
from vlmaudit.rulebook.yamlfile import check_list, check_mapping, check_str, read_yaml

TOP_KEYS = {"version", "prompt_templates", "safe_prompts", "categories", "concepts"}
CATEGORY_KEYS = {"id", "name", "description"}
CONCEPT_KEYS = {"id", "name", "category", "description", "prompts"}


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    description: str


@dataclass(frozen=True)
class Concept:
    id: str
    name: str
    category: str
    description: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    version: str
    categories: tuple[Category, ...]
    concepts: tuple[Concept, ...]
    safe_prompts: tuple[str, ...]
    prompt_templates: tuple[str, ...] = ()

    @property
    def concept_ids(self) -> list[str]:
        return [c.id for c in self.concepts]

    @property
    def category_ids(self) -> list[str]:
        return [c.id for c in self.categories]

    def concept_category_index(self) -> list[int]:
        """For each concept (in order), the position of its category."""
        pos = {c.id: i for i, c in enumerate(self.categories)}
        return [pos[c.category] for c in self.concepts]

    def prompts_for(self, concept: Concept) -> list[str]:
        return list(concept.prompts) + [t.format(name=concept.name) for t in self.prompt_templates]

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def tag(self) -> str:
        """Version plus a short content hash: what the reports call taxonomy_version."""
        return f"{self.version}+{self.fingerprint()[:10]}"


def load_taxonomy(path: Path) -> Taxonomy:
    data = check_mapping(path, "(top)", read_yaml(path), TOP_KEYS, {"version", "safe_prompts", "categories", "concepts"})
    categories = _load_categories(path, data["categories"])
    concepts = _load_concepts(path, data["concepts"], {c.id for c in categories})
    templates = check_list(path, "prompt_templates", data.get("prompt_templates", []), str)
    for i, template in enumerate(templates):
        if "{name}" not in template:
            raise RulesError(path, f"prompt_templates[{i}]", "must contain {name}")
    return Taxonomy(
        version=check_str(path, "version", str(data["version"])),
        categories=categories,
        concepts=concepts,
        safe_prompts=tuple(check_list(path, "safe_prompts", data["safe_prompts"], str, non_empty=True)),
        prompt_templates=tuple(templates),
    )


def _load_categories(path, items) -> tuple[Category, ...]:
    out, seen = [], set()
    for i, item in enumerate(check_list(path, "categories", items, non_empty=True)):
        field = f"categories[{i}]"
        check_mapping(path, field, item, CATEGORY_KEYS, {"id", "name"})
        cid = _unique_id(path, f"{field}.id", item["id"], seen)
        out.append(Category(cid, check_str(path, f"{field}.name", item["name"]), str(item.get("description", ""))))
    return tuple(out)


def _load_concepts(path, items, category_ids: set[str]) -> tuple[Concept, ...]:
    out, seen = [], set()
    for i, item in enumerate(check_list(path, "concepts", items, non_empty=True)):
        field = f"concepts[{i}]"
        check_mapping(path, field, item, CONCEPT_KEYS, {"id", "name", "category", "prompts"})
        cid = _unique_id(path, f"{field}.id", item["id"], seen)
        if item["category"] not in category_ids:
            raise RulesError(path, f"{field}.category", f"unknown category {item['category']!r} (concept {cid!r})")
        prompts = check_list(path, f"{field}.prompts", item["prompts"], str, non_empty=True)
        name = check_str(path, f"{field}.name", item["name"])
        out.append(Concept(cid, name, item["category"], str(item.get("description", "")), tuple(prompts)))
    return tuple(out)


def _unique_id(path, field: str, value, seen: set[str]) -> str:
    value = check_str(path, field, value)
    if value in seen:
        raise RulesError(path, field, f"duplicate id {value!r}")
    seen.add(value)
    return value
