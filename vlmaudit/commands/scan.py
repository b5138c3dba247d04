"""`vlmaudit scan`: validate everything cheap first, then load the model, then stream shards."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from vlmaudit.scan.worker import ScanSettings


@dataclass
class ScanRequest:
    shards: list[str]
    out: Path
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
    decode: str = "auto"
    compile: bool = False

    def backend_options(self):
        from vlmaudit.backends import BackendOptions

        return BackendOptions(self.prompts, self.rationale, self.head, self.judge_model, self.escalate_above,
                              self.escalate_top)

    def settings(self) -> ScanSettings:
        return ScanSettings(batch_size=self.batch_size, workers=self.workers, max_pixels=self.max_pixels,
                            max_member_bytes=self.max_member_bytes, retries=self.retries)


def run_scan_command(request: ScanRequest) -> int:
    """Returns the exit code: 0, or 1 when any shard failed."""
    from rich.console import Console

    from vlmaudit.scan import runinfo
    from vlmaudit.backends import build_backend
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.schema import report_meta, report_schema
    from vlmaudit.errors import UserError
    from vlmaudit.scan.gpu_decode import DECODE_MODES, resolve_decode
    from vlmaudit.scan.scanner import Scanner

    console = Console(stderr=True)
    rules = load_rules(request.rules)
    jobs, planned = runinfo.plan_jobs(request.shards, request.num_shards, request.shard_index)
    runinfo.prepare_out_dir(request.out)
    if request.decode not in DECODE_MODES:
        raise UserError(f"--decode {request.decode}: expected one of {', '.join(DECODE_MODES)}")
    options = ModelOptions(default_model(request), request.device, request.precision,
                           request.allow_unsafe_weights, request.trust_remote_code, request.compile)
    backend = build_backend(request.backend, rules, options, request.backend_options())
    settings = request.settings()
    settings.decode = resolve_decode(request.decode, backend)
    record = runinfo.run_record(backend.describe(), rules, _config(request), planned)
    runinfo.check_resume(request.out, record, request.overwrite)
    runinfo.write_run_record(request.out, record)
    todo, done = runinfo.split_done(jobs, request.out, request.overwrite)
    if done:
        console.print(f"{len(done)} of {len(jobs)} shards already done in {request.out}; skipping them")
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, backend.describe()))
    result = _run(Scanner, backend, rules, request, settings, schema, todo, console)
    console.print(f"scanned {result.rows:,} samples in {len(result.shards)} shards, {result.flagged:,} flagged"
                  f" -> {request.out}")
    if result.failed:
        console.print(f"[red]{len(result.failed)} shard(s) failed: {', '.join(result.failed[:10])}; "
                      "re-run the same command to retry them")
        return 1
    return 0


def default_model(request: ScanRequest) -> str | None:
    """--model, else the backend's default (the head backend takes its vision model from the head)."""
    from vlmaudit.backends.vlm import DEFAULT_JUDGE
    from vlmaudit.backends.clip import DEFAULT_MODEL

    if request.model or request.backend == "head":
        return request.model
    return DEFAULT_JUDGE if request.backend == "vlm" else DEFAULT_MODEL


def _run(scanner_cls, backend, rules, request, settings, schema, jobs, console):
    if request.quiet or not jobs:
        return scanner_cls(backend, rules, request.out, settings, schema).run(jobs)
    from vlmaudit.progress import RichProgress

    with RichProgress(len(jobs), console) as progress:
        return scanner_cls(backend, rules, request.out, settings, schema, progress).run(jobs)


def _config(request: ScanRequest) -> dict:
    config = asdict(request)
    config["out"], config["rules"] = str(request.out), str(request.rules) if request.rules else None
    config["head"] = str(request.head) if request.head else None
    return config
