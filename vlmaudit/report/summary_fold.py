"""Fold the per-shard summaries of many report files, in worker processes above POOL_MIN_FILES
files (every core: parsing and checking JSON is CPU work), each worker reading its share of the
files once and returning one merged partial result.

Per file: its stats (the row count the summary must agree with), the digest of its Parquet
footer's bytes (the summary must have been made from this very footer), its summary (checked,
folded, forgotten); later, only when asked, its histograms (the top concepts' blocks, or every
block for a re-threshold).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from vlmaudit.report.counts import BINS, CANDIDATES, EDGES

POOL_MIN_FILES = 2000  # below this, one process (starting workers costs about a second)
CHUNKS_PER_WORKER = 4


@dataclass
class ShardReader:
    """What a worker needs to read and check one file's summary parts (picklable)."""

    meta: dict
    expect: dict  # check()'s expect: taxonomy and meta digests

    def stats(self, path) -> dict:
        from vlmaudit.report import reading

        where = sibling(path, ".stats.json")
        return reading.check_stats(where, reading.read_json_file(where))

    def summary(self, path, rows) -> dict:
        from vlmaudit.report.engine import stem
        from vlmaudit.report.reading import raw_footer_digest
        from vlmaudit.report.shard_summary import MAX_SUMMARY_BYTES, check

        where = sibling(path, ".summary.json")
        expect = dict(self.expect, footer=raw_footer_digest(path), rows=rows, shard=stem(path))
        return check(read_json(where, MAX_SUMMARY_BYTES), self.meta, where, expect)

    def hist(self, path, sha256: str):
        """The whole hist.bin (a re-threshold reads every block), checked against its digest."""
        import hashlib

        from vlmaudit.report.reading import DamagedReport, read_limited
        from vlmaudit.report.shard_hists import MAX_HIST_BYTES, HistFile

        where = sibling(path, ".hist.bin")
        data = read_limited(where, MAX_HIST_BYTES)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DamagedReport(f"{where}: does not match its summary (digest differs)")
        return HistFile(data, where, len(self.meta["concepts"]), len(self.meta["categories"]))

    def hist_blocks(self, path, hist: dict, handle):
        """A HistFile reading only the blocks asked for from `handle` (an open hist.bin), after
        checking its size, header and block table against the summary."""
        import hashlib

        from vlmaudit.report.reading import DamagedReport
        from vlmaudit.report.shard_hists import HistFile, header_size

        where = sibling(path, ".hist.bin")
        n_c, n_k = len(self.meta["concepts"]), len(self.meta["categories"])
        head = handle.read(header_size(n_c, n_k))
        if hashlib.sha256(head).hexdigest() != hist["index_sha256"]:
            raise DamagedReport(f"{where}: does not match its summary (digest differs)")
        if handle.seek(0, 2) != hist["bytes"]:
            raise DamagedReport(f"{where}: does not match its summary (size differs)")

        def read(offset: int, length: int) -> bytes:
            handle.seek(offset)
            return handle.read(length)

        return HistFile(head, where, n_c, n_k, hist["bytes"], read)

    def open_hist(self, path):
        from vlmaudit.report.reading import DamagedReport
        from vlmaudit.storage.location import open_input

        where = sibling(path, ".hist.bin")
        try:
            return open_input(where)
        except OSError as exc:
            raise DamagedReport(f"{where}: cannot read ({exc.strerror or exc})") from None


def sibling(path, suffix: str):
    """NAME.parquet's NAME{suffix}, local Path or URL string alike."""
    if isinstance(path, str):
        return path[: -len(".parquet")] + suffix
    return path.with_name(path.name[: -len(".parquet")] + suffix)


def read_json(where, limit: int):
    """A JSON file up to `limit` bytes (orjson: strict JSON, no NaN literals, 64-bit integers)."""
    import orjson

    from vlmaudit.report.reading import DamagedReport, read_limited

    try:
        return orjson.loads(read_limited(where, limit))
    except (ValueError, RecursionError) as exc:
        raise DamagedReport(f"{where}: not valid JSON ({str(exc)[:200]})") from None


# --- the three folds (each runs on a share of the files) -------------------------------------------

def fold_summaries(reader: ShardReader, paths: list) -> tuple:
    """(Merger, [(the summary's hist field, its rows)] per path, {shard name: stats})."""
    from vlmaudit.report.engine import stem
    from vlmaudit.report.shard_summary import Merger

    merger, kept, stats = Merger(reader.meta), [], {}
    for path in paths:
        shard_stats = reader.stats(path)
        summary = reader.summary(path, shard_stats.get("rows"))
        merger.add(summary)
        kept.append((summary["hist"], summary["rows"]))
        stats[stem(path)] = shard_stats
    return merger, kept, stats


def fold_concept_hists(reader: ShardReader, items: list, concepts: list[int]) -> dict:
    """concept -> summed [image, caption] histograms over (path, summary's hist field) items,
    reading only those concepts' blocks."""
    totals = {c: np.zeros((2, BINS), np.int64) for c in concepts}
    for path, hist_field in items:
        with reader.open_hist(path) as handle:
            hist = reader.hist_blocks(path, hist_field, handle)
            for c in concepts:
                totals[c] += hist.concept(c)
    return totals


class BestRows:
    """Per concept, the CANDIDATES best (score, shard, sample index) rows, descending (the full
    pass's max_by order), folded from many files' best-rows blocks with numpy."""

    def __init__(self):
        self.parts: list = []  # (concept, score, index) arrays, shard name
        self.pending = 0

    def add(self, rows: np.ndarray, shard: str) -> None:
        self.parts.append((rows, shard))
        self.pending += len(rows)
        if self.pending > 1 << 16:
            self.parts = [self._reduced()]
            self.pending = len(self.parts[0][0])

    def merge(self, other: "BestRows") -> None:
        for rows, shard in other.parts:
            self.add(rows, shard)

    def _reduced(self):
        """One part: the best CANDIDATES rows per concept (shards kept in a names table)."""
        from vlmaudit.report.shard_hists import TOP_ROW

        if not self.parts:
            return np.zeros(0, TOP_ROW), np.zeros(0, object)
        rows = np.concatenate([r for r, _ in self.parts])
        shards = np.concatenate([np.broadcast_to(np.asarray(s, object), len(r)) if isinstance(s, str) else s
                                 for r, s in self.parts]).astype(str)
        names, codes = np.unique(shards, return_inverse=True)
        order = np.lexsort((-rows["index"], -codes, -rows["score"].astype(np.float64), rows["concept"]))
        rank = np.arange(len(order)) - np.searchsorted(rows["concept"][order], rows["concept"][order])
        keep = order[rank < CANDIDATES]
        return rows[keep], names[codes[keep]].astype(object)

    def result(self) -> dict:
        rows, shards = self._reduced()
        out: dict[int, list] = {}
        for row, shard in zip(rows.tolist(), shards):
            out.setdefault(int(row[0]), []).append((float(row[1]), str(shard), int(row[2])))
        return out


class Rethreshold:
    """Every count at one threshold EDGES[k] for every concept and modality, from histograms."""

    def __init__(self, n_c: int, n_k: int, k: int):
        self.n_c, self.n_k, self.k = n_c, n_k, k
        self.reached = np.zeros(3 * (n_c + n_k + 1), np.int64)  # per block: values >= EDGES[k]
        self.hists = np.zeros((n_c, 2, BINS), np.int64)
        self.shard_flagged: dict[str, int] = {}
        self.best = BestRows()

    def add(self, hist, shard: str, rows: int | None = None) -> None:
        """One file's histograms (checked: each min(image, caption) block within both of its
        blocks, no block holding more values than the file's rows)."""
        from vlmaudit.report.shard_hists import group_block

        blocks = hist.all_blocks()
        totals = blocks.sum(axis=1, dtype=np.int64)
        both_ok = (totals[2::3] <= np.minimum(totals[0::3], totals[1::3])).all()
        if not both_ok or (rows is not None and int(totals.max(initial=0)) > rows):
            from vlmaudit.report.reading import DamagedReport

            raise DamagedReport(f"{hist.where}: histograms that do not add up")
        reached = blocks[:, self.k:].sum(axis=1, dtype=np.int64)
        self.reached += reached
        self.hists += blocks[: 3 * self.n_c].reshape(self.n_c, 3, BINS)[:, :2]
        at = group_block(self.n_c, self.n_k, 0)
        i, c, b = reached[at:at + 3]
        self.shard_flagged[shard] = self.shard_flagged.get(shard, 0) + int(i + c - b)
        top = hist.top()
        self.best.add(top[top["score"] >= EDGES[self.k]], shard)

    def merge(self, other: "Rethreshold") -> None:
        self.reached += other.reached
        self.hists += other.hists
        for shard, n in other.shard_flagged.items():
            self.shard_flagged[shard] = self.shard_flagged.get(shard, 0) + n
        self.best.merge(other.best)

    def apply(self, counts) -> None:
        """Replace the scan-threshold numbers of `counts` (from the summaries) with these."""
        n_c, n_k, r = self.n_c, self.n_k, self.reached
        image, caption, both = r[0:3 * n_c:3], r[1:3 * n_c:3], r[2:3 * n_c:3]
        counts.concept.image[:], counts.concept.caption[:] = image, caption
        counts.concept.any[:] = image + caption - both
        group = r[3 * n_c:].reshape(n_k + 1, 3)
        i, c, b = group[:, 0], group[:, 1], group[:, 2]
        counts.category.any[:], counts.category.both[:] = (i + c - b)[:n_k], b[:n_k]
        counts.category.image_only[:], counts.category.caption_only[:] = (i - b)[:n_k], (c - b)[:n_k]
        counts.flagged, counts.both = int(i[n_k] + c[n_k] - b[n_k]), int(b[n_k])
        counts.image_only, counts.caption_only = int(i[n_k] - b[n_k]), int(c[n_k] - b[n_k])
        counts.shards = {name: (rows, self.shard_flagged.get(name, 0)) for name, (rows, _) in counts.shards.items()}
        counts.candidate_scores = self.best.result()
        counts.candidates = {c: [(shard, i) for _, shard, i in items] for c, items in counts.candidate_scores.items()}


def fold_rethreshold(reader: ShardReader, items: list, k: int) -> Rethreshold:
    """items: (path, summary's hist field, rows); a file's shard is its name (summaries say so)."""
    from vlmaudit.report.engine import stem

    out = Rethreshold(len(reader.meta["concepts"]), len(reader.meta["categories"]), k)
    for path, hist_field, rows in items:
        out.add(reader.hist(path, hist_field["sha256"]), stem(path), rows)
    return out


# --- running a fold over many files ----------------------------------------------------------------

def workers_for(items: list):
    """A process pool for folding `items` (None: fold in this process: below POOL_MIN_FILES items
    or on one core); the caller shuts it down (use it as a context manager)."""
    workers = _cores()
    if len(items) < POOL_MIN_FILES or workers < 2:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def run(fold, reader: ShardReader, items: list, *args, pool=None) -> list:
    """[fold(reader, share, *args)] over shares of items: in `pool` (workers_for) when given, else
    in this process."""
    if pool is None:
        return [fold(reader, items, *args)]
    n = pool._max_workers * CHUNKS_PER_WORKER
    shares = [items[i * len(items) // n:(i + 1) * len(items) // n] for i in range(n)]
    return list(pool.map(fold, [reader] * n, shares, *([a] * n for a in args)))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
