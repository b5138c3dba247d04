"""Write filtered webdataset shards: the kept samples' members copied byte for byte, streaming,
each shard under a temporary name renamed when complete, plus an img2dataset-style Parquet.

Which shards are re-read is decided by report/reread.py (the command line, never the report).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from vlmaudit.errors import UserError
from vlmaudit.filter.table_shards import table_target, write_table_shard
from vlmaudit.report.reading import read_stats
from vlmaudit.report.reread import ReReadOptions, iter_raw_samples, shard_sources
from vlmaudit.scan.parquet_source import is_table_shard
from vlmaudit.schema import ShardStatus


def kept_indices(keep_file: Path, shard: str) -> set[int]:
    import pyarrow.parquet as pq

    table = pq.read_table(keep_file, columns=["sample_index"], filters=[("shard", "=", shard)])
    return set(table.column("sample_index").to_pylist())


def write_shard(url: str, keep: set[int], target: Path, max_member_bytes: int) -> tuple[int, int]:
    """(samples written, members left out because they were over the size limit)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    written = skipped = 0
    try:
        with _exclusive(partial) as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as out:
            for index, _, members in iter_raw_samples(url, max_member_bytes):
                if index in keep:
                    for member in members:
                        if member.data is None:
                            skipped += 1
                            continue
                        out.addfile(member.info, io.BytesIO(member.data))
                    written += 1
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return written, skipped


def _exclusive(path: Path):
    """A new file opened for writing; fails rather than following a planted symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "wb")


def _reported(names: list[str], stats: dict, counts: dict, options):
    """`names`, one by one; after each shard the display counts its samples (from its stats),
    how many were written, and the shard."""
    from vlmaudit.progress import ProgressOptions

    total = sum(int(stats[name].get("rows") or 0) for name in names)
    with (options or ProgressOptions()).start("write-shards", shards=len(names), samples=total,
                                              flagged="written") as progress:
        for name in names:
            yield name
            progress.batch(int(stats[name].get("rows") or 0), counts.get(name, 0))
            progress.shard_done(name, ShardStatus.COMPLETE)


def write_kept_parquet(keep_file: Path, shard: str, target: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(keep_file, columns=["key", "url", "sample_index"], filters=[("shard", "=", shard)])
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with _exclusive(partial) as handle:
            pq.write_table(table, handle)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_filtered_shards(report_dir: Path, keep_file: Path, out_dir: Path, options: ReReadOptions,
                          progress=None) -> dict:
    """For every finished shard of the report: NAME.tar with the kept samples, NAME.parquet.
    Returns {"samples": {name: written}, "skipped_members": n}. `progress`: ProgressOptions."""
    stats = read_stats(report_dir)
    names = [n for n, s in stats.items() if s.get("status") != ShardStatus.FAILED and (Path(report_dir) / f"{n}.parquet").is_file()]
    sources, refused = shard_sources(report_dir, names, options)
    if refused:
        shown = "; ".join(f"{n}: {why}" for n, why in list(refused.items())[:3])
        raise UserError(f"--write-shards: {len(refused)} shard(s) will not be re-read: {shown}")
    from vlmaudit.scan.folder_source import is_folder_shard

    folders = [n for n in names if is_folder_shard(sources[n])]
    if folders:
        raise UserError(f"--write-shards: {folders[0]} was scanned from a loose image folder; only tar and "
                        "Parquet/Arrow shards are rewritten (the keep list names the kept files by key)")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, skipped = {}, 0
    for name in _reported(names, stats, counts, progress):
        keep = kept_indices(keep_file, name)
        if is_table_shard(sources[name]):  # Parquet/Arrow input: a filtered copy, every column kept
            counts[name] = write_table_shard(sources[name], keep, table_target(out_dir, name, sources[name]))
            continue
        try:
            counts[name], left_out = write_shard(sources[name], keep, out_dir / f"{name}.tar", options.max_member_bytes)
        except OSError as exc:
            raise UserError(f"{name}: cannot re-read {sources[name]}: {exc.strerror or exc}") from None
        skipped += left_out
        write_kept_parquet(keep_file, name, out_dir / f"{name}.parquet")
    return {"samples": counts, "skipped_members": skipped}
