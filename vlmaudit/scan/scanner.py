"""The main scan loop: prepared batches from DataLoader workers -> model -> rows -> shard files.

`scan_shard` is the unit of work: callable from the local loop, a Ray task or a SLURM array job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from vlmaudit.scan.escalation import has_second_stage, refine_shard
from vlmaudit.scan.loader import iter_prepared
from vlmaudit.scan.rows import RowBuilder
from vlmaudit.scan.worker import PreparedBatch, ScanSettings, ShardJob
from vlmaudit.scan.writer import ShardWriter, parquet_path, stats_path, write_json_atomic


class NullProgress:
    def batch(self, rows: int, flagged: int) -> None: ...

    def shard_done(self, name: str, status: str) -> None: ...


@dataclass
class ScanResult:
    shards: dict[str, str] = field(default_factory=dict)  # name -> complete/truncated/failed
    rows: int = 0
    flagged: int = 0

    @property
    def failed(self) -> list[str]:
        return [name for name, status in self.shards.items() if status == "failed"]


class Scanner:
    def __init__(self, backend, rules, out_dir: Path, settings: ScanSettings, schema, progress=None, decoder=None):
        self.backend, self.out_dir, self.settings = backend, Path(out_dir), settings
        info = backend.describe()
        model_tag = f"{info['model']}@{info['revision']}"
        self.rows = RowBuilder(rules.taxonomy, rules.thresholds, schema, model_tag)
        self.schema, self.progress = schema, progress or NullProgress()
        self.writers: dict[str, ShardWriter] = {}
        self.timing: dict[str, dict] = {}
        self.on_cuda = str(getattr(backend, "device", "cpu")).startswith("cuda")
        if decoder is None and settings.decode == "gpu":
            decoder = _gpu_decoder(backend, settings)
        self.decoder = decoder  # completes batches whose JPEGs the workers left for the GPU

    def run(self, jobs: list[ShardJob]) -> ScanResult:
        result = ScanResult()
        try:
            for batch in iter_prepared(jobs, self.backend.preprocessor, self.settings, pin_memory=self.on_cuda):
                self._handle(batch, result)
        finally:
            self.abort_open()
        return result

    def _handle(self, batch: PreparedBatch, result: ScanResult) -> None:
        name = batch.job.name
        writer = self.writers.get(name) or self._open(name)
        timing = self.timing[name]
        timing["prep"] += batch.prep_seconds
        started = time.perf_counter()
        if self.decoder is not None:
            self.decoder.complete(batch)
        image_scores, caption_scores, extras = score_batch(self.backend, batch)
        timing["model"] += time.perf_counter() - started
        stage = getattr(self.backend, "stage", self.backend.name)
        record = self.rows.build(name, batch.metas, image_scores, caption_scores, extras, stage)
        writer.add(record)
        flagged = sum(1 for v in record.column("flagged").to_pylist() if v)
        result.rows, result.flagged = result.rows + record.num_rows, result.flagged + flagged
        self.progress.batch(record.num_rows, flagged)
        if batch.final:
            self._finish(batch, writer, result)

    def _open(self, name: str) -> ShardWriter:
        self.writers[name] = ShardWriter(self.out_dir, name, self.schema, hold=has_second_stage(self.backend))
        self.timing[name] = {"prep": 0.0, "model": 0.0, "wall_start": time.time()}
        return self.writers[name]

    def _finish(self, batch: PreparedBatch, writer: ShardWriter, result: ScanResult) -> None:
        name, end = batch.job.name, batch.end
        stats = self._stats(batch.job, end, self.timing.pop(name))
        del self.writers[name]
        if end.status == "failed":
            writer.abort()
            stats.update(rows=0, status_counts={}, flagged={"image": 0, "caption": 0, "any": 0})
            write_json_atomic(stats_path(self.out_dir, name), stats)
        else:
            writer.commit(stats, self._refiner(batch.job, stats))
        result.shards[name] = end.status
        self.progress.shard_done(name, end.status)

    def _refiner(self, job: ShardJob, stats: dict):
        """The backend's shard-level second pass (cascade), timed into the shard's stats."""
        if not has_second_stage(self.backend):
            return None

        def refine(table):
            started = time.perf_counter()
            table, info = refine_shard(self.backend, job, table, self.settings, self.rows, score_batch)
            stats["seconds"]["second_stage"] = round(time.perf_counter() - started, 4)
            stats.update(info)
            return table

        return refine

    def _stats(self, job: ShardJob, end, timing: dict) -> dict:
        from vlmaudit import __version__

        wall = time.time() - timing["wall_start"]
        return {
            "shard": job.name, "url": job.url, "status": end.status, "error": end.error,
            "members_ignored": end.members_ignored, "ignored_kinds": end.ignored_kinds,
            "seconds": {"wall": round(wall, 4), "model": round(timing["model"], 4),
                        "decode_preprocess_workers": round(timing["prep"], 4)},
            "started_at": timing["wall_start"], "finished_at": time.time(), "vlmaudit_version": __version__,
        }

    def abort_open(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()


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
                meta.status, meta.error = "inference_error", f"{type(exc).__name__}: {exc}"[:500]
                meta.image_row = meta.caption_row = -1
        return None, None, {}


def scan_shard(job: ShardJob, backend, rules, out_dir: Path, settings: ScanSettings, schema) -> list[Path]:
    """Scan one shard in this process (no worker processes) and return the files written."""
    from dataclasses import replace

    Scanner(backend, rules, out_dir, replace(settings, workers=0), schema).run([job])
    files = [parquet_path(Path(out_dir), job.name), stats_path(Path(out_dir), job.name)]
    return [f for f in files if f.exists()]
