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
from vlmaudit.filter.matching import Damage, Kept, kept_samples, same_sample
from vlmaudit.filter.table_shards import table_target, write_table_shard
from vlmaudit.report.reportset import listing_of
from vlmaudit.report.reread import ReReadOptions, iter_raw_samples, shard_sources
from vlmaudit.scan.parquet_source import is_table_shard
from vlmaudit.scan.samples import IMAGE_EXTS, member_key
from vlmaudit.scan.tario import TarEnd
from vlmaudit.storage.localfiles import create_exclusive, temp_path
from vlmaudit.schema import ShardStatus


def _image_bytes(members) -> bytes | None:
    """The image the scanner used: the first member with an image extension."""
    for member in members:
        if member_key(member.name)[1] in IMAGE_EXTS:
            return member.data
    return None


def regular(info: tarfile.TarInfo) -> bool:
    """A plain file member: sparse, contiguous and every other special type are never copied."""
    return info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and info.sparse is None


def write_shard(url: str, kept: Kept, target: Path, max_member_bytes: int) -> tuple[int, int, Damage]:
    """(samples written, members left out because they were over the size limit, damage). A shard
    with any damage is not written: its temporary file is removed."""
    partial = temp_path(target, "partial")
    written = skipped = 0
    damage, end, seen = Damage(), TarEnd(), set()
    try:
        with create_exclusive(partial) as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as out:
            for index, key, members in iter_raw_samples(url, max_member_bytes, end):
                if index not in kept.keys:
                    continue
                seen.add(index)
                if not same_sample(kept, index, key, _image_bytes(members)):
                    damage.mismatched += 1
                    continue
                for member in members:
                    if not regular(member.info):
                        damage.non_regular += 1
                    elif member.data is None:
                        skipped += 1
                    else:
                        out.addfile(member.info, io.BytesIO(member.data))
                written += 1
        damage.missing = len(kept.keys.keys() - seen)
        damage.source_error = end.error
        if not damage:
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return written, skipped, damage


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
    partial = temp_path(target, "partial")
    try:
        with create_exclusive(partial) as handle:
            pq.write_table(table, handle)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_filtered_shards(report_dir: Path, keep_file: Path, out_dir: Path, options: ReReadOptions,
                          progress=None) -> dict:
    """For every finished shard of the report: NAME.tar with the kept samples, NAME.parquet.
    Returns {"samples": {name: written}, "skipped_members": n}. `progress`: ProgressOptions."""
    listing = listing_of(report_dir)  # an opened ReportSet's listing and stats, else listed here
    stats, present = listing.stats(), listing.shard_names()
    names = [n for n, s in stats.items() if s.get("status") != ShardStatus.FAILED and n in present]
    sources, refused = shard_sources(listing, names, options)
    if refused:
        shown = "; ".join(f"{n}: {why}" for n, why in list(refused.items())[:3])
        raise UserError(f"--write-shards: {len(refused)} shard(s) will not be re-read: {shown}")
    from vlmaudit.scan.folder_source import is_folder_shard

    folders = [n for n in names if is_folder_shard(sources[n])]
    if folders:
        raise UserError(f"--write-shards: {folders[0]} was scanned from a loose image folder; only tar and "
                        "Parquet/Arrow shards are rewritten (the keep list names the kept files by key)")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, skipped, damaged, non_regular = {}, 0, {}, 0
    for name in _reported(names, stats, counts, progress):
        kept = kept_samples(keep_file, listing.location, name)
        try:
            if is_table_shard(sources[name]):  # Parquet/Arrow input: a filtered copy, every column kept
                counts[name], damage = write_table_shard(sources[name], kept, table_target(out_dir, name, sources[name]))
            else:
                counts[name], left_out, damage = write_shard(sources[name], kept, out_dir / f"{name}.tar",
                                                             options.max_member_bytes)
                skipped += left_out
        except OSError as exc:
            raise UserError(f"{name}: cannot re-read {sources[name]}: {exc.strerror or exc}") from None
        non_regular += damage.non_regular
        if damage:
            damaged[name], counts[name] = damage, 0
        elif not is_table_shard(sources[name]):
            write_kept_parquet(keep_file, name, out_dir / f"{name}.parquet")
    if damaged:
        shown = "; ".join(f"{n}: {d.describe()}" for n, d in list(damaged.items())[:5])
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        raise UserError(f"--write-shards: {len(damaged)} shard(s) not written, the re-read data is not what was "
                        f"scanned: {shown}{more} (name the scanned shards with --shards)")
    return {"samples": counts, "skipped_members": skipped, "non_regular_members": non_regular}
