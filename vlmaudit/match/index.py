"""Report hashes against banks through real indexes, never a loop over pairs: PDQ by Hamming
range search in faiss (brute force for small banks, multi-index hashing for large ones: exact up to
the radius, by the pigeonhole argument below), MD5 / SHA-256 by an Arrow hash-set membership."""

from __future__ import annotations

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.match.banks import Bank

FLAT_BELOW = 50_000  # bank sizes where brute force beats the hash tables
CHUNK_BITS = 16


class PdqIndex:
    """Exact Hamming range search: with 16 chunks of 16 bits, two hashes within distance R differ
    in at most nflip bits in some chunk when R < 16 * (nflip + 1), so probing each chunk's buckets
    within nflip flips finds every match."""

    def __init__(self, bank: Bank, max_distance: int):
        try:
            import faiss
        except ImportError:
            raise UserError("PDQ banks are matched with faiss: pip install 'vlmaudit[hashes]'") from None

        self.bank, self.radius = bank, max_distance + 1  # faiss: distance < radius
        if len(bank.hashes) < FLAT_BELOW:
            self.index = faiss.IndexBinaryFlat(256)
        else:
            self.index = faiss.IndexBinaryMultiHash(256, 256 // CHUNK_BITS, CHUNK_BITS)
            self.index.nflip = max_distance // (256 // CHUNK_BITS)
        self.index.add(np.ascontiguousarray(bank.hashes))

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, bank row, distance) of every pair within the distance."""
        limits, distances, labels = self.index.range_search(np.ascontiguousarray(queries), self.radius)
        rows = np.repeat(np.arange(len(queries)), np.diff(limits).astype(np.int64))
        return rows, labels.astype(np.int64), distances.astype(np.int16)


class ExactIndex:
    def __init__(self, bank: Bank):
        import pyarrow as pa

        width = bank.hashes.shape[1]
        self.bank = bank
        self.values = pa.array([row.tobytes() for row in bank.hashes], pa.binary(width))
        self.position = {value: i for i, value in enumerate(self.values.to_pylist())}

    def search(self, column) -> tuple[np.ndarray, np.ndarray]:
        """(row, bank row) for every row of COLUMN (Arrow binary) in the bank."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = column.cast(pa.binary())
        hits = np.flatnonzero(pc.fill_null(pc.is_in(column, value_set=self.values.cast(pa.binary())), False).to_numpy(
            zero_copy_only=False))
        found = column.take(pa.array(hits)).to_pylist()
        return hits, np.array([self.position[v] for v in found], np.int64)


def build(bank: Bank, max_distance: int):
    return PdqIndex(bank, max_distance) if bank.kind == "pdq" else ExactIndex(bank)
