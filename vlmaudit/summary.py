"""Aggregate report rows into dashboard numbers, recomputing every flag from the stored scores.

One streaming pass over the Parquet files (only the needed columns, record batch by batch):
additive counters, 1000-bin score histograms per concept and modality (mean, p95, --concept
histogram), and the best-scoring flagged rows per concept as example candidates.
"""

from __future__ import annotations

import fnmatch
import heapq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmaudit import flags as F
from vlmaudit.reports import iter_batches, read_report_meta, read_stats, report_files, score_matrix

COLUMNS = ["shard", "sample_index", "status", "image_scores", "caption_scores"]
BINS = 1000


@dataclass
class View:
    """What to count: thresholds (or a policy), which concepts, which shards."""

    thr_image: np.ndarray
    thr_caption: np.ndarray
    concepts: np.ndarray  # bool mask of concepts that count
    shard_glob: str | None = None
    policy: object = None
    source: str = "scan"
    examples: int = 3


@dataclass
class Counts:
    n_concepts: int
    n_categories: int
    samples: int = 0
    flagged: int = 0
    status: dict = field(default_factory=dict)
    agreement: np.ndarray = None  # both, image only, caption only
    concept: np.ndarray = None  # [3, C]: any, image, caption
    category: np.ndarray = None  # [4, K]: any, both, image only, caption only
    hist: np.ndarray = None  # [2, C, BINS]
    shards: dict = field(default_factory=dict)
    candidates: list = field(default_factory=list)  # per concept: heap of (score, shard, index, modality)

    def __post_init__(self):
        self.agreement = np.zeros(3, np.int64)
        self.concept = np.zeros((3, self.n_concepts), np.int64)
        self.category = np.zeros((4, self.n_categories), np.int64)
        self.hist = np.zeros((2, self.n_concepts, BINS), np.int64)
        self.candidates = [[] for _ in range(self.n_concepts)]


def histogram(scores: np.ndarray) -> np.ndarray:
    """[C, BINS] counts of the non-NaN scores of each concept."""
    n_concepts = scores.shape[1]
    valid = ~np.isnan(scores[:, 0])
    bins = np.clip((scores[valid] * BINS).astype(np.int64), 0, BINS - 1)
    flat = bins + np.arange(n_concepts)[None, :] * BINS
    return np.bincount(flat.ravel(), minlength=n_concepts * BINS).reshape(n_concepts, BINS)


def _flags(view: View, image, caption):
    """Per-modality concept flags: thresholds, or a policy's rules whose action is not keep."""
    if view.policy is None:
        return F.concept_flags(image, view.thr_image), F.concept_flags(caption, view.thr_caption)
    policy = view.policy
    fired = policy.fired(image, caption) & (policy.action > 0)[None, :]
    mode = policy.modality[None, :]  # 0 image, 1 caption, 2 any, 3 both
    with np.errstate(invalid="ignore"):
        img = fired & (image >= policy.threshold) & (mode != 1)
        cap = fired & (caption >= policy.threshold) & (mode != 0)
    return img, cap


def add_batch(counts: Counts, batch, view: View, masks: np.ndarray) -> None:
    import pyarrow.compute as pc

    n = counts.n_concepts
    image, caption = score_matrix(batch.column("image_scores"), n), score_matrix(batch.column("caption_scores"), n)
    img, cap = _flags(view, image, caption)
    img &= view.concepts[None, :]
    cap &= view.concepts[None, :]
    counts.samples += batch.num_rows
    for item in pc.value_counts(batch.column("status")).to_pylist():
        counts.status[item["values"]] = counts.status.get(item["values"], 0) + item["counts"]
    img_any, cap_any = img.any(1), cap.any(1)
    flagged = img_any | cap_any
    counts.flagged += int(flagged.sum())
    counts.agreement += [(img_any & cap_any).sum(), (img_any & ~cap_any).sum(), (~img_any & cap_any).sum()]
    counts.concept += np.stack([(img | cap).sum(0), img.sum(0), cap.sum(0)])
    img_cat, cap_cat = F.category_flags(img, masks), F.category_flags(cap, masks)
    counts.category += np.stack([(img_cat | cap_cat).sum(0), (img_cat & cap_cat).sum(0),
                                 (img_cat & ~cap_cat).sum(0), (~img_cat & cap_cat).sum(0)])
    counts.hist[0] += histogram(image)
    counts.hist[1] += histogram(caption)
    _add_shards(counts, batch.column("shard"), flagged)
    if view.examples:
        _add_candidates(counts, batch, image, caption, img, cap, view.examples)


def _add_shards(counts: Counts, shard_column, flagged) -> None:
    encoded = shard_column.dictionary_encode()
    codes = np.asarray(encoded.indices)
    rows = np.bincount(codes, minlength=len(encoded.dictionary))
    hits = np.bincount(codes, weights=flagged, minlength=len(encoded.dictionary))
    for name, n, f in zip(encoded.dictionary.to_pylist(), rows, hits):
        entry = counts.shards.setdefault(name, [0, 0])
        entry[0] += int(n)
        entry[1] += int(f)


def _add_candidates(counts: Counts, batch, image, caption, img, cap, keep: int) -> None:
    shards, indices = None, None
    best = np.where(img, image, -1.0)
    best_cap = np.where(cap, caption, -1.0)
    for c in np.nonzero((img | cap).any(0))[0]:
        score = np.maximum(best[:, c], best_cap[:, c])
        for row in np.argsort(-score)[:keep]:
            if score[row] < 0:
                break
            if shards is None:
                shards, indices = batch.column("shard").to_pylist(), batch.column("sample_index").to_pylist()
            item = (float(score[row]), shards[row], indices[row], "image" if best[row, c] >= best_cap[row, c] else "caption")
            heap = counts.candidates[c]
            (heapq.heappush if len(heap) < keep else heapq.heappushpop)(heap, item)


def select_files(report_dir: Path, shard_glob: str | None) -> list[Path]:
    files = report_files(report_dir)
    if shard_glob:
        files = [f for f in files if fnmatch.fnmatch(f.stem, shard_glob)]
        if not files:
            from vlmaudit.errors import UserError

            raise UserError(f"--shard {shard_glob!r}: no shard report matches")
    return files


def count(report_dir: Path, view: View, files: list[Path], meta: dict) -> Counts:
    concept_cats = [meta["categories"].index(c) for c in meta["concept_categories"]]
    masks = F.category_masks(concept_cats, len(meta["categories"]))
    counts = Counts(len(meta["concepts"]), len(meta["categories"]))
    for batch in iter_batches(files, COLUMNS):
        add_batch(counts, batch, view, masks)
    return counts


def default_view(meta: dict, examples: int = 3) -> View:
    thr = meta["thresholds"]
    return View(np.asarray(thr["image"], np.float32), np.asarray(thr["caption"], np.float32),
                np.ones(len(meta["concepts"]), bool), examples=examples)


def summarize(report_dir: Path, top: int = 10, view: View | None = None, hist_concept: str | None = None) -> dict:
    from vlmaudit.summary_dict import build_summary

    all_files = report_files(report_dir)
    meta = read_report_meta(all_files)
    view = view or default_view(meta)
    files = select_files(report_dir, view.shard_glob)
    counts = count(report_dir, view, files, meta)
    stats = {name: s for name, s in read_stats(report_dir).items()
             if not view.shard_glob or fnmatch.fnmatch(name, view.shard_glob)}
    return build_summary(meta, counts, stats, top, files, view, hist_concept)
