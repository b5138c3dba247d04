"""What a backend scores (SHARED.md item 3): which categories / concepts, which modalities, and
whether its score is per concept or one figure for a whole category. Recorded in run.json
("coverage") and the report footer; read back by every output, which shows
"n/a - not scored by MODEL" for anything outside it (never 0). No record (older reports):
everything scored."""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("image", "caption")


@dataclass(frozen=True)
class Coverage:
    model: str
    level: str  # "concept" | "category"
    categories: tuple[str, ...]
    concepts: tuple[str, ...]
    modalities: tuple[str, ...]
    everything: bool = False  # no record: an older report, taken as fully scored

    @classmethod
    def full(cls, model: str = "") -> Coverage:
        return cls(model, "concept", (), (), MODALITIES, everything=True)

    @classmethod
    def of(cls, taxonomy, model: str, concepts=None, modalities=MODALITIES, level: str = "concept") -> Coverage:
        """From the concept ids a backend scores (None: all of them)."""
        wanted = set(taxonomy.concept_ids if concepts is None else concepts)
        kept = [c for c in taxonomy.concepts if c.id in wanted]
        categories = [cid for cid in taxonomy.category_ids if any(c.category == cid for c in kept)]
        return cls(str(model), level, tuple(categories), tuple(c.id for c in kept), tuple(modalities))

    @classmethod
    def from_json(cls, d) -> Coverage:
        if not isinstance(d, dict):
            return cls.full()

        def ids(key):
            value = d.get(key)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        modalities = tuple(m for m in ids("modalities") if m in MODALITIES)
        return cls(str(d.get("model") or "the model"), "category" if d.get("level") == "category" else "concept",
                   ids("categories"), ids("concepts"), modalities)

    def to_json(self) -> dict:
        return {"model": self.model, "level": self.level, "categories": list(self.categories),
                "concepts": list(self.concepts), "modalities": list(self.modalities)}

    def scores(self, category_id: str | None = None, modality: str | None = None) -> bool:
        """Whether CATEGORY_ID (None: any) in MODALITY (None: any) was scored."""
        if self.everything:
            return True
        if modality is not None and modality not in self.modalities:
            return False
        return category_id is None or category_id in self.categories

    def scores_concept(self, concept_id: str) -> bool:
        return self.everything or concept_id in self.concepts

    def na_label(self, model: str | None = None) -> str:
        return f"n/a - not scored by {model or self.model}"

    @property
    def category_level(self) -> bool:
        return not self.everything and self.level == "category"


def coverage_of(run: dict | None, meta: dict | None) -> Coverage:
    """The report's coverage: run.json first, then the footer metadata; neither: everything."""
    for source in (run or {}, meta or {}):
        if isinstance(source.get("coverage"), dict):
            return Coverage.from_json(source["coverage"])
    return Coverage.full()


def describe(cover: Coverage) -> str:
    """'sexual, image only' - what the model scores, for error messages."""
    what = ", ".join(cover.categories) or "nothing"
    return f"{what}; {' and '.join(cover.modalities) or 'no modality'}{' only' if len(cover.modalities) == 1 else ''}"


def check_limits(limits: dict, cover: Coverage) -> None:
    """--fail-above on a category the model did not score can never fail: refused, naming it."""
    from vlmaudit.errors import UserError

    unscored = [c for c in limits if not cover.scores(c)]
    if unscored:
        raise UserError(f"--fail-above {', '.join(unscored)}: {cover.na_label()} (it scores {describe(cover)}); "
                        "such a gate could never fail")


NEEDS = {"image": ("image",), "caption": ("caption",), "both": ("image", "caption"), "any": ()}


def check_policy(path, cover: Coverage, concept_categories: dict[str, str]) -> None:
    """A policy rule that names a category / concept the model did not score, or asks for a
    modality it did not score (caption, both), could never fire: refused in one line naming the
    rules. `concept_categories`: {concept id: category id}. Call after load_policy validated PATH."""
    from vlmaudit.errors import UserError
    from vlmaudit.rulebook.yamlfile import read_yaml

    if cover.everything:
        return
    data = read_yaml(path) or {}
    problems = []
    rules = [("default", None, data.get("default") or {})]
    rules += [(f"categories.{k}", k, v or {}) for k, v in (data.get("categories") or {}).items()]
    rules += [(f"concepts.{k}", concept_categories.get(k), v or {}) for k, v in (data.get("concepts") or {}).items()]
    for field, category, rule in rules:
        if field != "default" and not (cover.scores(category) and
                                       (not field.startswith("concepts.") or cover.scores_concept(field[9:]))):
            problems.append(field)
        elif any(m not in cover.modalities for m in NEEDS.get(rule.get("modality"), ())):
            problems.append(f"{field}.modality {rule['modality']}")
    if problems:
        raise UserError(f"policy {path}: {', '.join(problems)}: {cover.na_label()} (it scores {describe(cover)}); "
                        "a rule on it could never fire - use a policy for what the model scores")
