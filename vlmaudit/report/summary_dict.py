"""Turn summary counters into the plain dict that the dashboard, JSON and exports all render."""

from __future__ import annotations

import numpy as np

from vlmaudit.report.counts import BINS, Counts, View

SPARK_WIDTH = 48


def _rate(count, total) -> float:
    return float(count) / total if total else 0.0


def build_summary(meta, counts: Counts, stats: dict, top: int, files, view: View, hist_concept) -> dict:
    summary = {
        "overview": _overview(meta, counts, stats, files, view),
        "categories": _categories(meta, counts),
        "top_concepts": _top_concepts(meta, counts, top),
        "modality": {"both": int(counts.agreement[0]), "image_only": int(counts.agreement[1]),
                     "caption_only": int(counts.agreement[2]), "agreement": _rate(counts.agreement[0], counts.flagged)},
        "top_shards": _top_shards(counts, top),
        "shard_rates": _shard_rates(counts),
        "failed_shards": sorted(n for n, s in stats.items() if s.get("status") == "failed"),
        "truncated_shards": sorted(n for n, s in stats.items() if s.get("status") == "truncated"),
        "examples": _examples(meta, counts, files, top, view.examples) if view.examples else {},
    }
    if hist_concept:
        summary["histogram"] = _histogram(meta, counts, hist_concept)
    return summary


def _overview(meta, counts: Counts, stats: dict, files, view: View) -> dict:
    finished = [s for s in stats.values() if s.get("status") != "failed" and "started_at" in s]
    span = (max(s["finished_at"] for s in finished) - min(s["started_at"] for s in finished)) if finished else 0.0
    failed = counts.samples - counts.status.get("ok", 0)
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
    any_, both, image_only, caption_only = counts.category
    names = meta.get("category_names", meta["categories"])
    return [
        {"id": cid, "name": names[k], "flagged": int(any_[k]), "rate": _rate(any_[k], counts.samples),
         "both": int(both[k]), "image_only": int(image_only[k]), "caption_only": int(caption_only[k]),
         "agreement": _rate(both[k], any_[k])}
        for k, cid in enumerate(meta["categories"])
    ]


def _mean(counts: Counts, modality: int, concept: int) -> float | None:
    scored = counts.scored[modality]
    return round(float(counts.sums[modality, concept] / scored), 4) if scored else None


def _p95(hist: np.ndarray) -> float | None:
    """95th percentile (upper bin edge) from a subsampled 1000-bin histogram."""
    total = hist.sum()
    if not total:
        return None
    return round(float((int(np.searchsorted(np.cumsum(hist), 0.95 * total)) + 1) / BINS), 4)


def _top_concepts(meta, counts: Counts, top: int) -> list[dict]:
    any_, image, caption = counts.concept
    order = [i for i in np.argsort(-any_, kind="stable") if any_[i] > 0][:top]
    names = meta.get("concept_names", meta["concepts"])
    rows = []
    for i in order:
        mean_img, mean_cap = (_mean(counts, m, i) for m in (0, 1))
        p95_img, p95_cap = (_p95(counts.hist[m, i]) for m in (0, 1))
        rows.append({"id": meta["concepts"][i], "name": names[i], "category": meta["concept_categories"][i],
                     "flagged": int(any_[i]), "rate": _rate(any_[i], counts.samples), "image": int(image[i]),
                     "caption": int(caption[i]), "mean_image": mean_img, "p95_image": p95_img,
                     "mean_caption": mean_cap, "p95_caption": p95_cap})
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
    fold = lambda h: h.reshape(bins, BINS // bins).sum(1).tolist()  # noqa: E731
    return {"concept": concept, "bins": bins, "image": fold(counts.exact_hist[0]), "caption": fold(counts.exact_hist[1])}


def _examples(meta, counts: Counts, files, top: int, keep: int) -> dict:
    """Example rows for the top concepts: candidates re-read by (shard, sample_index), ranked by
    the concept's best score over the two modalities."""
    import pyarrow.parquet as pq

    order = [i for i in np.argsort(-counts.concept[0], kind="stable") if counts.concept[0][i] > 0][:top]
    by_file = {}
    for i in order:
        for _, shard, index in counts.candidates[i]:
            by_file.setdefault(shard, set()).add(index)
    rows, paths = {}, {f.stem: f for f in files}
    for shard, indices in by_file.items():
        columns = ["sample_index", "key", "url", "caption", "image_scores", "caption_scores"]
        table = pq.read_table(paths[shard], columns=columns, filters=[("sample_index", "in", sorted(indices))])
        rows.update({(shard, row["sample_index"]): row for row in table.to_pylist()})
    return {meta["concepts"][i]: _ranked(i, counts.candidates[i], rows, keep) for i in order}


def _ranked(concept: int, candidates, rows: dict, keep: int) -> list[dict]:
    items = []
    for _, shard, index in candidates:
        row = rows[(shard, index)]
        image = (row["image_scores"] or [None] * (concept + 1))[concept]
        caption = (row["caption_scores"] or [None] * (concept + 1))[concept]
        best, modality = max((image or -1.0, "image"), (caption or -1.0, "caption"))
        items.append({"shard": shard, "key": row["key"], "url": row["url"], "caption": row["caption"],
                      "score": round(best, 4), "modality": modality})
    return sorted(items, key=lambda x: (-x["score"], x["shard"], x["key"]))[:keep]
