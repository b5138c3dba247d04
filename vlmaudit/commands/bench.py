"""Benchmark: end-to-end scan throughput vs the bare model forward on the same samples, with the
model's FLOPs per sample (counted), achieved TFLOP/s and MFU against the device's fp16/bf16 peak.

The bare forward gets already-preprocessed tensors in memory (no tar reading, no decoding, no
Parquet), at the same batch size and precision: the ratio says how much the pipeline costs.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from vlmaudit.commands.options import BenchRequest

BENCH_BACKENDS = ("clip", "vlm")
VLM_SIZES = {"tiny": "llava", "llava-0.5b": "llava-0.5b"}


def run_bench(request: BenchRequest) -> dict:
    from vlmaudit.demo.build import build_demo_shards
    from vlmaudit.perf.peaks import device_name
    from vlmaudit.scan.gpu_decode import resolve_decode

    _check(request)
    show, samples = request.progress(), request.shards * request.per_shard
    with tempfile.TemporaryDirectory(prefix="vlmaudit-bench-") as tmp:
        root = Path(tmp)
        show.note(f"bench: writing {request.shards} demo shards of {request.per_shard} samples")
        paths = build_demo_shards(root / "shards", shards=request.shards, per_shard=request.per_shard)
        show.note("bench: building the random model" if request.model is None else "bench: loading the model")
        model = request.model or str(_random_model(root / "model", request))
        backend, rules = _backend(model, request)
        show.note("bench: counting FLOPs on one batch")
        flops = flops_per_sample(backend, paths, request.batch_size)
        show.note("bench: decoding every sample into memory for the bare forward")
        with show.start("bench: bare forward", samples=samples, flagged=None) as progress:
            bare = time_bare_forward(backend, paths, request.batch_size, progress)
        decode = resolve_decode(request.decode, backend)
        show.note("bench: warm-up scan of one shard (worker start, decoder and kernel set-up)")
        time_scan(backend, rules, paths[:1], root / "warm-up", request.batch_size, request.workers, decode)
        with show.start("bench: end-to-end scan", shards=len(paths), samples=samples) as progress:
            end_to_end = time_scan(backend, rules, paths, root / "out", request.batch_size, request.workers, decode,
                                   progress)
        with show.start("bench: end-to-end scan without hashes", shards=len(paths), samples=samples) as progress:
            unhashed = time_scan(backend, rules, paths, root / "out-no-hashes", request.batch_size, request.workers,
                                 decode, progress, hashes=False)
    result = {
        "model": request.model or f"random {request.size}", "backend": request.backend, "samples": samples,
        "device": backend.device, "device_name": device_name(backend.device), "precision": backend.precision,
        "batch_size": request.batch_size, "workers": request.workers, "decode": decode,
        "compile": request.compile,
        "bare_forward_samples_per_s": samples / bare, "end_to_end_samples_per_s": samples / end_to_end,
        "ratio": bare / end_to_end,
        "end_to_end_no_hashes_samples_per_s": samples / unhashed,
        "hashing_cost": 1 - unhashed / end_to_end,  # share of end-to-end throughput the hashes take
    }
    result.update(_utilisation(flops, result, request.peak_tflops))
    result["noise"] = noise_notes(result, os.getloadavg()[0] if hasattr(os, "getloadavg") else None, os.cpu_count())
    return result


def noise_notes(result: dict, load: float | None, cores: int | None) -> list[str]:
    """Why the figures may not be trusted: an end-to-end scan faster than the bare forward it
    contains, or a machine busier than its cores (other work took the time)."""
    notes = []
    if result["end_to_end_samples_per_s"] > result["bare_forward_samples_per_s"]:
        notes.append("end to end beat the bare forward it contains: the timings are noisy (rerun on an idle machine)")
    if load is not None and cores and load > cores:
        notes.append(f"load average {load:.1f} exceeds the {cores} cores: the timings are noisy")
    return notes


def _check(request: BenchRequest) -> None:
    from vlmaudit.demo.checkpoints import SIZES
    from vlmaudit.errors import UserError

    if request.backend not in BENCH_BACKENDS:
        raise UserError(f"--backend {request.backend}: bench times {' or '.join(BENCH_BACKENDS)}")
    sizes = SIZES if request.backend == "clip" else VLM_SIZES
    if request.model is None and request.size not in sizes:
        raise UserError(f"--size {request.size}: expected one of {', '.join(sizes)} for --backend {request.backend}")
    if request.peak_tflops is not None and request.peak_tflops <= 0:
        raise UserError("--peak-tflops must be > 0")


def _random_model(out: Path, request: BenchRequest) -> Path:
    if request.backend == "vlm":
        from vlmaudit.demo.vlm_checkpoints import build_random_vlm

        return build_random_vlm(out, VLM_SIZES[request.size])
    from vlmaudit.demo.checkpoints import build_random_clip

    return build_random_clip(out, size=request.size)


def _backend(model: str, request: BenchRequest):
    from vlmaudit.backends import build_backend
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules

    rules = load_rules()
    options = ModelOptions(model, request.device, request.precision, compile=request.compile)
    return build_backend(request.backend, rules, options), rules


def _utilisation(flops: float | None, result: dict, override: float | None) -> dict:
    """FLOP figures; None (n/a) throughout when the counter saw no FLOPs (onnxruntime, say)."""
    from vlmaudit.perf.peaks import mfu, resolve_peak

    peak, source = resolve_peak(result["device"], override)
    flops = flops or None

    def tflops(samples_per_s):
        return None if flops is None else flops * samples_per_s / 1e12

    return {
        "flops_per_sample": flops, "gflops_per_sample": None if flops is None else flops / 1e9,
        "flops_note": None if flops is not None else "n/a: the model runs outside torch, the FLOP counter cannot see it",
        "bare_forward_tflops": tflops(result["bare_forward_samples_per_s"]),
        "end_to_end_tflops": tflops(result["end_to_end_samples_per_s"]),
        "peak_tflops": peak, "peak_source": source,
        "bare_forward_mfu": mfu(flops, result["bare_forward_samples_per_s"], peak),
        "end_to_end_mfu": mfu(flops, result["end_to_end_samples_per_s"], peak),
    }


def _prepared(backend, paths, batch_size):
    from vlmaudit.scan.worker import ScanSettings, ShardJob, prepare_shard

    settings = ScanSettings(batch_size=batch_size, workers=0)
    for path in paths:
        yield from (b for b in prepare_shard(ShardJob(str(path), path.stem), backend.preprocessor, settings)
                    if b.inputs)


def flops_per_sample(backend, paths, batch_size) -> float:
    """The bare forward's FLOPs on the first full batch, per sample (image and caption)."""
    from vlmaudit.perf.flops import count_flops

    batch = next(_prepared(backend, paths, batch_size))
    return count_flops(backend.forward_only, batch.inputs) / len(batch.metas)


def time_bare_forward(backend, paths, batch_size, progress=None) -> float:
    batches = list(_prepared(backend, paths, batch_size))
    backend.forward_only(batches[0].inputs)  # warm-up (and compilation with --compile)
    _synchronize(backend.device)
    started = time.perf_counter()
    for batch in batches:
        backend.forward_only(batch.inputs)
        if progress is not None:
            progress.batch(len(batch.metas))
    _synchronize(backend.device)
    return time.perf_counter() - started


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_scan(backend, rules, paths, out: Path, batch_size: int, workers: int, decode: str = "cpu",
              progress=None, hashes: bool = True) -> float:
    """Seconds for the whole scan; DECODE is a resolved mode (cpu or gpu)."""
    from vlmaudit.scan.scanner import Scanner
    from vlmaudit.schema import report_meta, report_schema
    from vlmaudit.scan.worker import ScanSettings, ShardJob

    out.mkdir()
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, backend.describe()))
    jobs = [ShardJob(str(p), p.stem) for p in paths]
    settings = ScanSettings(batch_size=batch_size, workers=workers, decode=decode, hashes=hashes)
    started = time.perf_counter()
    Scanner(backend, rules, out, settings, schema, progress).run(jobs)
    _synchronize(backend.device)
    return time.perf_counter() - started


def format_bench(result: dict) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    def num(value, width, digits):
        return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    lines = [
        f"{result['model']} ({result['backend']}) on {result['device']} "
        f"[{result['device_name']}] ({result['precision']}), {result['samples']} samples, "
        f"batch {result['batch_size']}, {result['workers']} workers, decode {result['decode']}"
        + (", compiled" if result["compile"] else ""),
        f"model FLOPs         {num(result['gflops_per_sample'], 9, 2)} GFLOP/sample "
        + (f"({result['flops_note']})" if result.get("flops_note") else "(a multiply-add = 2 FLOPs)"),
        f"bare model forward  {result['bare_forward_samples_per_s']:9.1f} samples/s  "
        f"{num(result['bare_forward_tflops'], 8, 3)} TFLOP/s  MFU {pct(result['bare_forward_mfu'])}",
        f"end to end          {result['end_to_end_samples_per_s']:9.1f} samples/s  "
        f"{num(result['end_to_end_tflops'], 8, 3)} TFLOP/s  MFU {pct(result['end_to_end_mfu'])}",
        f"ratio               {result['ratio']:9.2f}x the bare forward",
        f"without hashes      {result['end_to_end_no_hashes_samples_per_s']:9.1f} samples/s  (SHA-256, MD5 and PDQ cost "
        f"{pct(result['hashing_cost'])} of end-to-end throughput)",
        f"peak                {result['peak_tflops'] or 'n/a'} TFLOP/s ({result['peak_source']})",
    ] + [f"noisy               {note}" for note in result.get("noise", [])]
    return "\n".join(lines)
