"""Turn summary counters into the plain dict that the dashboard, JSON and exports all render."""

from __future__ import annotations

import numpy as np

from vlmaudit.report.counts import BINS, Counts, View, p95
from vlmaudit.schema import SampleStatus, ShardStatus

SPARK_WIDTH = 48


def _rate(count, total) -> float:
    return float(count) / total if total else 0.0


def build_summary(meta, counts: Counts, stats: dict, top: int, files, view: View, hist_concept, examples: dict) -> dict:
    summary = {
        "overview": _overview(meta, counts, stats, files, view),
        "categories": _categories(meta, counts),
        "top_concepts": _top_concepts(meta, counts, top),
        "modality": {"both": counts.both, "image_only": counts.image_only, "caption_only": counts.caption_only,
                     "agreement": _rate(counts.both, counts.flagged)},
        "top_shards": _top_shards(counts, top),
        "shard_rates": _shard_rates(counts),
        "failed_shards": sorted(n for n, s in stats.items() if s.get("status") == ShardStatus.FAILED),
        "truncated_shards": sorted(n for n, s in stats.items() if s.get("status") == ShardStatus.TRUNCATED),
        "examples": _examples(meta, counts, examples, top, view) if view.examples else {},
    }
    if hist_concept:
        summary["histogram"] = _histogram(meta, counts, hist_concept)
    summary["concept_histograms"] = _concept_histograms(meta, counts, view, top)
    return summary


def _overview(meta, counts: Counts, stats: dict, files, view: View) -> dict:
    finished = [s for s in stats.values() if s.get("status") != ShardStatus.FAILED and "started_at" in s]
    span = (max(s["finished_at"] for s in finished) - min(s["started_at"] for s in finished)) if finished else 0.0
    failed = counts.samples - counts.status.get(SampleStatus.OK, 0)
    return {
        "samples": counts.samples, "failed": failed, "failed_rate": _rate(failed, counts.samples),
        "status": dict(sorted(counts.status.items())), "flagged": counts.flagged,
        "flagged_rate": _rate(counts.flagged, counts.samples), "shards": len(files),
        "model": meta.get("model", {}).get("model"), "backend": meta.get("model", {}).get("backend"),
        "taxonomy_version": meta.get("taxonomy_version"), "thresholds": _thresholds(view),
        "scan_seconds": round(span, 3), "samples_per_s": round(_rate(counts.samples, span), 2),
        "judged": sum(s.get("judged", 0) for s in stats.values()) if any("judged" in s for s in stats.values()) else None,
    }


def _thresholds(view: View) -> dict:
    if view.policy is not None:
        return {"source": f"policy:{view.policy.name}"}
    values = np.concatenate([view.thr_image, view.thr_caption])
    return {"source": view.source, "min": float(values.min()), "max": float(values.max()),
            "median": float(np.median(values))}


def _categories(meta, counts: Counts) -> list[dict]:
    cat = counts.category
    names = meta.get("category_names", meta["categories"])
    return [
        {"id": cid, "name": names[k], "flagged": int(cat.any[k]), "rate": _rate(cat.any[k], counts.samples),
         "both": int(cat.both[k]), "image_only": int(cat.image_only[k]), "caption_only": int(cat.caption_only[k]),
         "agreement": _rate(cat.both[k], cat.any[k])}
        for k, cid in enumerate(meta["categories"])
    ]


def _top_concepts(meta, counts: Counts, top: int) -> list[dict]:
    names = meta.get("concept_names", meta["concepts"])
    rows = []
    for i in counts.top_concepts(top):
        d, any_ = counts.details[i], counts.concept.any[i]
        rows.append({"id": meta["concepts"][i], "name": names[i], "category": meta["concept_categories"][i],
                     "flagged": int(any_), "rate": _rate(any_, counts.samples), "image": int(counts.concept.image[i]),
                     "caption": int(counts.concept.caption[i]), "mean_image": d.mean_image, "p95_image": p95(d.hist_image),
                     "mean_caption": d.mean_caption, "p95_caption": p95(d.hist_caption)})
    return rows


def _top_shards(counts: Counts, top: int) -> list[dict]:
    rows = [{"shard": name, "samples": n, "flagged": f, "rate": _rate(f, n)} for name, (n, f) in counts.shards.items()]
    return sorted(rows, key=lambda r: (-r["rate"], r["shard"]))[:top]


def _shard_rates(counts: Counts) -> list[float]:
    """Flagged rate across shards in name order, averaged into at most SPARK_WIDTH buckets."""
    names = sorted(counts.shards)
    if not names:
        return []
    buckets = np.array_split(np.arange(len(names)), min(SPARK_WIDTH, len(names)))
    out = []
    for bucket in buckets:
        n = sum(counts.shards[names[i]][0] for i in bucket)
        out.append(_rate(sum(counts.shards[names[i]][1] for i in bucket), n))
    return out


def _histogram(meta, counts: Counts, concept: str, bins: int = 20) -> dict:
    fold = lambda h: [int(n) for n in h.reshape(bins, BINS // bins).sum(1)]  # noqa: E731
    detail = counts.details[meta["concepts"].index(concept)]
    return {"concept": concept, "bins": bins, "image": fold(detail.hist_image), "caption": fold(detail.hist_caption)}


def _concept_histograms(meta, counts: Counts, view: View, top: int, bins: int = 20) -> list[dict]:
    """The top concepts' score distributions (20 bins over [0, 1]) and their thresholds, for charts."""
    fold = lambda h: [int(n) for n in h.reshape(bins, BINS // bins).sum(1)]  # noqa: E731
    names = meta.get("concept_names", meta["concepts"])
    return [{"id": meta["concepts"][i], "name": names[i], "category": meta["concept_categories"][i], "bins": bins,
             "image": fold(counts.details[i].hist_image), "caption": fold(counts.details[i].hist_caption),
             "threshold_image": round(float(view.thr_image[i]), 6),
             "threshold_caption": round(float(view.thr_caption[i]), 6)}
            for i in counts.top_concepts(top) if i in counts.details]


def _examples(meta, counts: Counts, rows: dict, top: int, view: View) -> dict:
    """Example rows for the top concepts: the candidates (re-read by the engine), ranked by the
    concept's best score over the two modalities."""
    return {meta["concepts"][i]: _ranked(i, counts.candidates.get(i, []), rows, view.examples, view)
            for i in counts.top_concepts(top)}


def fired(concept: int, image, caption, view: View | None) -> str:
    """image, caption or both: which modality's score reached the concept's threshold (a policy's
    own rules may flag below them: then the higher-scoring modality)."""
    hits = [] if view is None else [name for name, score, thr in (("image", image, view.thr_image),
                                                                   ("caption", caption, view.thr_caption))
                                    if score is not None and score >= thr[concept]]
    if len(hits) == 2:
        return "both"
    return hits[0] if hits else max((image or -1.0, "image"), (caption or -1.0, "caption"))[1]


def _ranked(concept: int, candidates, rows: dict, keep: int, view: View | None = None) -> list[dict]:
    items = []
    for shard, index in candidates:
        row = rows.get((shard, index))
        if row is None:  # not found again (a shard column that differs from its file name)
            continue
        image = (row["image_scores"] or [None] * (concept + 1))[concept]
        caption = (row["caption_scores"] or [None] * (concept + 1))[concept]
        best, modality = max((image or -1.0, "image"), (caption or -1.0, "caption"))
        items.append({"shard": shard, "key": row["key"], "url": row["url"], "caption": row["caption"],
                      "score": round(best, 4), "modality": modality, "fired": fired(concept, image, caption, view)})
    return sorted(items, key=lambda x: (-x["score"], x["shard"], x["key"]))[:keep]
