"""Benchmark: end-to-end scan throughput vs the bare model forward on the same samples.

The bare forward gets already-preprocessed tensors in memory (no tar reading, no decoding, no
Parquet), at the same batch size and precision: the ratio says how much the pipeline costs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def run_bench(model: str | None, size: str, shards: int, per_shard: int, batch_size: int, workers: int,
              device: str, precision: str) -> dict:
    from vlmaudit.demo.checkpoints import build_random_clip
    from vlmaudit.demo.build import build_demo_shards

    with tempfile.TemporaryDirectory(prefix="vlmaudit-bench-") as tmp:
        root = Path(tmp)
        paths = build_demo_shards(root / "shards", shards=shards, per_shard=per_shard)
        model = model or str(build_random_clip(root / "model", size=size))
        backend, rules = _backend(model, device, precision)
        bare = time_bare_forward(backend, paths, batch_size)
        end_to_end = time_scan(backend, rules, paths, root / "out", batch_size, workers)
    samples = shards * per_shard
    return {
        "model": model if "vlmaudit-bench-" not in model else f"random {size}", "samples": samples,
        "device": backend.device, "precision": backend.precision, "batch_size": batch_size, "workers": workers,
        "bare_forward_samples_per_s": samples / bare, "end_to_end_samples_per_s": samples / end_to_end,
        "ratio": bare / end_to_end,
    }


def _backend(model: str, device: str, precision: str):
    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules

    rules = load_rules()
    return ClipScorer(rules.taxonomy, ModelOptions(model, device, precision)), rules


def _prepared_batches(backend, paths, batch_size):
    from vlmaudit.scan.worker import ScanSettings, ShardJob, prepare_shard

    settings = ScanSettings(batch_size=batch_size, workers=0)
    for path in paths:
        yield from (b.inputs for b in prepare_shard(ShardJob(str(path), path.stem), backend.preprocessor, settings)
                    if b.inputs)


def time_bare_forward(backend, paths, batch_size) -> float:
    batches = list(_prepared_batches(backend, paths, batch_size))
    backend.forward_only(batches[0])  # warm-up
    started = time.perf_counter()
    for inputs in batches:
        backend.forward_only(inputs)
    return time.perf_counter() - started


def time_scan(backend, rules, paths, out: Path, batch_size: int, workers: int) -> float:
    from vlmaudit.scan.scanner import Scanner
    from vlmaudit.schema import report_meta, report_schema
    from vlmaudit.scan.worker import ScanSettings, ShardJob

    out.mkdir()
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, backend.describe()))
    jobs = [ShardJob(str(p), p.stem) for p in paths]
    started = time.perf_counter()
    Scanner(backend, rules, out, ScanSettings(batch_size=batch_size, workers=workers), schema).run(jobs)
    return time.perf_counter() - started
