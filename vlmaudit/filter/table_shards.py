"""Write a filtered copy of a Parquet/Arrow shard: the kept rows (row index = sample_index), every
column, the input's schema and schema metadata (e.g. the `huggingface` features), streamed by
record batch through the scanner's own table reader, under a temporary name renamed when complete."""

from __future__ import annotations

import os
from pathlib import Path

from vlmaudit.filter.matching import Damage, same_sample
from vlmaudit.scan.parquet_source import _stem, is_table_shard, open_table, table_errors
from vlmaudit.scan.tario import open_stream
from vlmaudit.storage.localfiles import temp_path

ROW_GROUP_BYTES = 64 << 20


def table_target(out_dir: Path, name: str, url: str) -> Path:
    """OUT/NAME.parquet for Parquet input, OUT/NAME.arrow for Arrow input."""
    return Path(out_dir) / f"{name}{'.arrow' if url.lower().endswith('.arrow') else '.parquet'}"


def write_table_shard(url: str, kept, target: Path):
    """Copy the kept rows (`kept`: matching.Kept) of the table at `url` to `target` (same format),
    each checked against the scanned row by key and, when known, image SHA-256; returns (rows
    written, matching.Damage). A table with any damage is not written."""
    assert is_table_shard(url)
    partial, damage = temp_path(target, "partial"), Damage()
    stream = open_stream(url)
    try:
        schema, batches = open_table(stream, url)
        columns = _columns(schema, url)
        with _TableWriter(partial, schema, url) as sink:
            written = sink.copy(_kept(batches(schema.names), kept, columns, _stem(url), damage))
        damage.missing = len(kept.keys) - written - damage.mismatched
        if not damage:
            os.replace(partial, target)
    except table_errors() as exc:
        damage.missing, damage.source_error = len(kept.keys), f"{type(exc).__name__}: {exc}"[:300]
        written = 0
    finally:
        stream.close()
        partial.unlink(missing_ok=True)
    return (0 if damage else written), damage


def _columns(schema, url: str):
    """The scanner's column choice for this table (the defaults: the report does not record flags)."""
    from vlmaudit.errors import UserError
    from vlmaudit.scan.parquet_source import ColumnChoice, resolve_columns

    try:
        return resolve_columns(schema, url, ColumnChoice())
    except UserError:
        return None


def _kept(batches, kept, columns, stem: str, damage):
    """Batches of the kept rows whose key and image match what was scanned; others are counted."""
    import pyarrow as pa

    start = 0
    try:
        for batch in batches:
            wanted = [i for i in range(batch.num_rows) if start + i in kept.keys]
            good = [i for i in wanted if _matches(batch, i, start + i, kept, columns, stem, same_sample)]
            damage.mismatched += len(wanted) - len(good)
            start += batch.num_rows
            if good:
                yield batch.take(pa.array(good, pa.int64()))
    except table_errors() as exc:
        damage.source_error = f"damaged after {start} rows: {type(exc).__name__}"


def _matches(batch, i: int, index: int, kept, columns, stem: str, same_sample) -> bool:
    from vlmaudit.scan.parquet_source import row_sample

    if columns is None:
        return False
    row = batch.slice(i, 1).select(columns.names()).to_pylist()[0]
    sample = row_sample(row, index, columns, stem, 1 << 62, 1)
    return same_sample(kept, index, sample.key, sample.image)


class _TableWriter:
    """Parquet: kept batches gathered into row groups of about ROW_GROUP_BYTES; Arrow: an IPC
    stream (what `datasets.save_to_disk` writes), whichever IPC flavour the input was."""

    def __init__(self, path: Path, schema, url: str):
        self.path, self.schema, self.arrow = path, schema, url.lower().endswith(".arrow")

    def __enter__(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from vlmaudit.storage.localfiles import create_exclusive

        self.handle = create_exclusive(self.path)  # a fresh file, never through a planted symlink
        self.sink = pa.ipc.new_stream(self.handle, self.schema) if self.arrow else pq.ParquetWriter(
            self.handle, self.schema)
        return self

    def copy(self, batches) -> int:
        import pyarrow as pa

        pending, size, written = [], 0, 0
        for batch in batches:
            pending.append(batch)
            size, written = size + batch.nbytes, written + batch.num_rows
            if size >= ROW_GROUP_BYTES or self.arrow:
                self.sink.write_table(pa.Table.from_batches(pending, self.schema))
                pending, size = [], 0
        if pending:
            self.sink.write_table(pa.Table.from_batches(pending, self.schema))
        return written

    def __exit__(self, *exc):
        try:
            self.sink.close()
        finally:
            self.handle.close()
        return False
