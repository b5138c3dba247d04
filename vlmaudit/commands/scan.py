"""`vlmaudit scan`: validate everything cheap first, then load the model, then stream shards."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vlmaudit.errors import UserError
from vlmaudit.scan.worker import ScanSettings
from vlmaudit.report.safetext import rich_markup
from vlmaudit.storage.location import redact


ENGINES = ("local", "ray")


@dataclass
class ScanRequest:
    shards: list[str]
    out: str | Path  # a directory or an fsspec URL (s3://bucket/prefix)
    model: str | None
    backend: str = "clip"
    rules: Path | None = None
    batch_size: int = 32
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    num_shards: int = 1
    shard_index: int = 0
    overwrite: bool = False
    retries: int = 2
    max_pixels: int = 50_000_000
    max_member_bytes: int = 64 << 20
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
    quiet: bool = False
    prompts: str = "unsafeconcepts"
    rationale: bool = False
    head: Path | None = None
    judge_model: str | None = None
    escalate_above: float | None = None
    escalate_top: float | None = None
    thresholds: Path | None = None  # a thresholds file (e.g. from `vlmaudit calibrate`) on top of the rules'
    image_column: str | None = None
    caption_column: str | None = None
    key_column: str | None = None
    split: str | None = None
    config: str | None = None
    revision: str | None = None
    engine: str = "local"
    ray_address: str | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    ray_workers: int | None = None  # --workers under --engine ray: the number of actors
    decode: str = "auto"
    compile: bool = False
    progress_every: float = 30.0  # seconds between progress lines when stderr is not a terminal
    folder_shard_size: int = 10_000  # loose image folders: samples per shard

    def backend_options(self):
        from vlmaudit.backends import BackendOptions

        return BackendOptions(self.prompts, self.rationale, self.head, self.judge_model, self.escalate_above,
                              self.escalate_top)

    def settings(self) -> ScanSettings:
        return ScanSettings(batch_size=self.batch_size, workers=self.workers, max_pixels=self.max_pixels,
                            max_member_bytes=self.max_member_bytes, retries=self.retries, columns=self.columns(),
                            overwrite=self.overwrite)

    def columns(self):
        from vlmaudit.scan.table_columns import ColumnChoice

        return ColumnChoice(self.image_column, self.caption_column, self.key_column)

    def hub(self):
        from vlmaudit.scan.hfhub import HubSelection

        if (self.split or self.config or self.revision) and not any(s.startswith("hf://datasets/") for s in self.shards):
            raise UserError("--split, --config and --revision apply to hf://datasets/ORG/NAME shards only")
        return HubSelection(self.split, self.config, self.revision)

    def spec(self):
        from vlmaudit.backends.modelref import ModelOptions
        from vlmaudit.engine.spec import ScannerSpec

        from vlmaudit.storage.location import is_url

        local = lambda p: p if p is None or is_url(str(p)) or not os.path.exists(p) else type(p)(os.path.abspath(p))  # noqa: E731
        # absolute paths: Ray actors do not run in this directory
        options = ModelOptions(local(default_model(self)), self.device, self.precision, self.allow_unsafe_weights,
                               self.trust_remote_code, self.compile)
        extra = replace(self.backend_options(), head=local(self.head), judge_model=local(self.judge_model))
        settings = self.settings()
        if self.engine == "ray":  # an actor decodes with the CPUs it reserved beyond its own
            settings.workers = max(0, int(self.cpus_per_worker) - 1)
        out = str(self.out) if is_url(str(self.out)) else os.path.abspath(self.out)
        return ScannerSpec(self.backend, options, extra, settings, out, local(self.rules), local(self.thresholds),
                           self.decode)


def run_scan_command(request: ScanRequest) -> int:
    """Returns the exit code: 0, or 1 when any shard failed."""
    from rich.console import Console

    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.parquet_source import check_table_shards
    from vlmaudit.scan import runinfo
    from vlmaudit.scan.counting import SampleTotal
    from vlmaudit.scan.gpu_decode import DECODE_MODES

    console = Console(stderr=True)
    if request.engine not in ENGINES:
        raise UserError(f"--engine {request.engine}: expected one of {', '.join(ENGINES)}")
    rules = load_rules(request.rules, request.thresholds)
    jobs, planned = runinfo.plan_jobs(request.shards, request.num_shards, request.shard_index, request.hub(),
                                      request.folder_shard_size)
    check_table_shards([job.url for job in jobs], request.columns())
    if request.decode not in DECODE_MODES:
        raise UserError(f"--decode {request.decode}: expected one of {', '.join(DECODE_MODES)}")
    runinfo.prepare_out_dir(request.out)
    _check_hub(request)
    known = _known_identity(request, rules)
    runinfo.check_resume(request.out, known, request.overwrite, tuple(known))  # before the model loads
    todo, done = runinfo.split_done(jobs, request.out, request.overwrite)
    totals = None if request.quiet else SampleTotal([job.url for job in todo])  # counts while the model loads
    from vlmaudit.engine.local import LocalEngine
    from vlmaudit.engine.ray_engine import RayEngine

    engine = RayEngine(request) if request.engine == "ray" else LocalEngine(request)
    try:
        record = runinfo.run_record(engine.describe(), rules, _config(request), planned)
        runinfo.check_resume(request.out, record, request.overwrite)
        runinfo.write_run_record(request.out, record)
        if done:
            console.print(f"{len(done)} of {len(jobs)} shards already done in {rich_markup(redact(str(request.out)))}; skipping them")
        result = _run(engine, request, todo, console, totals)
    finally:
        engine.close()
    return _summarize(result, request, console)


def _check_hub(request: ScanRequest) -> None:
    """Models that would come from an unreachable hub: one line now, not retries after the rest loaded."""
    from vlmaudit.backends.hubcheck import check_hub
    from vlmaudit.backends.vlm import DEFAULT_JUDGE

    model = default_model(request)
    if model and request.backend != "head" and not (request.backend == "cascade" and request.head):
        check_hub(model, "--model")
    if request.backend == "cascade":
        check_hub(request.judge_model or DEFAULT_JUDGE, "--judge-model")


def _known_identity(request: ScanRequest, rules) -> dict:
    from vlmaudit.engine.spec import known_identity

    spec = request.spec()
    return known_identity(request.backend, spec.model.model, spec.options.head, rules)


def _summarize(result, request: ScanRequest, console) -> int:
    console.print(f"scanned {result.rows:,} samples in {len(result.shards) - len(result.skipped)} shards, "
                  f"{result.flagged:,} flagged -> {rich_markup(redact(str(request.out)))}")
    if result.skipped:
        console.print(f"{len(result.skipped)} shard(s) skipped: another writer held or finished them")
    if result.failed:
        _print_failures(console, result)
        return 1
    return 0


def _print_failures(console, result) -> None:
    from vlmaudit.report.safetext import rich_markup

    permanent = [n for n in result.failed if n in result.permanent]
    transient = [n for n in result.failed if n not in result.permanent]
    if permanent:
        console.print(f"[red]{len(permanent)} shard(s) failed: {rich_markup(', '.join(permanent[:10]))} (permanent: "
                      "missing, unreadable or not a tar archive; re-running will not help, fix or remove them)")
    if transient:
        console.print(f"[red]{len(transient)} shard(s) failed: {rich_markup(', '.join(transient[:10]))} (transient: "
                      "re-run the same command to retry them)")


def default_model(request: ScanRequest) -> str | None:
    """--model, else the backend's default (the head backend takes its vision model from the head)."""
    from vlmaudit.backends.vlm import DEFAULT_JUDGE
    from vlmaudit.backends.clip import DEFAULT_MODEL

    if request.model or request.backend == "head":
        return request.model
    return DEFAULT_JUDGE if request.backend == "vlm" else DEFAULT_MODEL


def _run(engine, request: ScanRequest, jobs, console, totals=None):
    if request.quiet or not jobs:
        return engine.run(jobs)
    from vlmaudit.progress import start_progress

    with start_progress("scan", shards=len(jobs), samples=totals, every=request.progress_every,
                        console=console) as progress:
        return engine.run(jobs, progress)


def _config(request: ScanRequest) -> dict:
    config = asdict(request)
    config["out"], config["rules"] = redact(str(request.out)), str(request.rules) if request.rules else None
    config["shards"] = [redact(spec) for spec in request.shards]
    config["ray_address"] = redact(request.ray_address) if request.ray_address else None
    config["head"] = str(request.head) if request.head else None
    config["thresholds"] = str(request.thresholds) if request.thresholds else None
    return config
