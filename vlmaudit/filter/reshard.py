"""Write filtered webdataset shards: the kept samples' members copied byte for byte, streaming,
each shard under a temporary name renamed when complete, plus an img2dataset-style Parquet."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

from vlmaudit.filter.table_shards import table_target, write_table_shard
from vlmaudit.report.reading import read_stats
from vlmaudit.scan.parquet_source import is_table_shard
from vlmaudit.scan.samples import group_by_key
from vlmaudit.scan.tario import TarEnd, iter_members, open_stream


def kept_indices(keep_file: Path, shard: str) -> set[int]:
    import pyarrow.parquet as pq

    table = pq.read_table(keep_file, columns=["sample_index"], filters=[("shard", "=", shard)])
    return set(table.column("sample_index").to_pylist())


def iter_raw_samples(url: str):
    """(sample_index, key, members) with every member's header and bytes, grouped exactly as the
    scanner groups them; a damaged tar ends the iteration after its last intact member."""
    stream = open_stream(url)
    try:
        yield from group_by_key(iter_members(stream, TarEnd(), lambda name: True, sys.maxsize))
    finally:
        stream.close()


def write_shard(url: str, keep: set[int], target: Path) -> int:
    partial = target.with_name(f".{target.name}.partial")
    written = 0
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:
        for index, _, members in iter_raw_samples(url):
            if index in keep:
                for member in members:
                    out.addfile(member.info, io.BytesIO(member.data))
                written += 1
    os.replace(partial, target)
    return written


def write_kept_parquet(keep_file: Path, shard: str, target: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(keep_file, columns=["key", "url", "sample_index"], filters=[("shard", "=", shard)])
    partial = target.with_name(f".{target.name}.partial")
    pq.write_table(table, partial)
    os.replace(partial, target)


def write_filtered_shards(report_dir: Path, keep_file: Path, out_dir: Path) -> dict[str, int]:
    """For every finished shard of the report: NAME.tar with the kept samples, NAME.parquet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, stats in read_stats(report_dir).items():
        if stats.get("status") == "failed" or not (Path(report_dir) / f"{name}.parquet").is_file():
            continue
        keep = kept_indices(keep_file, name)
        if is_table_shard(stats["url"]):  # Parquet/Arrow input: a filtered copy, every column kept
            counts[name] = write_table_shard(stats["url"], keep, table_target(out_dir, name, stats["url"]))
            continue
        counts[name] = write_shard(stats["url"], keep, out_dir / f"{name}.tar")  # uncompressed, even from .tar.gz
        write_kept_parquet(keep_file, name, out_dir / f"{name}.parquet")
    return counts
