"""The main scan loop: prepared batches from DataLoader workers -> model -> rows -> shard files.

`scan_shard` is the unit of work: callable from the local loop, a Ray task or a SLURM array job.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from vlmaudit.scan.escalation import refine_shard
from vlmaudit.scan.loader import iter_prepared
from vlmaudit.scan.rows import RowBuilder
from vlmaudit.scan.scorer import Scorer
from vlmaudit.scan.worker import PreparedBatch, ScanSettings, ShardJob
from vlmaudit.scan.writer import ShardWriter, as_location, parquet_name, stats_name
from vlmaudit.storage.location import redact
from vlmaudit.schema import SampleStatus, ShardStatus


class NullProgress:
    def batch(self, rows: int, flagged: int) -> None: ...

    def shard_done(self, name: str, status: str) -> None: ...


@dataclass
class ScanResult:
    shards: dict[str, str] = field(default_factory=dict)  # name -> complete/truncated/failed/skipped
    rows: int = 0
    flagged: int = 0
    permanent: set = field(default_factory=set)  # failed shards that a re-run cannot fix

    @property
    def failed(self) -> list[str]:
        return [name for name, status in self.shards.items() if status == ShardStatus.FAILED]

    @property
    def skipped(self) -> list[str]:
        """Shards another writer held (or finished) when this one reached them."""
        return [name for name, status in self.shards.items() if status == ShardStatus.SKIPPED]

    def merge(self, other: ScanResult) -> None:
        self.shards.update(other.shards)
        self.permanent |= other.permanent
        self.rows, self.flagged = self.rows + other.rows, self.flagged + other.flagged


class Scanner:
    def __init__(self, backend: Scorer, rules, out_dir, settings: ScanSettings, schema, progress=None, decoder=None,
                 summarizer=None):
        """out_dir: a local directory or an fsspec URL (s3://bucket/prefix). summarizer: see ShardWriter."""
        self.backend, self.out, self.settings = backend, as_location(out_dir), settings
        info = backend.describe()
        model_tag = f"{info['model']}@{info['revision']}"
        self.rows = RowBuilder(rules.taxonomy, rules.thresholds, schema, model_tag)
        self.schema, self.progress, self.summarizer = schema, progress or NullProgress(), summarizer
        self.writers: dict[str, ShardWriter] = {}
        self.held: dict[str, list] = {}  # first-stage rows of a shard with a second stage, until it ends
        self.skipping: set[str] = set()
        self.timing: dict[str, dict] = {}
        self.on_cuda = str(backend.device).startswith("cuda")
        if decoder is None and settings.decode == "gpu":
            decoder = _gpu_decoder(backend, settings)
        self.decoder = decoder  # completes batches whose JPEGs the workers left for the GPU

    def run(self, jobs: list[ShardJob]) -> ScanResult:
        result = ScanResult()
        batches = iter_prepared(jobs, self.backend.preprocessor, self.settings, pin_memory=self.on_cuda)
        try:
            with self._decoded(batches) as ready:
                for batch in ready:
                    self._handle(batch, result)
        finally:
            self.abort_open()
        return result

    def _decoded(self, batches):
        """BATCHES as they come, or with their deferred JPEGs decoded on the device one batch
        ahead of the model (decode overlaps the forward pass)."""
        if self.decoder is None:
            return contextlib.nullcontext(batches)
        from vlmaudit.scan.decode_ahead import DecodedAhead

        return DecodedAhead(batches, self.decoder)

    def _handle(self, batch: PreparedBatch, result: ScanResult) -> None:
        name = batch.job.name
        writer = self.writers.get(name) or self._open(name, batch.job.takeover)
        if writer is None:
            self._skip(batch, result)
            return
        timing = self.timing[name]
        timing["prep"] += batch.prep_seconds
        started = time.perf_counter()
        image_scores, caption_scores, extras = score_batch(self.backend, batch)
        timing["model"] += time.perf_counter() - started
        record = self.rows.build(name, batch.metas, image_scores, caption_scores, extras, self.backend.stage)
        if self.backend.escalation is None:
            writer.add(record)
        else:  # the second stage rewrites rows once the shard's first stage is complete
            self.held.setdefault(name, []).append(record)
            writer.heartbeat()
        flagged = sum(1 for v in record.column("flagged").to_pylist() if v)
        result.rows, result.flagged = result.rows + record.num_rows, result.flagged + flagged
        self.progress.batch(record.num_rows, flagged)
        if batch.final:
            self._finish(batch, writer, result)

    def _open(self, name: str, takeover: tuple[str, int] | None = None) -> ShardWriter | None:
        if name in self.skipping:
            return None
        writer = ShardWriter.claim_shard(self.out, name, self.schema, rescan_done=self.settings.overwrite,
                                         takeover=takeover, summarizer=self.summarizer)
        if writer is None:
            self.skipping.add(name)
            return None
        self.writers[name] = writer
        self.timing[name] = {"prep": 0.0, "model": 0.0, "wall_start": time.time()}
        return writer

    def _skip(self, batch: PreparedBatch, result: ScanResult) -> None:
        """Another writer holds this shard (or finished it meanwhile): drop its batches."""
        if batch.final:
            self.skipping.discard(batch.job.name)
            result.shards[batch.job.name] = ShardStatus.SKIPPED
            self.progress.shard_done(batch.job.name, ShardStatus.SKIPPED)

    def _finish(self, batch: PreparedBatch, writer: ShardWriter, result: ScanResult) -> None:
        name, end = batch.job.name, batch.end
        stats = self._stats(batch.job, end, self.timing.pop(name))
        del self.writers[name]
        held = self.held.pop(name, [])
        if end.status == ShardStatus.FAILED:
            writer.fail(stats)
        else:
            try:
                if self.backend.escalation is not None:
                    self._refine(batch.job, held, stats, writer)
                writer.commit(stats)
            except BaseException:
                _abort_quietly(writer)  # e.g. the disk is full: no temporary file left, nothing marked done
                raise
        result.shards[name] = end.status
        if end.status == ShardStatus.FAILED and end.permanent:
            result.permanent.add(name)
        self.progress.shard_done(name, end.status)

    def _refine(self, job: ShardJob, held: list, stats: dict, writer: ShardWriter) -> None:
        """The backend's shard-level second pass (cascade) over the shard's first-stage rows, timed
        into its stats; the refined table then goes to the writer, which writes it once."""
        import pyarrow as pa

        started = time.perf_counter()
        table = pa.Table.from_batches(held, schema=self.schema)
        table, info = refine_shard(self.backend.escalation, job, table, self.settings, self.rows, score_batch)
        stats["seconds"]["second_stage"] = round(time.perf_counter() - started, 4)
        stats.update(info)
        for record in table.to_batches():
            writer.add(record)

    def _stats(self, job: ShardJob, end, timing: dict) -> dict:
        from vlmaudit import __version__

        wall = time.time() - timing["wall_start"]
        return {
            "shard": job.name, "url": redact(job.url), "status": end.status, "error": end.error and redact(end.error),
            "failure": None if end.status != ShardStatus.FAILED else "permanent" if end.permanent else "transient",
            "members_ignored": end.members_ignored, "ignored_kinds": end.ignored_kinds,
            "seconds": {"wall": round(wall, 4), "model": round(timing["model"], 4),
                        "decode_preprocess_workers": round(timing["prep"], 4)},
            "started_at": timing["wall_start"], "finished_at": time.time(), "vlmaudit_version": __version__,
        }

    def abort_open(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()
        self.held.clear()


def _abort_quietly(writer: ShardWriter) -> None:
    try:
        writer.abort()
    except Exception:
        pass  # the original error is the one to report


def _gpu_decoder(backend, settings: ScanSettings):
    from vlmaudit.scan.gpu_decode import GpuJpegDecoder

    return GpuJpegDecoder(backend.preprocessor, backend.device, settings.max_pixels)


def score_batch(backend, batch: PreparedBatch):
    """(image scores, caption scores, extras) of a prepared batch. When the model fails (e.g. out
    of memory) the batch's rows record it as inference_error and the run goes on."""
    if not batch.inputs:
        return None, None, {}
    try:
        image, caption, *extras = backend.score(batch.inputs)
        return image, caption, (extras[0] if extras else {})
    except Exception as exc:
        for meta in batch.metas:
            if meta.image_row >= 0 or meta.caption_row >= 0:
                meta.status, meta.error = SampleStatus.INFERENCE_ERROR, f"{type(exc).__name__}: {exc}"[:500]
                meta.image_row = meta.caption_row = -1
        return None, None, {}


def scan_shard(job: ShardJob, backend, rules, out_dir, settings: ScanSettings, schema, summarizer=None) -> list[str]:
    """Scan one shard in this process (no worker processes) and return where its files are."""
    from dataclasses import replace

    out = as_location(out_dir)
    Scanner(backend, rules, out, replace(settings, workers=0), schema, summarizer=summarizer).run([job])
    return [out.url(f) for f in (parquet_name(job.name), stats_name(job.name)) if out.exists(f)]
