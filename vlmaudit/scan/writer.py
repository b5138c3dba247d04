"""Write one shard's report so that crashes, retries and concurrent writers never corrupt it.

The stats JSON is written last: its presence marks the shard done (img2dataset's convention).
Before it, the shard's summary (scan.summary: NAME.hist.bin, then NAME.summary.json) is written
from the rows the writer kept, with the same temporary-name and rename rules.
Local --out: the Parquet goes to a unique hidden temporary file (created exclusively, never
through a symlink) and is renamed into place when complete; one writer claims a shard at a time
(.NAME.lock with owner and staleness), and if two still race, the atomic rename keeps one whole
file. Object stores (s3://...) have no rename: the Parquet is uploaded under its final name (an
object appears whole or not at all), then the stats.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmaudit.storage.localfiles import ShardClaim, create_exclusive, remove_abandoned_temps, temp_path, write_text_atomic
from vlmaudit.storage.location import Location
from vlmaudit.schema import DONE

ROW_GROUP_ROWS = 8192


def parquet_name(name: str) -> str:
    return f"{name}.parquet"


def stats_name(name: str) -> str:
    return f"{name}.stats.json"


def parquet_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / parquet_name(name)


def stats_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / stats_name(name)


def as_location(out) -> Location:
    return out if isinstance(out, Location) else Location(out)


def open_parquet_writer(where, schema):
    """zstd everywhere; score lists byte-stream-split and not dictionary-encoded (floats: smaller
    files and ~25% faster reads than plain zstd)."""
    import pyarrow.parquet as pq

    scores = [f.name for f in schema if f.name.endswith("_scores")]
    return pq.ParquetWriter(where, schema, compression="zstd",
                            use_dictionary=[f.name for f in schema if f.name not in scores],
                            use_byte_stream_split=[f"{name}.list.element" for name in scores])


def write_json_atomic(path: Path, data: dict) -> None:
    import json

    write_text_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True))


def shard_is_done(out, name: str) -> bool:
    out = as_location(out)
    stats = out.read_json(stats_name(name))
    return isinstance(stats, dict) and stats.get("status") in DONE and out.exists(parquet_name(name))


def _summary_meta(schema) -> dict | None:
    """The footer metadata a summary is computed with, or None for a schema that has no taxonomy."""
    from vlmaudit.schema import read_meta

    meta = read_meta(schema)
    needed = ("concepts", "concept_categories", "categories", "thresholds")
    return meta if all(meta.get(k) for k in needed) and "sample_index" in schema.names else None


class ShardWriter:
    """Buffers record batches into row groups of ~8k rows; counts rows per status and flags.
    Build it with `claim`, which returns None when another live writer holds the shard."""

    def __init__(self, out: Location, name: str, schema, claim: ShardClaim | None, summarizer=None):
        """summarizer(table, meta, name) -> (summary dict, hist bytes): writes NAME.summary.json and
        NAME.hist.bin at commit (None: no summary)."""
        self.out, self.name, self.schema, self.claim, self.summarizer = out, name, schema, claim, summarizer
        self.handle, self.partial = self._open_target()
        self.writer = open_parquet_writer(self.handle, schema)
        self.buffer, self.buffered = [], 0
        self.rows, self.status_counts = 0, {}
        self.flagged = {"image": 0, "caption": 0, "any": 0}
        self.kept, self.meta = [], _summary_meta(schema) if summarizer else None

    @classmethod
    def claim_shard(cls, out, name: str, schema, rescan_done: bool = True, takeover: tuple[str, int] | None = None,
                    summarizer=None):
        """A writer for shard NAME, or None when another live writer holds it (or, unless
        rescan_done, when it is already done). Stale stats are removed first: until this writer
        commits, the shard does not look done. `takeover`: (host, pid) of a writer known to be
        dead (a Ray actor the driver saw die): its claim is taken over at once."""
        out = as_location(out)
        claim = None
        if not out.remote:
            out.root.mkdir(parents=True, exist_ok=True)
            claim = ShardClaim.acquire(out.root, name, takeover)
            if claim is None:
                return None
            remove_abandoned_temps(out.root, name, takeover)
        if not rescan_done and shard_is_done(out, name):
            claim and claim.release()
            return None
        out.remove(stats_name(name))
        from vlmaudit.scan.summary import remove_summary

        remove_summary(out, name)
        return cls(out, name, schema, claim, summarizer)

    def _open_target(self):
        if self.out.remote:
            return self.out.open(parquet_name(self.name), "wb"), None
        partial = temp_path(self.out.local(parquet_name(self.name)), "partial")
        return create_exclusive(partial), partial

    def add(self, batch) -> None:
        self.buffer.append(batch)
        self.buffered += batch.num_rows
        self.heartbeat()
        self._count(batch)
        if self.buffered >= ROW_GROUP_ROWS:
            self._flush()

    def heartbeat(self) -> None:
        """Tell other writers this shard's claim is alive (also while the scanner holds its rows)."""
        if self.claim is not None:
            self.claim.heartbeat()

    def _count(self, batch) -> None:
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        if self.meta is not None:
            from vlmaudit.scan.summary import kept_columns

            self.kept.append(batch.select(kept_columns(self.schema)))
        for item in pc.value_counts(batch.column("status")).to_pylist():
            self.status_counts[item["values"]] = self.status_counts.get(item["values"], 0) + item["counts"]
        for key, column in (("image", "image_flagged"), ("caption", "caption_flagged"), ("any", "flagged")):
            self.flagged[key] += int(pc.sum(pc.fill_null(batch.column(column), False)).as_py() or 0)

    def _flush(self) -> None:
        import pyarrow as pa

        if self.buffer:
            self.writer.write_table(pa.Table.from_batches(self.buffer, schema=self.schema))
        self.buffer, self.buffered = [], 0

    def commit(self, stats: dict) -> list[str]:
        """Parquet into place, then the stats; returns where both are."""
        self._flush()
        self.writer.close()
        if self.partial is not None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.handle.close()
        if self.partial is not None:
            os.replace(self.partial, self.out.local(parquet_name(self.name)))
        self._write_summary()
        stats.update(rows=self.rows, status_counts=self.status_counts, flagged=self.flagged)
        self._finish(stats)
        return [self.out.url(parquet_name(self.name)), self.out.url(stats_name(self.name))]

    def _write_summary(self) -> None:
        if self.meta is None:
            return
        import pyarrow as pa

        from vlmaudit.scan.summary import kept_columns, write_summary

        schema = pa.schema([self.schema.field(c) for c in kept_columns(self.schema)])
        table = pa.Table.from_batches(self.kept, schema=schema)
        self.kept = []
        result = self.summarizer(table, self.meta, self.name)
        if result is None:  # damaged scores: no summary, so `report` reads the rows and names the file
            return
        summary, hist = result
        summary["footer_sha256"], summary["meta_sha256"] = self._footer_digests()
        write_summary(self.out, self.name, summary, hist)

    def _footer_digests(self) -> tuple[str, str]:
        """(schema.footer_digest, schema.meta_digest) of the committed Parquet file."""
        import pyarrow.parquet as pq

        from vlmaudit.schema import META_KEY, footer_digest, meta_digest

        with self.out.open(parquet_name(self.name), "rb") as handle:
            digest = footer_digest(handle)
            handle.seek(0)
            return digest, meta_digest(pq.ParquetFile(handle).schema_arrow.metadata[META_KEY])

    def fail(self, stats: dict) -> None:
        """The shard could not be read at all: no Parquet, only stats saying so."""
        self._discard()
        stats.update(rows=0, status_counts={}, flagged={"image": 0, "caption": 0, "any": 0})
        self._finish(stats)

    def _finish(self, stats: dict) -> None:
        try:
            self.out.write_json(stats_name(self.name), stats)
        finally:
            if self.claim is not None:
                self.claim.release()

    def abort(self) -> None:
        try:
            self._discard()
        finally:
            if self.claim is not None:
                self.claim.release()

    def _discard(self) -> None:
        if self.partial is None:  # object store: abandon the upload instead of finishing it
            self.writer.close()
            getattr(self.handle, "discard", lambda: None)()
            self.handle.closed = True
            return
        try:
            self.writer.close()
            self.handle.close()
        finally:
            self.partial.unlink(missing_ok=True)
