"""Aggregate report rows into dashboard numbers, recomputing every flag from the stored scores.

A streaming pass over the Parquet files (row group by row group, files split over forked worker
processes) into additive counters. With the scan's own thresholds, flags and example candidates
come from the small `*_flagged_concepts` / `*_flagged_scores` columns and the full score lists
are read from every 8th row group only (counted across files; mean and p95 are estimated there);
re-thresholding, a policy or a --concept histogram read every score.
"""

from __future__ import annotations

import fnmatch
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from vlmaudit import flags as F
from vlmaudit.report.counts import BINS, CANDIDATES, Counts, View, push_candidate, histogram
from vlmaudit.report.reading import read_report_meta, read_stats, report_files, score_matrix

BASE_COLUMNS = ["shard", "sample_index", "status"]
FLAG_COLUMNS = ["image_flagged_concepts", "caption_flagged_concepts", "image_flagged_scores", "caption_flagged_scores"]
SCORE_COLUMNS = ["image_scores", "caption_scores"]
SUBSAMPLE = 8
PROCESSES = min(2, os.cpu_count() or 1)


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
        pairs = [flag_pairs(batch.column(f"{m}_flagged_concepts"), batch.column(f"{m}_flagged_scores"),
                             concept_ids, view.concepts) for m in ("image", "caption")]
        img, cap = (pairs_matrix(p, batch.num_rows, n) for p in pairs)
        candidates = _best_pairs(*pairs, n)
    else:
        img, cap = _flags(view, image, caption)
        img &= view.concepts[None, :]
        cap &= view.concepts[None, :]
        candidates = _dense_pairs(img, cap, image, caption)
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
        _add_candidates(counts, batch, *candidates)


def flag_pairs(ids, scores, concept_ids: list[str], wanted: np.ndarray):
    """The stored flag lists of one modality -> (rows, concept columns, scores) of the wanted concepts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = pc.list_flatten(ids)
    rows = np.asarray(pc.list_parent_indices(ids), dtype=np.int64)
    cols = np.asarray(pc.index_in(flat, value_set=pa.array(concept_ids)).fill_null(-1), dtype=np.int64)
    values = np.asarray(pc.list_flatten(scores), dtype=np.float64)
    keep = cols >= 0
    keep[keep] = wanted[cols[keep]]
    return rows[keep], cols[keep], values[keep]


def pairs_matrix(pairs, n_rows: int, n_concepts: int) -> np.ndarray:
    out = np.zeros((n_rows, n_concepts), bool)
    out[pairs[0], pairs[1]] = True
    return out


def _best_pairs(image_pairs, caption_pairs, n_concepts: int):
    """Merge both modalities' flagged (row, concept, score) into one best score per pair, in
    row-major order (the order np.nonzero gives on the dense path)."""
    keys = np.concatenate([image_pairs[0] * n_concepts + image_pairs[1], caption_pairs[0] * n_concepts + caption_pairs[1]])
    scores = np.concatenate([image_pairs[2], caption_pairs[2]])
    order = np.lexsort((-scores, keys))
    keys, scores = keys[order], scores[order]
    first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    return keys[first] // n_concepts, keys[first] % n_concepts, scores[first]


def _dense_pairs(img, cap, image, caption):
    rows, cols = np.nonzero(img | cap)
    score = np.maximum(np.where(img[rows, cols], image[rows, cols], -1.0),
                       np.where(cap[rows, cols], caption[rows, cols], -1.0))
    return rows, cols, score


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


def _add_candidates(counts: Counts, batch, rows, cols, score) -> None:
    """Keep the CANDIDATES best-scoring flagged rows per concept (the examples pass re-reads them)."""
    if not len(rows):
        return
    order = np.lexsort((-score, cols))  # by concept, best first
    starts = np.flatnonzero(np.r_[True, cols[order][1:] != cols[order][:-1]])
    shards, indices = batch.column("shard"), batch.column("sample_index")
    for start, end in zip(starts, np.r_[starts[1:], len(order)]):
        heap = counts.candidates[cols[order[start]]]
        for j in order[start:min(end, start + CANDIDATES)]:
            if len(heap) >= CANDIDATES and score[j] <= heap[0][0]:
                break
            push_candidate(heap, (float(score[j]), shards[int(rows[j])].as_py(), indices[int(rows[j])].as_py()))


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
    groups_seen = 0  # sampling counts row groups across files: shards hold only a few each
    for path in files:
        parquet = pq.ParquetFile(path)
        use_flags = not view.needs_all_scores and set(FLAG_COLUMNS) <= set(parquet.schema_arrow.names)
        for group in range(parquet.num_row_groups):
            columns = BASE_COLUMNS + (FLAG_COLUMNS if use_flags else [])
            if not use_flags or groups_seen % SUBSAMPLE == 0:
                columns += SCORE_COLUMNS
            groups_seen += 1
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
    from vlmaudit.report.summary_dict import build_summary

    meta = read_report_meta(report_files(report_dir))
    view = view or default_view(meta)
    if hist_concept:
        view.hist_concept = meta["concepts"].index(hist_concept)
    files = select_files(report_dir, view.shard_glob)
    counts = count(view, files, meta)
    stats = {name: s for name, s in read_stats(report_dir).items()
             if not view.shard_glob or fnmatch.fnmatch(name, view.shard_glob)}
    return build_summary(meta, counts, stats, top, files, view, hist_concept)
