"""A shard's score histograms (`NAME.hist.bin`): read for the top concepts' p95 and for a
re-threshold, never for the default counts.

Blocks (each BINS uint32 counts, zlib-compressed, located by a table of lengths so that a reader
inflates only the blocks it needs), for every concept c: its image scores, its caption scores and
min(image, caption) (a row reaches t in both modalities exactly when the min does); for every
category and for all concepts together: the per-row max over the group's concepts of the image
scores, of the caption scores, and the min of those two. At one threshold t for every concept (a
bin edge), these give every count the dashboard shows: image-or-caption = image + caption - both.
The last block keeps, per concept, the CANDIDATES best rows by max(image, caption) over all rows
(concept, float32 score, sample index): at any such t, the flagged rows' candidates are those of
them that reach t.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from vlmaudit.report.counts import BINS, CANDIDATES, score_bins
from vlmaudit.report.reading import DamagedReport

MAGIC = b"VLMHIST2"
HEAD = struct.Struct("<IIIII")  # concepts, categories, bins, blocks, bytes per count (2 or 4)
MAX_HIST_BYTES = 64 << 20
TOP_ROW = np.dtype([("concept", "<u2"), ("score", "<f4"), ("index", "<i8")])  # the best rows' block


def block_count(n_concepts: int, n_categories: int) -> int:
    return 3 * (n_concepts + n_categories + 1) + 1


def concept_block(c: int, modality: int) -> int:
    """modality: 0 image, 1 caption, 2 both."""
    return 3 * c + modality


def group_block(n_concepts: int, group: int, modality: int) -> int:
    """group: a category index, or n_categories for all concepts together."""
    return 3 * (n_concepts + group) + modality


class HistBuilder:
    """Folds Arrow batches of one shard's rows (shard, sample_index, image_scores, caption_scores)
    into the histograms, the score sums for the means and the per-concept best rows."""

    def __init__(self, concept_categories: list[int], n_categories: int):
        self.n_c, self.n_k = len(concept_categories), n_categories
        self.groups = [np.flatnonzero(np.asarray(concept_categories) == k) for k in range(n_categories)]
        self.hists = np.zeros((block_count(self.n_c, self.n_k) - 1, BINS + 1), np.int64)
        self.sums = np.zeros((2, self.n_c), np.float64)
        self.scored = np.zeros((2, self.n_c), np.int64)
        self.top: dict[int, list] = {}

    def add(self, batch) -> None:
        image, caption = (score_matrix(batch.column(name), self.n_c) for name in ("image_scores", "caption_scores"))
        both = np.minimum(image, caption)  # NaN when either is unscored
        self._count(np.stack([image, caption, both], axis=2).reshape(len(image), -1), 0)
        for k, members in enumerate(self.groups + [np.arange(self.n_c)]):
            imax, cmax = (_group_max(m, members) for m in (image, caption))
            self._count(np.stack([imax, cmax, np.minimum(imax, cmax)], axis=1), 3 * (self.n_c + k))
        for m, scores in enumerate((image, caption)):
            self.sums[m] += np.nansum(scores, axis=0, dtype=np.float64)
            self.scored[m] += (~np.isnan(scores)).sum(axis=0)
        self._add_top(np.fmax(image, caption), batch)

    def _count(self, values: np.ndarray, first: int) -> None:
        """values: rows x blocks; adds each column's bin counts to blocks first, first + 1, ..."""
        n = values.shape[1]
        offsets = (np.arange(n) * (BINS + 1))[None, :]
        counts = np.bincount((score_bins(values) + offsets).ravel(), minlength=n * (BINS + 1))
        self.hists[first:first + n] += counts.reshape(n, BINS + 1)

    def _add_top(self, best: np.ndarray, batch) -> None:
        """Per concept, the CANDIDATES best rows by (score, shard, sample index), descending: the
        order of the full pass's max_by."""
        if not len(best):
            return
        shards = np.asarray(batch.column("shard").to_pylist(), dtype=object)
        shards[shards == None] = ""  # noqa: E711 (elementwise)
        names, codes = np.unique(shards.astype(str), return_inverse=True)
        indices = batch.column("sample_index").to_numpy(zero_copy_only=False)
        filled = np.where(np.isnan(best), -np.inf, best)
        k = min(CANDIDATES, len(best))
        floor = -np.partition(-filled, k - 1, axis=0)[k - 1]  # each concept's k-th best score
        for c in range(self.n_c):
            rows = np.flatnonzero((filled[:, c] >= floor[c]) & ~np.isnan(best[:, c]))
            if len(rows) > k:  # ties at the floor: the full pass's order decides
                rows = rows[np.lexsort((indices[rows], codes[rows], best[rows, c]))[::-1][:k]]
            items = [(float(best[r, c]), str(names[codes[r]]), int(indices[r])) for r in rows]
            if items:
                self.top[c] = sorted(self.top.get(c, []) + items, reverse=True)[:CANDIDATES]

    def encode(self) -> bytes:
        width = 2 if self.hists.max(initial=0) < 1 << 16 else 4  # half the bytes to inflate for most shards
        blocks = [zlib.compress(h[:BINS].astype(f"<u{width}").tobytes(), 6) for h in self.hists]
        top = np.array([(c, s, i) for c, items in sorted(self.top.items()) for s, _, i in items], TOP_ROW)
        blocks.append(zlib.compress(top.tobytes(), 6))
        lengths = struct.pack(f"<{len(blocks)}I", *map(len, blocks))
        return MAGIC + HEAD.pack(self.n_c, self.n_k, BINS, len(blocks), width) + lengths + b"".join(blocks)


def _group_max(scores: np.ndarray, members: np.ndarray) -> np.ndarray:
    if not len(members):
        return np.full(len(scores), np.nan, np.float32)
    with np.errstate(invalid="ignore"):
        return np.fmax.reduce(scores[:, members], axis=1)


def score_matrix(column, n_concepts: int) -> np.ndarray:
    """rows x concepts float32 of a score-list column; NaN where a list or a score is null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    out = np.full((len(column), n_concepts), np.nan, np.float32)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if not (lengths[valid] == n_concepts).all():
            raise DamagedReport(f"score lists of the wrong length (expected {n_concepts})")
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        out[valid] = values.reshape(-1, n_concepts)
    return out


def header_size(n_concepts: int, n_categories: int) -> int:
    """Bytes before the first block: magic, HEAD and the table of block lengths."""
    return len(MAGIC) + HEAD.size + 4 * block_count(n_concepts, n_categories)


def index_digest(data: bytes, n_concepts: int, n_categories: int) -> str:
    """SHA-256 of a hist.bin's header and block table: a summary records it, so a reader that
    inflates a few blocks (each checked by zlib's own checksum) knows they are this file's."""
    import hashlib

    return hashlib.sha256(data[:header_size(n_concepts, n_categories)]).hexdigest()


class HistFile:
    """A hist.bin: header and block table checked on open, blocks inflated on demand. `data` is the
    whole file, or only its header when `read(offset, length)` reads the blocks (of a file of
    `size` bytes)."""

    def __init__(self, data: bytes, where, n_concepts: int, n_categories: int, size: int | None = None, read=None):
        self.data, self.where = data, where
        self.read = read or (lambda offset, length: data[offset:offset + length])
        head = len(MAGIC) + HEAD.size
        if len(data) < head or data[:len(MAGIC)] != MAGIC:
            raise DamagedReport(f"{where}: not a vlmaudit histogram file (or one of an older version: "
                                "run `vlmaudit summarize` again)")
        n_c, n_k, bins, n, width = HEAD.unpack_from(data, len(MAGIC))
        if (n_c, n_k, bins, n) != (n_concepts, n_categories, BINS, block_count(n_concepts, n_categories)) \
                or width not in (2, 4):
            raise DamagedReport(f"{where}: histograms for {n_c} concepts, {n_k} categories x {bins} bins, "
                                f"expected {n_concepts}, {n_categories} x {BINS}")
        if len(data) < head + 4 * n:
            raise DamagedReport(f"{where}: damaged histograms (truncated)")
        lengths = np.frombuffer(data, "<u4", n, head).astype(np.int64)
        self.offsets = head + 4 * n + np.concatenate([[0], np.cumsum(lengths)])
        if self.offsets[-1] != (len(data) if size is None else size):
            raise DamagedReport(f"{where}: damaged histograms (wrong size)")
        self.n_c, self.dtype = n_concepts, f"<u{width}"

    def _raw(self, i: int) -> bytes:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.read(start, end - start)

    def block(self, i: int) -> np.ndarray:
        return _inflate(self._raw(i), BINS * int(self.dtype[-1]), self.where, self.dtype)

    def concept(self, c: int) -> np.ndarray:
        """[image, caption] histograms of concept c (adjacent blocks: one read)."""
        first = concept_block(c, 0)
        start, middle, end = (int(self.offsets[first + i]) for i in range(3))
        raw = self.read(start, end - start)
        size = BINS * int(self.dtype[-1])
        return np.stack([_inflate(raw[:middle - start], size, self.where, self.dtype),
                         _inflate(raw[middle - start:], size, self.where, self.dtype)]).astype(np.int64)

    def all_blocks(self) -> np.ndarray:
        return np.stack([self.block(i) for i in range(len(self.offsets) - 2)])

    def top(self) -> np.ndarray:
        """The best rows per concept (TOP_ROW records, concept by concept, best first): of the
        file's one shard (a file of several shards is re-thresholded from its rows)."""
        limit = self.n_c * CANDIDATES * TOP_ROW.itemsize
        raw = _inflate(self._raw(len(self.offsets) - 2), limit, self.where, None)
        if len(raw) % TOP_ROW.itemsize:
            raise DamagedReport(f"{self.where}: damaged histograms (best rows)")
        rows = np.frombuffer(raw, TOP_ROW)
        if len(rows) and (int(rows["concept"].max()) >= self.n_c or not np.isfinite(rows["score"]).all()):
            raise DamagedReport(f"{self.where}: damaged histograms (best rows)")
        return rows


def _inflate(data: bytes, limit: int, where, dtype):
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise DamagedReport(f"{where}: damaged histograms ({exc})") from None
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data or len(raw) > limit \
            or (dtype is not None and len(raw) != limit):
        raise DamagedReport(f"{where}: damaged histograms (a block of the wrong size)")
    return raw if dtype is None else np.frombuffer(raw, dtype)
