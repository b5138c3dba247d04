"""Write a filtered copy of a Parquet/Arrow shard: the kept rows (row index = sample_index), every
column, the input's schema and schema metadata (e.g. the `huggingface` features), streamed by
record batch through the scanner's own table reader, under a temporary name renamed when complete."""

from __future__ import annotations

import os
from pathlib import Path

from vlmaudit.scan.parquet_source import is_table_shard, open_table, table_errors
from vlmaudit.scan.tario import open_stream

ROW_GROUP_BYTES = 64 << 20


def table_target(out_dir: Path, name: str, url: str) -> Path:
    """OUT/NAME.parquet for Parquet input, OUT/NAME.arrow for Arrow input."""
    return Path(out_dir) / f"{name}{'.arrow' if url.lower().endswith('.arrow') else '.parquet'}"


def write_table_shard(url: str, keep: set[int], target: Path) -> int:
    """Copy the kept rows of the table at `url` to `target` (same format); returns rows written."""
    assert is_table_shard(url)
    partial = target.with_name(f".{target.name}.partial")
    stream = open_stream(url)
    try:
        schema, batches = open_table(stream, url)
        with _TableWriter(partial, schema, url) as sink:
            written = sink.copy(_kept(batches(schema.names), keep))
    finally:
        stream.close()
    os.replace(partial, target)
    return written


def _kept(batches, keep: set[int]):
    import pyarrow as pa

    start = 0
    try:
        for batch in batches:
            mask = pa.array([start + i in keep for i in range(batch.num_rows)], pa.bool_())
            start += batch.num_rows
            if mask.true_count:
                yield batch.filter(mask)
    except table_errors():
        return  # damaged after some rows: the report has no rows past the damage either


class _TableWriter:
    """Parquet: kept batches gathered into row groups of about ROW_GROUP_BYTES; Arrow: an IPC
    stream (what `datasets.save_to_disk` writes), whichever IPC flavour the input was."""

    def __init__(self, path: Path, schema, url: str):
        self.path, self.schema, self.arrow = path, schema, url.lower().endswith(".arrow")

    def __enter__(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.sink = pa.ipc.new_stream(str(self.path), self.schema) if self.arrow else pq.ParquetWriter(
            str(self.path), self.schema)
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
        self.sink.close()
        return False
