"""Per-shard summaries: everything the default dashboard shows, counted once per shard, additive.

`NAME.summary.json` (a few KB: the counts per concept / category / modality / status as one list,
the score sums for the means, each concept's example candidates as (score, shard, sample index),
the highest scores) and `NAME.hist.bin` (report.shard_hists: histograms and the best rows per
concept, read only for p95 and a re-threshold). Both come from the same SQL and binning as a full
pass (report.codes, report.counts.score_bins), so merging the summaries of a directory gives the
full pass's numbers. Summaries come from other people too: `check` checks every field and names
the file when one is damaged or foreign.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from vlmaudit.report import codes
from vlmaudit.report.counts import BINS, CANDIDATES, ConceptDetail, Counts, default_view
from vlmaudit.report.highest import highest_order, highest_rows
from vlmaudit.report.reading import DamagedReport

FORMAT = "vlmaudit.shard-summary"
VERSION = 2
HIGHEST = 5  # highest-scoring rows kept per shard (the empty dashboard shows at most 5)
MAX_SUMMARY_BYTES = 4 << 20
BATCH_ROWS = 1 << 15
TOTALS = ("flagged", "both", "image_only", "caption_only")
DIGITS = re.compile("[0-9]{1,6}")


def taxonomy_digest(meta: dict) -> str:
    """What a summary is only valid for: the taxonomy and the scan's thresholds."""
    keys = ("concepts", "concept_categories", "categories", "thresholds")
    text = json.dumps({k: meta.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def counts_length(n_concepts: int, n_categories: int) -> int:
    """The `counts` list: TOTALS, then concept any / image / caption, then category any / both /
    image_only / caption_only."""
    return len(TOTALS) + 3 * n_concepts + 4 * n_categories


def flat_counts(counts: Counts) -> list[int]:
    return ([counts.flagged, counts.both, counts.image_only, counts.caption_only]
            + [int(x) for k in ("any", "image", "caption") for x in getattr(counts.concept, k)]
            + [int(x) for k in ("any", "both", "image_only", "caption_only") for x in getattr(counts.category, k)])


def unflatten(vector: np.ndarray, counts: Counts, n_c: int, n_k: int) -> None:
    """flat_counts' inverse, into counts (totals and the concept / category arrays)."""
    counts.flagged, counts.both, counts.image_only, counts.caption_only = (int(x) for x in vector[:4])
    at = 4
    for k in ("any", "image", "caption"):
        getattr(counts.concept, k)[:] = vector[at:at + n_c]
        at += n_c
    for k in ("any", "both", "image_only", "caption_only"):
        getattr(counts.category, k)[:] = vector[at:at + n_k]
        at += n_k


# --- computing one shard's summary -----------------------------------------------------------------

def summarize_table(table, meta: dict, name: str) -> tuple[dict, bytes] | None:
    """(summary, hist.bin bytes) of one shard's rows (an Arrow table): the scan writer's summarizer;
    None when a row's scores are damaged (NaN, out of range: the shard is written without one)."""
    from vlmaudit.report import engine

    con = engine.connect()
    try:
        con.register("shard_rows", table)
        return compute(con, "shard_rows", set(table.column_names), meta, name)
    finally:
        con.close()


def compute(con, source: str, columns: set[str], meta: dict, name: str) -> tuple[dict, bytes] | None:
    """(summary dict, hist.bin bytes) of the rows in `source` (a DuckDB relation) at the scan's
    thresholds; None when a row's scores are damaged."""
    from vlmaudit.report.shard_hists import HistBuilder, index_digest

    view = default_view(meta)
    n_c, n_k = len(meta["concepts"]), len(meta["categories"])
    counts = Counts.empty(n_c, n_k)
    rows = con.execute(codes.counts_sql(view, meta, [], columns, source=source)).fetchall()
    codes.add_codes(counts, rows)
    if not codes.reads_scores(view, columns):
        counts.damaged = con.execute(f"SELECT count(*) FROM {source} WHERE "
                                     f"{codes.damaged_sql(columns, n_c)}").fetchall()[0][0]
    if counts.damaged:  # no summary: `report` reads this shard's rows and refuses them, naming the file
        return None
    candidates = {str(code % codes.KIND - 1): [[b["s"], b["shard"], b["i"]] for b in best]
                  for code, _, _, _, best in rows if code // codes.KIND == codes.ANY and best}
    builder = HistBuilder([meta["categories"].index(c) for c in meta["concept_categories"]], n_k)
    query = f"SELECT coalesce(shard, '') AS shard, sample_index, image_scores, caption_scores FROM {source}"
    for batch in con.sql(query).to_arrow_reader(BATCH_ROWS):
        builder.add(batch)
    hist = builder.encode()
    summary = {
        "format": FORMAT, "version": VERSION, "shard": name, "rows": counts.samples,
        "taxonomy": taxonomy_digest(meta), "status": counts.status,
        "shards": {k: list(v) for k, v in counts.shards.items()},
        "counts": flat_counts(counts),
        "score_sums": builder.sums.ravel().tolist(), "score_counts": builder.scored.ravel().tolist(),
        "candidates": candidates,
        "highest": [list(r) for r in highest_rows(con, source, HIGHEST)],
        "hist": {"bins": BINS, "bytes": len(hist), "sha256": hashlib.sha256(hist).hexdigest(),
                 "index_sha256": index_digest(hist, n_c, n_k)},
    }
    return summary, hist


# --- reading and checking --------------------------------------------------------------------------

class SummaryMismatch(DamagedReport):
    """The summary does not describe this file as it is now (its Parquet footer changed since, or
    it records another run's metadata): not used; the rows are read (and checked) instead."""


def check(summary, meta: dict, where, expect: dict | None = None) -> dict:
    """The summary if it is a well-formed summary of this taxonomy. expect (all optional): taxonomy
    (taxonomy_digest(meta), when the caller has it), rows (the footer's or the stats' row count),
    footer (schema.footer_digest of its Parquet file), meta (schema.meta_digest of the run),
    shard (the only shard name its rows may carry: the file's)."""
    expect = expect or {}
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise DamagedReport(f"{where}: not a vlmaudit shard summary")
    if summary.get("version") != VERSION:
        raise SummaryMismatch(f"{where}: shard summary version {summary.get('version')!r}, expected {VERSION} "
                              "(run `vlmaudit summarize` again)")
    _check_digests(summary, expect, where)  # a summary of another version of the file is stale, not damaged
    if summary.get("taxonomy") != (expect.get("taxonomy") or taxonomy_digest(meta)):
        raise DamagedReport(f"{where}: summary of another taxonomy or thresholds than its report")
    n_c, n_k = len(meta["concepts"]), len(meta["categories"])
    _count(summary, "rows", where)
    _int_map(summary.get("status"), where, "status")
    if not isinstance(summary.get("shards"), dict) or not all(
            isinstance(k, str) and _counts_list(v, 2) for k, v in summary["shards"].items()):
        raise DamagedReport(f"{where}: field shards malformed")
    if not _counts_list(summary.get("counts"), counts_length(n_c, n_k)):
        raise DamagedReport(f"{where}: field counts malformed")
    if not _numbers(summary.get("score_sums"), 2 * n_c, False) or not _counts_list(summary.get("score_counts"), 2 * n_c):
        raise DamagedReport(f"{where}: field score_sums / score_counts malformed")
    _check_candidates(summary, n_c, where)
    _check_highest(summary.get("highest"), where)
    hist = summary.get("hist")
    if not isinstance(hist, dict) or hist.get("bins") != BINS or not isinstance(hist.get("sha256"), str) \
            or not isinstance(hist.get("index_sha256"), str) or not _is_count(hist.get("bytes")):
        raise DamagedReport(f"{where}: field hist malformed")
    _check_sums(summary, expect, where)
    if expect.get("rows") is not None and expect["rows"] != summary["rows"]:
        raise DamagedReport(f"{where}: summary counts {summary['rows']} rows, its report holds {expect['rows']}; "
                            "re-create it with `vlmaudit summarize`")
    return summary


def _check_digests(summary: dict, expect: dict, where) -> None:
    if expect.get("footer") is not None and summary.get("footer_sha256") != expect["footer"]:
        raise SummaryMismatch(f"{where}: made from another version of its Parquet file")
    if expect.get("meta") is not None and summary.get("meta_sha256") != expect["meta"]:
        raise SummaryMismatch(f"{where}: made for another run's metadata than the first report's")


def _check_sums(summary: dict, expect: dict, where) -> None:
    """Counts that add up: nothing above the rows, the modality split adding up to the flagged
    rows, no concept or category above them, score counts within the rows and each score sum
    within its count (scores are in [0, 1]), per-shard rows and flags adding up to the file's,
    and no other shard name than the file's."""
    rows, counts = summary["rows"], np.asarray(summary["counts"], np.int64)
    flagged = int(counts[0])
    sums, scored = np.asarray(summary["score_sums"], np.float64), np.asarray(summary["score_counts"], np.int64)
    shards = summary["shards"]
    if (sum(summary["status"].values()) != rows or flagged > rows or int(counts[1:4].sum()) != flagged
            or (len(counts) > 4 and int(counts[4:].max()) > flagged) or (len(scored) and int(scored.max()) > rows)
            or bool((sums > scored + 1e-6 * np.maximum(scored, 1)).any())
            or sum(n for n, _ in shards.values()) != rows or sum(f for _, f in shards.values()) != flagged
            or any(f > n for n, f in shards.values())
            or (expect.get("shard") is not None and set(shards) - {expect["shard"]})):
        raise DamagedReport(f"{where}: counts do not add up")


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _count(summary: dict, key: str, where) -> None:
    if not _is_count(summary.get(key)):
        raise DamagedReport(f"{where}: field {key} must be a count")


def _int_map(value, where, key) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and _is_count(v) for k, v in value.items()):
        raise DamagedReport(f"{where}: field {key} malformed")


def _counts_list(value, n: int) -> bool:
    return _numbers(value, n, True)


def _numbers(value, n: int, integer: bool) -> bool:
    """A list of n counts (integer) or finite non-negative numbers, checked with numpy (fast)."""
    if not isinstance(value, list) or len(value) != n:
        return False
    if n == 0:
        return True
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return False
    kinds = "i" if integer else "if"
    return (array.ndim == 1 and array.dtype.kind in kinds and bool(np.isfinite(array).all())
            and bool(array.min() >= 0))


def _is_candidate(x) -> bool:
    """[score in [0, 1], shard, sample index]."""
    return (isinstance(x, list) and len(x) == 3 and isinstance(x[0], (int, float)) and not isinstance(x[0], bool)
            and 0 <= x[0] <= 1 and isinstance(x[1], str) and isinstance(x[2], int) and not isinstance(x[2], bool))


def _check_candidates(summary: dict, n_concepts: int, where) -> None:
    value = summary.get("candidates")
    if not isinstance(value, dict) or len(value) > n_concepts:
        raise DamagedReport(f"{where}: field candidates malformed")
    for key, items in value.items():
        if not (DIGITS.fullmatch(key) and int(key) < n_concepts and isinstance(items, list) and len(items) <= CANDIDATES
                and all(_is_candidate(x) for x in items)):
            raise DamagedReport(f"{where}: field candidates malformed")


def _check_highest(value, where) -> None:
    """[shard, key, image concept, image score, caption concept, caption score] rows: text or null
    where text goes, scores in [0, 1] or null, at least one score."""
    def text(x):
        return x is None or isinstance(x, str)

    def score(x):
        return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1)

    if not isinstance(value, list) or len(value) > HIGHEST or not all(
            isinstance(r, list) and len(r) == 6 and text(r[0]) and text(r[1]) and text(r[2]) and text(r[4])
            and score(r[3]) and score(r[5]) and (r[3] is not None or r[5] is not None) for r in value):
        raise DamagedReport(f"{where}: field highest malformed")


# --- merging ---------------------------------------------------------------------------------------

class Merger:
    """Folds shard summaries one at a time (memory: the merged counts and the current best
    candidates, not the summaries) into what a full pass over the rows gives; mergers of disjoint
    sets of shards merge (the worker processes of report.summary_fold)."""

    def __init__(self, meta: dict):
        self.n_c, self.n_k = len(meta["concepts"]), len(meta["categories"])
        self.vector = np.zeros(counts_length(self.n_c, self.n_k), np.int64)
        self.samples, self.status, self.shards, self.candidates, self.highest = 0, {}, {}, {}, []
        self.sums = np.zeros(2 * self.n_c, np.float64)
        self.scored = np.zeros(2 * self.n_c, np.int64)
        self.added = 0

    def add(self, s: dict) -> None:
        self.samples += s["rows"]
        self.vector += np.asarray(s["counts"], np.int64)
        self.sums += np.asarray(s["score_sums"], np.float64)
        self.scored += np.asarray(s["score_counts"], np.int64)
        self._fold(s["status"], {name: tuple(v) for name, v in s["shards"].items()},
                   {int(c): [tuple(x) for x in items] for c, items in s["candidates"].items()},
                   [tuple(r) for r in s["highest"]])

    def merge(self, other: "Merger") -> None:
        self.samples += other.samples
        self.vector += other.vector
        self.sums += other.sums
        self.scored += other.scored
        self._fold(other.status, other.shards, other.candidates, other.highest)

    def _fold(self, status: dict, shards: dict, candidates: dict, highest: list) -> None:
        for name, n in status.items():
            self.status[name] = self.status.get(name, 0) + n
        for name, (n, f) in shards.items():
            now = self.shards.get(name, (0, 0))
            self.shards[name] = (now[0] + n, now[1] + f)
        for c, items in candidates.items():  # max_by's order: score, shard, sample index, descending
            self.candidates[c] = sorted(self.candidates.get(c, []) + items, reverse=True)[:CANDIDATES]
        self.highest = sorted(self.highest + highest, key=highest_order)[:HIGHEST]
        self.added += 1

    def result(self) -> Counts:
        counts = Counts.empty(self.n_c, self.n_k)
        counts.samples, counts.status = self.samples, dict(self.status)
        unflatten(self.vector, counts, self.n_c, self.n_k)
        counts.shards = dict(self.shards)
        counts.candidates = {c: [(shard, i) for _, shard, i in items] for c, items in self.candidates.items()}
        counts.candidate_scores = dict(self.candidates)
        return counts

    def details(self, totals: dict) -> dict:
        """concept index -> ConceptDetail (as report.details computes it over every row) from the
        merged [image, caption] histograms of those concepts."""
        def mean(m, c):
            at = m * self.n_c + c
            return round(float(self.sums[at]) / int(self.scored[at]), 4) if self.scored[at] else None

        return {c: ConceptDetail(mean(0, c), mean(1, c), hist[0], hist[1]) for c, hist in totals.items()}
