"""Match a report directory's stored hashes against banks, streaming the rows in batches; the
removal list (key, shard, url, bank, entry id, distance) in Re-LAION's spirit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlmaudit.match.banks import Bank
from vlmaudit.match.index import build

COLUMNS = ["shard", "key", "url", "image_sha256", "image_md5", "image_pdq", "image_pdq_quality"]
HASH_COLUMN = {"pdq": "image_pdq", "md5": "image_md5", "sha256": "image_sha256"}
OUTPUT = ["key", "shard", "url", "bank", "bank_entry_id", "distance", "kind", "image_hash"]


@dataclass
class MatchOptions:
    max_distance: int = 31
    min_quality: int = 50
    batch_rows: int = 65536


@dataclass
class MatchResult:
    rows: dict = field(default_factory=lambda: {name: [] for name in OUTPUT})
    scanned: int = 0
    no_hashes: int = 0  # rows without the column a bank needs (older reports, --no-hashes, no image)
    low_quality: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for bank in self.rows["bank"]:
            out[bank] = out.get(bank, 0) + 1
        return out

    def table(self):
        import pyarrow as pa

        types = {"distance": pa.int16()}
        return pa.table({name: pa.array(values, types.get(name, pa.string())) for name, values in self.rows.items()})


def match_batches(batches, banks: list[Bank], options: MatchOptions, progress=None) -> MatchResult:
    indexes = [(bank, build(bank, options.max_distance)) for bank in banks]
    result = MatchResult()
    for batch in batches:
        result.scanned += batch.num_rows
        before = len(result.rows["key"])
        for bank, index in indexes:
            _match_one(batch, bank, index, options, result)
        if progress:  # progress(rows, matches in them): vlmaudit.progress displays' batch()
            progress(batch.num_rows, len(result.rows["key"]) - before)
    return result


def _match_one(batch, bank: Bank, index, options: MatchOptions, result: MatchResult) -> None:
    name = HASH_COLUMN[bank.kind]
    if name not in batch.schema.names:
        result.no_hashes += batch.num_rows
        return
    column = batch.column(name)
    if bank.kind == "pdq":
        rows, found, distances = _pdq_hits(batch, column, index, options, result)
    else:
        rows, found = index.search(column)
        distances = np.zeros(len(rows), np.int16)
    _append(batch, column, bank, rows, found, distances, result)


def _pdq_hits(batch, column, index, options: MatchOptions, result: MatchResult):
    import pyarrow.compute as pc

    quality = batch.column("image_pdq_quality").to_numpy(zero_copy_only=False)
    present = pc.is_valid(column).to_numpy(zero_copy_only=False)
    good = present & (np.nan_to_num(quality.astype(np.float64), nan=-1) >= options.min_quality)
    result.low_quality += int((present & ~good).sum())
    positions = np.flatnonzero(good)
    if positions.size == 0:
        return positions, positions, np.zeros(0, np.int16)
    import pyarrow as pa

    chosen = column.take(pa.array(positions)).cast(pa.binary())
    queries = np.frombuffer(b"".join(chosen.to_pylist()), np.uint8).reshape(-1, 32)
    rows, found, distances = index.search(queries)
    return positions[rows], found, distances


def _append(batch, column, bank: Bank, rows, found, distances, result: MatchResult) -> None:
    if len(rows) == 0:
        return
    import pyarrow as pa

    take = pa.array(rows)
    out = result.rows
    out["key"] += batch.column("key").take(take).to_pylist()
    out["shard"] += batch.column("shard").take(take).to_pylist()
    out["url"] += batch.column("url").take(take).to_pylist()
    out["bank"] += [bank.name] * len(rows)
    out["bank_entry_id"] += [bank.ids[i] for i in found]
    out["distance"] += [int(d) for d in distances]
    out["kind"] += [bank.kind] * len(rows)
    out["image_hash"] += [v.hex() for v in column.take(take).cast(pa.binary()).to_pylist()]
