"""Find and read a report directory: Parquet files, their footer metadata, per-shard stats."""

from __future__ import annotations

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.schema import read_meta


def report_files(report_dir) -> list:
    """The reports' Parquet files: Paths for a local directory, redacted URL strings for an
    fsspec URL (s3://bucket/prefix); open them with `open_report`."""
    from vlmaudit.storage.location import Location

    where = Location(report_dir)
    if not where.is_dir():
        raise UserError(f"{where}: not a directory")
    names = where.names(".parquet")
    if not names:
        raise UserError(f"{where}: no Parquet reports here (run `vlmaudit scan ... --out {where}` first)")
    return [where.local(n) if not where.remote else where.url(n) for n in names]


def open_report(path):
    """A pyarrow-readable source for one report file: the path itself, or an fsspec file."""
    from vlmaudit.storage.location import filesystem, is_url

    if not is_url(str(path)):
        return path
    fs, inner = filesystem(str(path))
    return fs.open(inner, "rb")


def read_report_meta(files: list) -> dict:
    import pyarrow.parquet as pq

    meta = read_meta(pq.read_schema(open_report(files[0])))
    if not meta.get("concepts"):
        raise UserError(f"{files[0]}: not a vlmaudit report (no taxonomy in its metadata)")
    return meta


def read_stats(report_dir) -> dict[str, dict]:
    """Per-shard stats by shard name (a local directory or an fsspec URL); unreadable, oversized
    or non-object files are left out."""
    from vlmaudit.storage.location import Location

    where = Location(report_dir)
    out = {}
    for name in where.names(".stats.json"):
        stats = where.read_json(name)
        if isinstance(stats, dict):
            out[name[: -len(".stats.json")]] = stats
    return out


def iter_batches(files: list, columns: list[str], batch_size: int = 131072):
    import pyarrow.parquet as pq

    for path in files:
        yield from pq.ParquetFile(open_report(path)).iter_batches(batch_size=batch_size, columns=columns,
                                                                  use_threads=False)


def score_matrix(column, n_concepts: int) -> np.ndarray:
    """list<float32> column -> float32 [n, C] with NaN rows where the list is null (zero-copy
    when no list is null)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = np.asarray(column.offsets)
    values = np.asarray(column.values)[offsets[0]: offsets[-1]]
    valid = np.asarray(column.is_valid()) if column.null_count else None
    n_valid = len(column) if valid is None else int(valid.sum())
    if values.size != n_valid * n_concepts or (valid is not None and (np.diff(offsets)[~valid] != 0).any()):
        raise UserError(f"score lists do not have {n_concepts} entries: report written with another taxonomy?")
    if valid is None:
        return values.reshape(-1, n_concepts)
    out = np.full((len(column), n_concepts), np.nan, np.float32)
    out[valid] = values.reshape(-1, n_concepts)
    return out
