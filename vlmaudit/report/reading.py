"""Find and read a report directory: Parquet files, their footer metadata, per-shard stats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.schema import read_meta


def is_url(path) -> bool:
    return "://" in str(path)


def open_input(path):
    """A binary file object for a local path or an fsspec URL (s3://...)."""
    if is_url(path):
        import fsspec

        return fsspec.open(str(path), "rb").open()
    return open(path, "rb")


def _url_listing(report_dir: str, pattern: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(report_dir.rstrip("/"))
    protocol = report_dir.split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in fs.glob(f"{root}/{pattern}") if not p.rsplit("/", 1)[-1].startswith("."))


def report_files(report_dir: Path) -> list[Path]:
    if is_url(report_dir):
        files = _url_listing(str(report_dir), "*.parquet")
        if not files:
            raise UserError(f"{report_dir}: no Parquet reports here")
        return files
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise UserError(f"{report_dir}: not a directory")
    files = sorted(p for p in report_dir.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise UserError(f"{report_dir}: no Parquet reports here (run `vlmaudit scan ... --out {report_dir}` first)")
    return files


def read_report_meta(files: list[Path]) -> dict:
    import pyarrow.parquet as pq

    with open_input(files[0]) as handle:
        meta = read_meta(pq.read_schema(handle))
    if not meta.get("concepts"):
        raise UserError(f"{files[0]}: not a vlmaudit report (no taxonomy in its metadata)")
    return meta


def read_stats(report_dir: Path) -> dict[str, dict]:
    out = {}
    paths = _url_listing(str(report_dir), "*.stats.json") if is_url(report_dir) else sorted(Path(report_dir).glob("*.stats.json"))
    for path in paths:
        try:
            with open_input(path) as handle:
                out[str(path).rsplit("/", 1)[-1][: -len(".stats.json")]] = json.loads(handle.read())
        except (OSError, ValueError):
            continue
    return out


def iter_batches(files: list[Path], columns: list[str], batch_size: int = 131072):
    import pyarrow.parquet as pq

    for path in files:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns, use_threads=False)


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
