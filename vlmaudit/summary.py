"""Aggregate report rows into dashboard numbers, recomputing every flag from the stored scores.

A streaming pass over the Parquet files (row group by row group, files split over forked worker
processes) into additive counters. With the scan's own thresholds the flags come from the small
`*_flagged_concepts` columns and the score lists are read from every 8th row group only (mean and
p95 are estimated there); re-thresholding, a policy or a --concept histogram read every score.
"""

from __future__ import annotations

import fnmatch
import os
import heapq
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmaudit import flags as F
from vlmaudit.reports import read_report_meta, read_stats, report_files, score_matrix

BASE_COLUMNS = ["shard", "sample_index", "status"]
FLAG_COLUMNS = ["image_flagged_concepts", "caption_flagged_concepts"]
SCORE_COLUMNS = ["image_scores", "caption_scores"]
BINS = 1000
SUBSAMPLE = 8
CANDIDATES = 8  # per concept; the examples pass re-reads only the top concepts' candidates
PROCESSES = min(2, os.cpu_count() or 1)


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
    hist_concept: int | None = None

    @property
    def needs_all_scores(self) -> bool:
        return self.policy is not None or self.source != "scan" or self.hist_concept is not None


@dataclass
class Counts:
    n_concepts: int
    n_categories: int
    samples: int = 0
    flagged: int = 0
    status: dict = field(default_factory=dict)
    shards: dict = field(default_factory=dict)

    def __post_init__(self):
        self.agreement = np.zeros(3, np.int64)  # both, image only, caption only
        self.concept = np.zeros((3, self.n_concepts), np.int64)  # any, image, caption
        self.category = np.zeros((4, self.n_categories), np.int64)  # any, both, image only, caption only
        self.sums = np.zeros((2, self.n_concepts), np.float64)  # image, caption score sums
        self.scored = np.zeros(2, np.int64)  # rows with image / caption scores
        self.hist = np.zeros((2, self.n_concepts, BINS), np.int64)  # subsampled
        self.exact_hist = np.zeros((2, BINS), np.int64)  # the --concept, all rows
        self.candidates = [[] for _ in range(self.n_concepts)]  # heaps of (score, shard, sample_index)

    def merge(self, other: "Counts") -> None:
        self.samples += other.samples
        self.flagged += other.flagged
        for name in ("agreement", "concept", "category", "sums", "scored", "hist", "exact_hist"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.status.items():
            self.status[key] = self.status.get(key, 0) + value
        for key, (n, f) in other.shards.items():
            entry = self.shards.setdefault(key, [0, 0])
            entry[0] += n
            entry[1] += f
        for mine, theirs in zip(self.candidates, other.candidates):
            for item in theirs:
                _push_candidate(mine, item)


def _push_candidate(heap: list, item: tuple) -> None:
    """Keep the CANDIDATES highest-scoring items."""
    (heapq.heappush if len(heap) < CANDIDATES else heapq.heappushpop)(heap, item)


def histogram(scores: np.ndarray) -> np.ndarray:
    """[C, BINS] counts of the scores of each concept (rows with NaN must be removed first)."""
    n_concepts = scores.shape[1]
    bins = np.minimum((scores * BINS).astype(np.int32), BINS - 1)
    bins += np.arange(n_concepts, dtype=np.int32)[None, :] * BINS
    return np.bincount(bins.ravel(), minlength=n_concepts * BINS).reshape(n_concepts, BINS)


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


def add_batch(counts: Counts, batch, view: View, masks: np.ndarray, concept_ids: list[str]) -> None:
    n = counts.n_concepts
    image = caption = None
    if "image_scores" in batch.schema.names:
        image, caption = score_matrix(batch.column("image_scores"), n), score_matrix(batch.column("caption_scores"), n)
    if "image_flagged_concepts" in batch.schema.names:
        img, cap = (flag_matrix(batch.column(c), concept_ids) for c in FLAG_COLUMNS)
    else:
        img, cap = _flags(view, image, caption)
    if not view.concepts.all():
        img &= view.concepts[None, :]
        cap &= view.concepts[None, :]
    counts.samples += batch.num_rows
    _add_status(counts, batch.column("status"))
    img_any, cap_any = img.any(1), cap.any(1)
    flagged = img_any | cap_any
    counts.flagged += int(flagged.sum())
    counts.agreement += [(img_any & cap_any).sum(), (img_any & ~cap_any).sum(), (~img_any & cap_any).sum()]
    counts.concept += np.stack([np.count_nonzero(img | cap, 0), np.count_nonzero(img, 0), np.count_nonzero(cap, 0)])
    img_cat, cap_cat = F.category_flags(img, masks), F.category_flags(cap, masks)
    counts.category += np.stack([(img_cat | cap_cat).sum(0), (img_cat & cap_cat).sum(0),
                                 (img_cat & ~cap_cat).sum(0), (~img_cat & cap_cat).sum(0)])
    if image is not None:
        for m, scores in enumerate((image, caption)):
            _add_distribution(counts, m, scores, view.hist_concept)
    _add_shards(counts, batch.column("shard"), flagged)
    if view.examples:
        _add_candidates(counts, batch, img, cap, image, caption)


def flag_matrix(column, concept_ids: list[str]) -> np.ndarray:
    """list<string> of flagged concept ids -> bool [n, C]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.zeros((len(column), len(concept_ids)), bool)
    flat = pc.list_flatten(column)
    if len(flat):
        rows = np.asarray(pc.list_parent_indices(column))
        cols = np.asarray(pc.index_in(flat, value_set=pa.array(concept_ids)).fill_null(-1))
        keep = cols >= 0
        out[rows[keep], cols[keep]] = True
    return out


def _add_status(counts: Counts, column) -> None:
    import pyarrow.compute as pc

    for item in pc.value_counts(column).to_pylist():
        counts.status[item["values"]] = counts.status.get(item["values"], 0) + item["counts"]


def _add_distribution(counts: Counts, modality: int, scores: np.ndarray, hist_concept: int | None) -> None:
    valid = scores if not np.isnan(scores[:, 0]).any() else scores[~np.isnan(scores[:, 0])]
    counts.scored[modality] += len(valid)
    counts.sums[modality] += valid.sum(0)  # float32 per batch (pairwise), float64 across batches
    counts.hist[modality] += histogram(valid[::SUBSAMPLE])
    if hist_concept is not None:
        column = np.minimum((valid[:, hist_concept] * BINS).astype(np.int32), BINS - 1)
        counts.exact_hist[modality] += np.bincount(column, minlength=BINS)


def _add_shards(counts: Counts, shard_column, flagged) -> None:
    encoded = shard_column.dictionary_encode()
    codes = np.asarray(encoded.indices)
    rows = np.bincount(codes, minlength=len(encoded.dictionary))
    hits = np.bincount(codes, weights=flagged, minlength=len(encoded.dictionary))
    for name, n, f in zip(encoded.dictionary.to_pylist(), rows, hits):
        entry = counts.shards.setdefault(name, [0, 0])
        entry[0] += int(n)
        entry[1] += int(f)


def _add_candidates(counts: Counts, batch, img, cap, image, caption) -> None:
    """Remember up to CANDIDATES flagged rows per concept, best score first where scores were
    read (-1 where not); the examples pass re-reads their scores and ranks them."""
    rows, cols = np.nonzero(img | cap)
    if not len(rows):
        return
    if image is None:
        score = np.full(len(rows), -1.0)
    else:
        score = np.maximum(np.where(img[rows, cols], image[rows, cols], -1.0),
                           np.where(cap[rows, cols], caption[rows, cols], -1.0))
    order = np.lexsort((-score, cols))  # by concept, best first
    starts = np.flatnonzero(np.r_[True, cols[order][1:] != cols[order][:-1]])
    shards, indices = batch.column("shard"), batch.column("sample_index")
    for start, end in zip(starts, np.r_[starts[1:], len(order)]):
        heap = counts.candidates[cols[order[start]]]
        for j in order[start:min(end, start + CANDIDATES)]:
            if len(heap) >= CANDIDATES and score[j] <= heap[0][0]:
                break
            _push_candidate(heap, (float(score[j]), shards[int(rows[j])].as_py(), indices[int(rows[j])].as_py()))


def select_files(report_dir: Path, shard_glob: str | None) -> list[Path]:
    files = report_files(report_dir)
    if shard_glob:
        files = [f for f in files if fnmatch.fnmatch(f.stem, shard_glob)]
        if not files:
            from vlmaudit.errors import UserError

            raise UserError(f"--shard {shard_glob!r}: no shard report matches")
    return files


def count_files(files: list[Path], view: View, meta: dict) -> Counts:
    import pyarrow.parquet as pq

    concept_cats = [meta["categories"].index(c) for c in meta["concept_categories"]]
    masks = F.category_masks(concept_cats, len(meta["categories"]))
    counts = Counts(len(meta["concepts"]), len(meta["categories"]))
    for path in files:
        parquet = pq.ParquetFile(path)
        use_flags = not view.needs_all_scores and FLAG_COLUMNS[0] in parquet.schema_arrow.names
        for group in range(parquet.num_row_groups):
            columns = BASE_COLUMNS + (FLAG_COLUMNS if use_flags else [])
            if not use_flags or group % SUBSAMPLE == 0:
                columns += SCORE_COLUMNS
            table = parquet.read_row_group(group, columns=columns, use_threads=False)
            for batch in table.to_batches(max_chunksize=131072):
                add_batch(counts, batch, view, masks, meta["concepts"])
    return counts


def count(view: View, files: list[Path], meta: dict) -> Counts:
    """Split the files over PROCESSES forked workers (decoding and numpy scale with cores there,
    not with threads) and merge their additive counters."""
    parts = [files[i::PROCESSES] for i in range(PROCESSES) if files[i::PROCESSES]]
    if len(parts) == 1:
        return count_files(files, view, meta)
    import multiprocessing

    with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(count_files, parts, [view] * len(parts), [meta] * len(parts)))
    total = results[0]
    for other in results[1:]:
        total.merge(other)
    return total


def default_view(meta: dict, examples: int = 3) -> View:
    thr = meta["thresholds"]
    return View(np.asarray(thr["image"], np.float32), np.asarray(thr["caption"], np.float32),
                np.ones(len(meta["concepts"]), bool), examples=examples)


def summarize(report_dir: Path, top: int = 10, view: View | None = None, hist_concept: str | None = None) -> dict:
    from vlmaudit.summary_dict import build_summary

    meta = read_report_meta(report_files(report_dir))
    view = view or default_view(meta)
    if hist_concept:
        view.hist_concept = meta["concepts"].index(hist_concept)
    files = select_files(report_dir, view.shard_glob)
    counts = count(view, files, meta)
    stats = {name: s for name, s in read_stats(report_dir).items()
             if not view.shard_glob or fnmatch.fnmatch(name, view.shard_glob)}
    return build_summary(meta, counts, stats, top, files, view, hist_concept)
