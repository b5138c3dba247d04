"""Per-shard summaries: everything the default dashboard shows, counted once per shard, additive.

`NAME.summary.json` (a few KB: counts per concept / category / modality / status, score sums for
the means, example candidates, the highest scores) and `NAME.hist.bin` (per concept and modality a
BINS-bin score histogram, zlib-compressed uint32; read only for p95 and histograms). Both are
computed by the same SQL as a full pass (report.codes, report.details), so merging the summaries of
a directory gives the full pass's numbers. Summaries come from other people too: `load` checks
every field and names the file when one is damaged or foreign.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np

from vlmaudit.report import codes, details
from vlmaudit.report.counts import BINS, CANDIDATES, ConceptDetail, Counts, default_view
from vlmaudit.report.highest import highest_order, highest_rows
from vlmaudit.report.reading import DamagedReport

FORMAT = "vlmaudit.shard-summary"
VERSION = 1
HIST_MAGIC = b"VLMHIST1"
HIGHEST = 5  # highest-scoring rows kept per shard (the empty dashboard shows at most 5)
MAX_SUMMARY_BYTES = 4 << 20


def taxonomy_digest(meta: dict) -> str:
    """What a summary is only valid for: the taxonomy and the scan's thresholds."""
    keys = ("concepts", "concept_categories", "categories", "thresholds")
    text = json.dumps({k: meta.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- computing one shard's summary -----------------------------------------------------------------

def summarize_table(table, meta: dict, name: str) -> tuple[dict, bytes]:
    """(summary, hist.bin bytes) of one shard's rows (an Arrow table): the scan writer's summarizer."""
    from vlmaudit.report import engine

    con = engine.connect()
    try:
        con.register("shard_rows", table)
        return compute(con, "shard_rows", set(table.column_names), meta, name)
    finally:
        con.close()


def compute(con, source: str, columns: set[str], meta: dict, name: str) -> tuple[dict, bytes]:
    """(summary dict, hist.bin bytes) of the rows in `source` (a DuckDB relation) at the scan's thresholds."""

    view = default_view(meta)
    n_concepts = len(meta["concepts"])
    counts = Counts.empty(n_concepts, len(meta["categories"]))
    rows = con.execute(codes.counts_sql(view, meta, [], columns, source=source)).fetchall()
    codes.add_codes(counts, rows)
    candidates = {str(code % codes.KIND - 1): [[b["s"], b["shard"], b["i"]] for b in best]
                  for code, _, _, _, best in rows if code // codes.KIND == codes.ANY and best}
    accumulator = details.DetailAccumulator(list(range(n_concepts)))
    for batch in con.sql(details.details_sql(list(range(n_concepts)), [], source)).to_arrow_reader(details.BATCH_ROWS):
        accumulator.add(batch)
    sums = accumulator.sums
    summary = {
        "format": FORMAT, "version": VERSION, "shard": name, "rows": counts.samples,
        "taxonomy": taxonomy_digest(meta), "flagged": counts.flagged, "both": counts.both,
        "image_only": counts.image_only, "caption_only": counts.caption_only, "status": counts.status,
        "shards": {k: list(v) for k, v in counts.shards.items()},
        "concept": {k: getattr(counts.concept, k).tolist() for k in ("any", "image", "caption")},
        "category": {k: getattr(counts.category, k).tolist() for k in ("any", "both", "image_only", "caption_only")},
        "score_sums": {m: [sums[(c, m[0])][0] for c in range(n_concepts)] for m in ("image", "caption")},
        "score_counts": {m: [sums[(c, m[0])][1] for c in range(n_concepts)] for m in ("image", "caption")},
        "candidates": candidates,
        "examples": _example_rows(con, source, candidates),
        "highest": [list(r) for r in highest_rows(con, source, HIGHEST)],
    }
    hist = encode_hist(np.stack([np.stack([accumulator.hists[(c, "i")], accumulator.hists[(c, "c")]])
                                 for c in range(n_concepts)]) if n_concepts else np.zeros((0, 2, BINS), np.int64))
    summary["hist"] = {"bins": BINS, "bytes": len(hist), "sha256": hashlib.sha256(hist).hexdigest()}
    return summary, hist


def _example_rows(con, source: str, candidates: dict) -> list:
    """[shard, sample_index, key, url, caption, {concept: [image score, caption score]}] per candidate row."""
    wanted = {(s, i) for items in candidates.values() for _, s, i in items}
    if not wanted:
        return []
    indices = ", ".join(sorted({str(int(i)) for _, i in wanted}))
    found = con.execute(f"SELECT coalesce(shard, ''), sample_index, key, url, caption, image_scores, caption_scores "
                        f"FROM {source} WHERE sample_index IN ({indices})").fetchall()
    concepts = {}
    for c, items in candidates.items():
        for _, s, i in items:
            concepts.setdefault((s, i), []).append(int(c))
    out = []
    for shard, index, key, url, caption, image, cap in found:
        if (shard, index) in concepts:
            scores = {str(c): [image[c] if image else None, cap[c] if cap else None]
                      for c in concepts.pop((shard, index))}
            out.append([shard, index, key, url, caption, scores])
    return out


def encode_hist(hists: np.ndarray) -> bytes:
    """MAGIC, (concepts, bins), the compressed length of each (concept, modality) block, then the
    blocks: zlib of uint32 counts, one per concept and modality, so a reader inflates only the
    concepts it shows."""
    blocks = [zlib.compress(hists[c, m].astype("<u4").tobytes(), 6) for c in range(hists.shape[0]) for m in (0, 1)]
    lengths = struct.pack(f"<{len(blocks)}I", *map(len, blocks))
    return HIST_MAGIC + struct.pack("<II", hists.shape[0], BINS) + lengths + b"".join(blocks)


def decode_hist(data: bytes, n_concepts: int, where, concepts: list[int] | None = None) -> dict:
    """concept index -> [modality, bin] counts of a hist.bin (all concepts, or only `concepts`);
    a damaged or foreign file is refused naming it."""
    head = len(HIST_MAGIC) + 8
    if len(data) < head or data[:len(HIST_MAGIC)] != HIST_MAGIC:
        raise DamagedReport(f"{where}: not a vlmaudit histogram file")
    n, bins = struct.unpack("<II", data[len(HIST_MAGIC):head])
    if n != n_concepts or bins != BINS:
        raise DamagedReport(f"{where}: histograms for {n} concepts x {bins} bins, expected {n_concepts} x {BINS}")
    if len(data) < head + 8 * n:
        raise DamagedReport(f"{where}: damaged histograms (truncated)")
    lengths = np.frombuffer(data, "<u4", 2 * n, head).astype(np.int64)
    offsets = head + 8 * n + np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] != len(data):
        raise DamagedReport(f"{where}: damaged histograms (wrong size)")
    return {c: np.stack([_block(data[offsets[2 * c + m]:offsets[2 * c + m + 1]], where) for m in (0, 1)])
            for c in (range(n) if concepts is None else concepts)}


def _block(data: bytes, where) -> np.ndarray:
    size = BINS * 4
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, size + 1)
    except zlib.error as exc:
        raise DamagedReport(f"{where}: damaged histograms ({exc})") from None
    if len(raw) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise DamagedReport(f"{where}: damaged histograms (a block of the wrong size)")
    return np.frombuffer(raw, "<u4").astype(np.int64)


# --- reading and checking --------------------------------------------------------------------------

def check(summary, meta: dict, where, footer_rows: int | None = None, digest: str | None = None) -> dict:
    """The summary if it is a well-formed summary of this taxonomy (and of a file of `footer_rows`
    rows); digest: taxonomy_digest(meta), when the caller has it already."""
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise DamagedReport(f"{where}: not a vlmaudit shard summary")
    if summary.get("version") != VERSION:
        raise DamagedReport(f"{where}: shard summary version {summary.get('version')!r}, expected {VERSION}")
    if summary.get("taxonomy") != (digest or taxonomy_digest(meta)):
        raise DamagedReport(f"{where}: summary of another taxonomy or thresholds than its report")
    n_c, n_k = len(meta["concepts"]), len(meta["categories"])
    _count(summary, "rows", where)
    for key in ("flagged", "both", "image_only", "caption_only"):
        _count(summary, key, where)
    _int_map(summary.get("status"), where, "status")
    if not isinstance(summary.get("shards"), dict) or not all(
            _counts_list(v, 2) for v in summary["shards"].values()):
        raise DamagedReport(f"{where}: field shards malformed")
    for group, keys, n in (("concept", ("any", "image", "caption"), n_c),
                           ("category", ("any", "both", "image_only", "caption_only"), n_k)):
        value = summary.get(group)
        if not isinstance(value, dict) or not all(_counts_list(value.get(k), n) for k in keys):
            raise DamagedReport(f"{where}: field {group} malformed")
    for key in ("score_sums", "score_counts"):
        value = summary.get(key)
        if not isinstance(value, dict) or not all(_numbers(value.get(m), n_c, key == "score_counts")
                                                  for m in ("image", "caption")):
            raise DamagedReport(f"{where}: field {key} malformed")
    _check_candidates(summary, n_c, where)
    _check_rows(summary.get("examples"), 6, where, "examples")
    _check_rows(summary.get("highest"), 6, where, "highest")
    hist = summary.get("hist")
    if not isinstance(hist, dict) or hist.get("bins") != BINS or not isinstance(hist.get("sha256"), str):
        raise DamagedReport(f"{where}: field hist malformed")
    if sum(summary["status"].values()) != summary["rows"] or summary["flagged"] > summary["rows"]:
        raise DamagedReport(f"{where}: counts do not add up")
    if footer_rows is not None and footer_rows != summary["rows"]:
        raise DamagedReport(f"{where}: summary counts {summary['rows']} rows, its Parquet file holds {footer_rows}; "
                            "re-create it with `vlmaudit summarize`")
    return summary


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


def _check_candidates(summary: dict, n_concepts: int, where) -> None:
    value = summary.get("candidates")
    if not isinstance(value, dict) or len(value) > n_concepts:
        raise DamagedReport(f"{where}: field candidates malformed")
    for key, items in value.items():
        if not (key.isdigit() and int(key) < n_concepts and isinstance(items, list) and len(items) <= CANDIDATES
                and all(isinstance(x, list) and len(x) == 3 and isinstance(x[0], (int, float)) and isinstance(x[1], str)
                        and isinstance(x[2], int) for x in items)):
            raise DamagedReport(f"{where}: field candidates malformed")


def _check_rows(value, width: int, where, key) -> None:
    if not isinstance(value, list) or not all(isinstance(r, list) and len(r) == width for r in value):
        raise DamagedReport(f"{where}: field {key} malformed")


# --- merging ---------------------------------------------------------------------------------------

class Merger:
    """Folds shard summaries one at a time (memory: the merged counts, the current best candidates
    and their rows, not the summaries) into what a full pass over the rows gives."""

    def __init__(self, meta: dict):
        n_c = len(meta["concepts"])
        self.counts = Counts.empty(n_c, len(meta["categories"]))
        self.shards, self.candidates, self.rows, self.highest = {}, {}, {}, []
        self.sums = {m: np.zeros(n_c, np.float64) for m in ("image", "caption")}
        self.scored = {m: np.zeros(n_c, np.int64) for m in ("image", "caption")}
        self.added = 0

    def add(self, s: dict) -> None:
        counts = self.counts
        counts.samples += s["rows"]
        counts.flagged += s["flagged"]
        counts.both += s["both"]
        counts.image_only += s["image_only"]
        counts.caption_only += s["caption_only"]
        for status, n in s["status"].items():
            counts.status[status] = counts.status.get(status, 0) + n
        for name, (n, f) in s["shards"].items():
            now = self.shards.setdefault(name, [0, 0])
            now[0], now[1] = now[0] + n, now[1] + f
        for k in ("any", "image", "caption"):
            getattr(counts.concept, k)[:] += np.asarray(s["concept"][k], np.int64)
        for k in ("any", "both", "image_only", "caption_only"):
            getattr(counts.category, k)[:] += np.asarray(s["category"][k], np.int64)
        for m in ("image", "caption"):
            self.sums[m] += np.asarray(s["score_sums"][m], np.float64)
            self.scored[m] += np.asarray(s["score_counts"][m], np.int64)
        for c, items in s["candidates"].items():  # max_by's order: score, shard, sample index, descending
            merged = self.candidates.get(int(c), []) + [tuple(x) for x in items]
            self.candidates[int(c)] = sorted(merged, reverse=True)[:CANDIDATES]
        for shard, index, key, url, caption, scores in s["examples"]:
            row = self.rows.setdefault((shard, index), {"shard": shard, "sample_index": index, "key": key, "url": url,
                                                        "caption": caption, "image_scores": {}, "caption_scores": {}})
            for c, (image, cap) in scores.items():
                row["image_scores"][int(c)], row["caption_scores"][int(c)] = image, cap
        self.highest = sorted(self.highest + [tuple(r) for r in s["highest"]], key=highest_order)[:HIGHEST]
        self.added += 1
        if self.added % 256 == 0:
            self._prune()

    def _prune(self) -> None:
        """Forget the example rows no current candidate points at."""
        wanted = {(shard, i) for items in self.candidates.values() for _, shard, i in items}
        self.rows = {k: v for k, v in self.rows.items() if k in wanted}

    def result(self) -> Counts:
        self._prune()
        counts = self.counts
        counts.shards = {name: tuple(v) for name, v in self.shards.items()}
        counts.candidates = {c: [(shard, i) for _, shard, i in items] for c, items in self.candidates.items()}
        return counts

    def details(self, hists, concepts: list[int]) -> dict:
        """concept index -> ConceptDetail (as report.details computes it over every row), from each
        shard's histograms (an iterable of {concept: [modality, bin]})."""
        totals = {c: np.zeros((2, BINS), np.int64) for c in concepts}
        for hist in hists:
            for c in concepts:
                totals[c] += hist[c]
        mean = lambda m, c: round(float(self.sums[m][c]) / int(self.scored[m][c]), 4) if self.scored[m][c] else None  # noqa: E731
        return {c: ConceptDetail(mean("image", c), mean("caption", c), totals[c][0], totals[c][1]) for c in concepts}
