"""Aggregate report rows into dashboard numbers, recomputing every flag from the stored scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlmaudit import flags as F
from vlmaudit.reports import iter_batches, read_report_meta, read_stats, report_files, score_matrix

COLUMNS = ["shard", "status", "image_scores", "caption_scores"]


class Counts:
    """Additive counters over batches (per concept C, per category K)."""

    def __init__(self, n_concepts: int, n_categories: int):
        self.samples = self.flagged = 0
        self.status: dict[str, int] = {}
        self.agreement = np.zeros(4, np.int64)  # both, image only, caption only, neither (of flagged rows)
        self.concept = np.zeros((3, n_concepts), np.int64)  # any, image, caption
        self.category = np.zeros((4, n_categories), np.int64)  # any, both, image only, caption only
        self.shards: dict[str, list[int]] = {}

    def add(self, shards, status, img_flags, cap_flags, masks) -> None:
        self.samples += len(status)
        for value, count in zip(*np.unique(status, return_counts=True)):
            self.status[str(value)] = self.status.get(str(value), 0) + int(count)
        img_any, cap_any = img_flags.any(1), cap_flags.any(1)
        flagged = img_any | cap_any
        self.flagged += int(flagged.sum())
        self.agreement += [(img_any & cap_any).sum(), (img_any & ~cap_any).sum(), (~img_any & cap_any).sum(), 0]
        self.concept += np.stack([(img_flags | cap_flags).sum(0), img_flags.sum(0), cap_flags.sum(0)])
        img_cat, cap_cat = F.category_flags(img_flags, masks), F.category_flags(cap_flags, masks)
        self.category += np.stack([(img_cat | cap_cat).sum(0), (img_cat & cap_cat).sum(0),
                                   (img_cat & ~cap_cat).sum(0), (~img_cat & cap_cat).sum(0)])
        self._add_shards(shards, flagged)

    def _add_shards(self, shards, flagged) -> None:
        names, inverse = np.unique(shards, return_inverse=True)
        rows, hits = np.bincount(inverse), np.bincount(inverse, weights=flagged)
        for name, n, f in zip(names, rows, hits):
            entry = self.shards.setdefault(str(name), [0, 0])
            entry[0] += int(n)
            entry[1] += int(f)


def summarize(report_dir: Path, top: int = 10, thresholds: dict | None = None) -> dict:
    files = report_files(report_dir)
    meta = read_report_meta(files)
    thr = thresholds or meta["thresholds"]
    thr_image, thr_caption = np.asarray(thr["image"], np.float32), np.asarray(thr["caption"], np.float32)
    concept_cats = [meta["categories"].index(c) for c in meta["concept_categories"]]
    masks = F.category_masks(concept_cats, len(meta["categories"]))
    n = len(meta["concepts"])
    counts = Counts(n, len(meta["categories"]))
    for batch in iter_batches(files, COLUMNS):
        img = F.concept_flags(score_matrix(batch.column("image_scores"), n), thr_image)
        cap = F.concept_flags(score_matrix(batch.column("caption_scores"), n), thr_caption)
        status = np.asarray(batch.column("status").to_numpy(zero_copy_only=False), dtype=object)
        shards = np.asarray(batch.column("shard").to_numpy(zero_copy_only=False), dtype=object)
        counts.add(shards, status, img, cap, masks)
    return _summary_dict(meta, counts, read_stats(report_dir), top, files)


def _rate(count, total) -> float:
    return float(count) / total if total else 0.0


def _summary_dict(meta: dict, counts: Counts, stats: dict, top: int, files) -> dict:
    total = counts.samples
    return {
        "overview": _overview(meta, counts, stats, files),
        "categories": _categories(meta, counts, total),
        "top_concepts": _top_concepts(meta, counts, total, top),
        "modality": {"both": int(counts.agreement[0]), "image_only": int(counts.agreement[1]),
                     "caption_only": int(counts.agreement[2]),
                     "agreement": _rate(counts.agreement[0], counts.flagged)},
        "top_shards": _top_shards(counts, top),
        "failed_shards": sorted(name for name, s in stats.items() if s.get("status") == "failed"),
        "truncated_shards": sorted(name for name, s in stats.items() if s.get("status") == "truncated"),
    }


def _overview(meta, counts: Counts, stats: dict, files) -> dict:
    finished = [s for s in stats.values() if s.get("status") != "failed"]
    span = (max(s["finished_at"] for s in finished) - min(s["started_at"] for s in finished)) if finished else 0.0
    failed = counts.samples - counts.status.get("ok", 0)
    return {
        "samples": counts.samples, "failed": failed, "failed_rate": _rate(failed, counts.samples),
        "status": dict(sorted(counts.status.items())), "flagged": counts.flagged,
        "flagged_rate": _rate(counts.flagged, counts.samples), "shards": len(files),
        "model": meta.get("model", {}).get("model"), "backend": meta.get("model", {}).get("backend"),
        "taxonomy_version": meta.get("taxonomy_version"),
        "scan_seconds": round(span, 3), "samples_per_s": round(_rate(counts.samples, span), 2),
    }


def _categories(meta, counts: Counts, total: int) -> list[dict]:
    any_, both, image_only, caption_only = counts.category
    return [
        {"id": cid, "name": name, "flagged": int(any_[k]), "rate": _rate(any_[k], total), "both": int(both[k]),
         "image_only": int(image_only[k]), "caption_only": int(caption_only[k])}
        for k, (cid, name) in enumerate(zip(meta["categories"], meta.get("category_names", meta["categories"])))
    ]


def _top_concepts(meta, counts: Counts, total: int, top: int) -> list[dict]:
    any_, image, caption = counts.concept
    order = [i for i in np.argsort(-any_, kind="stable") if any_[i] > 0][:top]
    names = meta.get("concept_names", meta["concepts"])
    return [
        {"id": meta["concepts"][i], "name": names[i], "category": meta["concept_categories"][i],
         "flagged": int(any_[i]), "rate": _rate(any_[i], total), "image": int(image[i]), "caption": int(caption[i])}
        for i in order
    ]


def _top_shards(counts: Counts, top: int) -> list[dict]:
    rows = [{"shard": name, "samples": n, "flagged": f, "rate": _rate(f, n)} for name, (n, f) in counts.shards.items()]
    return sorted(rows, key=lambda r: (-r["rate"], r["shard"]))[:top]
