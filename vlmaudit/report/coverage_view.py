"""Coverage in a summary (SHARED.md item 3): figures the model never scored become null with
`"scored": false` and an "n/a - not scored by MODEL" label (never a measured-looking 0), and a
model that scores whole categories is shown at category level (one row per category, each sample
once). Renderers call `na` to print them."""

from __future__ import annotations

from vlmaudit.rulebook.coverage import MODALITIES, Coverage

SPLIT = {"image": ("image_only", "both"), "caption": ("caption_only", "both")}


def apply_coverage(summary: dict, cover: Coverage) -> dict:
    ids = [c["id"] for c in summary["categories"]]
    everything = cover.everything or (all(cover.scores(c) for c in ids) and set(cover.modalities) == set(MODALITIES)
                                      and not cover.category_level)
    summary["coverage"] = {**cover.to_json(), "everything": everything, "na": None if everything else cover.na_label()}
    if everything:  # nothing to mark: the summary reads as it always did
        return summary
    for c in summary["categories"]:
        _category(c, cover)
    _modality(summary["modality"], cover)
    keep = _shown_concepts(summary.get("top_concepts", []), cover)
    names = {c["id"]: c["name"] for c in summary["categories"]}
    summary["top_concepts"] = [_concept_row(c, cover, names) for c in summary.get("top_concepts", []) if c["id"] in keep]
    summary["concept_histograms"] = [_histogram(h, cover, names) for h in summary.get("concept_histograms", [])
                                     if h["id"] in keep]
    if summary.get("examples"):
        summary["examples"] = _examples(summary["examples"], keep)
    return summary


def _category(c: dict, cover: Coverage) -> None:
    scored = cover.scores(c["id"])
    c["scored"] = scored
    c["modalities"] = {m: scored and cover.scores(c["id"], m) for m in MODALITIES}
    if not scored:
        c["na"] = cover.na_label()
        for key in ("flagged", "rate", "both", "image_only", "caption_only", "agreement"):
            c[key] = None
        return
    for m in MODALITIES:
        if not c["modalities"][m]:
            for key in SPLIT[m] + ("agreement",):
                c[key] = None


def _modality(m: dict, cover: Coverage) -> None:
    m["scored"] = {name: cover.scores(None, name) for name in MODALITIES}
    for name in MODALITIES:
        if not m["scored"][name]:
            m["na"] = cover.na_label()
            for key in SPLIT[name] + ("agreement",):
                m[key] = None


def _shown_concepts(rows: list[dict], cover: Coverage) -> set[str]:
    """Scored concepts only; at category level, the first concept of each category stands for it."""
    keep, seen = set(), set()
    for c in rows:
        if not cover.scores_concept(c["id"]):
            continue
        if cover.category_level:
            if c["category"] in seen:
                continue
            seen.add(c["category"])
        keep.add(c["id"])
    return keep


def _concept_row(c: dict, cover: Coverage, names: dict) -> dict:
    if cover.category_level:  # its concepts all carry the category's one score: one row, the category's
        c = {**c, "name": f"{names.get(c['category'], c['category'])} (whole category)", "level": "category"}
    if not cover.scores(None, "caption"):
        c.update(caption=None, mean_caption=None, p95_caption=None)
    if not cover.scores(None, "image"):
        c.update(image=None, mean_image=None, p95_image=None)
    return c


def _histogram(h: dict, cover: Coverage, names: dict) -> dict:
    h = dict(h)
    if cover.category_level:
        h["name"] = f"{names.get(h['category'], h['category'])} (whole category)"
    for m in MODALITIES:
        if not cover.scores(None, m):
            h[m], h[f"threshold_{m}"] = None, None
    return h


def _examples(examples: dict, keep: set[str]) -> dict:
    """Only the shown concepts' lists, and each sample once over all of them."""
    out, seen = {}, set()
    for concept, items in examples.items():
        if concept not in keep:
            continue
        mine = [i for i in items if (i["shard"], i["key"]) not in seen]
        seen.update((i["shard"], i["key"]) for i in mine)
        out[concept] = mine
    return out


def na(summary: dict) -> str:
    """The n/a label of this summary's model."""
    return (summary.get("coverage") or {}).get("na") or "n/a - not scored"


def compare_rows(summary: dict, other: dict) -> list[dict]:
    """`report --compare` rows: a side that did not score a category shows null + its n/a label,
    and the delta is null (never a difference against a 0 that was not measured)."""
    theirs = {c["id"]: c for c in other["categories"]}
    rows = []
    for c in summary["categories"]:
        rate, other_rate = c["rate"], theirs.get(c["id"], {}).get("rate")
        row = {"id": c["id"], "name": c["name"], "rate": rate, "other_rate": other_rate,
               "delta": None if rate is None or other_rate is None else rate - other_rate,
               "scored": rate is not None, "other_scored": other_rate is not None}
        if rate is None:
            row["na"] = na(summary)
        if other_rate is None:
            row["other_na"] = na(other) if c["id"] in theirs else "n/a - not in the other report"
        rows.append(row)
    return rows


def coverage_block(cover: Coverage, category_ids: list[str]) -> dict:
    """For JSON outputs without per-category figures (filter's summary.json): what was scored,
    and per category / modality `scored` with null figures and the n/a label where not."""
    label = None if cover.everything else cover.na_label()
    return {**cover.to_json(), "everything": cover.everything, "na": label,
            "per_category": [{"id": c, "scored": cover.scores(c),
                              "modalities": {m: cover.scores(c, m) for m in MODALITIES},
                              "na": None if cover.scores(c) else label} for c in category_ids]}
