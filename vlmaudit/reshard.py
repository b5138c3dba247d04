"""Write filtered webdataset shards: the kept samples' members copied byte for byte, streaming,
each shard under a temporary name renamed when complete, plus an img2dataset-style Parquet."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from vlmaudit.reports import read_stats
from vlmaudit.samples import split_name
from vlmaudit.tario import open_stream


def kept_indices(keep_file: Path, shard: str) -> set[int]:
    import pyarrow.parquet as pq

    table = pq.read_table(keep_file, columns=["sample_index"], filters=[("shard", "=", shard)])
    return set(table.column("sample_index").to_pylist())


def iter_raw_samples(url: str):
    """(sample_index, [(TarInfo, bytes)]) grouped exactly as the scanner groups members."""
    stream = open_stream(url)
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*")
        current_key, members, index = None, [], -1
        for info in tf:
            tf.members = []
            if not info.isfile():
                continue
            name = info.name[2:] if info.name.startswith("./") else info.name
            key = split_name(name)[0]
            if key != current_key:
                if members:
                    yield index, members
                current_key, members, index = key, [], index + 1
            members.append((info, tf.extractfile(info).read()))
        if members:
            yield index, members
    finally:
        stream.close()


def write_shard(url: str, keep: set[int], target: Path) -> int:
    partial = target.with_name(f".{target.name}.partial")
    written = 0
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:
        for index, members in iter_raw_samples(url):
            if index in keep:
                for info, data in members:
                    out.addfile(info, io.BytesIO(data))
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
        counts[name] = write_shard(stats["url"], keep, out_dir / f"{name}.tar")  # uncompressed, even from .tar.gz
        write_kept_parquet(keep_file, name, out_dir / f"{name}.parquet")
    return counts
