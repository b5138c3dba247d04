"""Which re-read samples are the ones that were scanned and kept: the kept rows of a shard (key and,
when the report stores it, the scanned image's SHA-256) and what did not match, counted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Kept:
    """The kept rows of one shard: {sample_index: key} and, when the report stores the scanned
    image's SHA-256 (`image_sha256`), {sample_index: digest} for rows that have one."""

    keys: dict[int, str]
    digests: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Damage:
    """What did not match the scanned data in one re-read shard."""

    mismatched: int = 0
    missing: int = 0
    source_error: str | None = None
    non_regular: int = 0

    def __bool__(self) -> bool:
        return bool(self.mismatched or self.missing)

    def describe(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.mismatched, "differ from the scanned sample (key or image digest)"),
                                               (self.missing, "missing")) if n]
        if self.source_error and self.missing:
            parts.append(f"source damaged: {self.source_error}")
        return ", ".join(parts)


def kept_samples(keep_file: Path, report_dir: Path, shard: str) -> Kept:
    import pyarrow.parquet as pq

    table = pq.read_table(keep_file, columns=["sample_index", "key"], filters=[("shard", "=", shard)])
    kept = Kept(dict(zip(table.column("sample_index").to_pylist(), table.column("key").to_pylist(), strict=True)))
    with pq.ParquetFile(Path(report_dir) / f"{shard}.parquet") as report:  # one footer read for schema and rows
        hashed = "image_sha256" in report.schema_arrow.names
        digests = report.read(columns=["sample_index", "image_sha256"], use_threads=False) if hashed else None
    if digests is not None:
        kept.digests = {i: d for i, d in zip(digests.column("sample_index").to_pylist(),
                                             digests.column("image_sha256").to_pylist(), strict=True)
                        if d is not None and i in kept.keys}
    return kept


def same_sample(kept: Kept, index: int, key: str, image: bytes | None) -> bool:
    """The re-read sample at `index` is the one scanned: same key and, when the report has its
    image's SHA-256, the same image bytes. An image not re-read (over --max-member-bytes: left
    out of the written sample, counted) cannot be compared and writes nothing unchecked."""
    if kept.keys.get(index) != key:
        return False
    digest = kept.digests.get(index)
    return digest is None or image is None or hashlib.sha256(image).digest() == bytes(digest)
