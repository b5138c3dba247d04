"""`vlmaudit scan`: validate everything cheap first, then load the model, then stream shards."""

from __future__ import annotations

from dataclasses import asdict

from vlmaudit.commands.scan_request import ScanRequest, default_model
from vlmaudit.errors import UserError
from vlmaudit.report.safetext import rich_markup
from vlmaudit.storage.location import redact


ENGINES = ("local", "ray")


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
    banks = _load_banks(request)  # a bad bank is refused before any shard is listed or model loaded
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
    from vlmaudit.engine.ray_engine import RayEngine, RayOptions

    if request.engine == "ray":
        engine = RayEngine(request.spec(), RayOptions(request.ray_address, request.actors, request.gpus_per_worker,
                                                      request.cpus_per_worker))
    else:
        engine = LocalEngine(request.spec())
    try:
        record = runinfo.run_record(engine.describe(), rules, _config(request), planned)
        record["hashes"] = _hash_record(request.hashes)
        runinfo.check_resume(request.out, record, request.overwrite)
        runinfo.write_run_record(request.out, record)
        if done:
            console.print(f"{len(done)} of {len(jobs)} shards already done in {rich_markup(redact(str(request.out)))}; skipping them")
        result = _run(engine, request, todo, console, totals)
    finally:
        engine.close()
    code = _summarize(result, request, console)
    if banks:
        _match_after_scan(request, banks, console)
    return code


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


def _hash_record(enabled: bool) -> dict:
    """Which known-content hashes the report columns hold (run.json): PDQ needs the `hashes` extra."""
    from vlmaudit.scan.hashing import pdq_available

    if not enabled:
        return {"sha256": False, "md5": False, "pdq": False, "note": "--no-hashes"}
    pdq = pdq_available()
    note = None if pdq else "PDQ not computed: pdqhash is not installed (pip install 'vlmaudit[hashes]')"
    return {"sha256": True, "md5": True, "pdq": pdq, "note": note}


def _load_banks(request: ScanRequest) -> list:
    if not request.banks:
        return []
    from vlmaudit.match.banks import read_bank
    from vlmaudit.storage.location import is_url

    if is_url(str(request.out)):
        raise UserError("--bank needs a local --out (the matches go to OUT/matches); run `vlmaudit match` later instead")
    if not request.hashes:
        raise UserError("--bank needs the hashes: drop --no-hashes")
    return [bank for text in request.banks for bank in read_bank(text)]


def _match_after_scan(request: ScanRequest, banks: list, console) -> None:
    """scan --bank: the stored hashes of every finished shard against the banks, into OUT/matches."""
    from pathlib import Path

    from vlmaudit.commands.match import match_files, write_outputs
    from vlmaudit.match.known import MATCH_DIR
    from vlmaudit.report.reading import report_files

    table = match_files(report_files(request.out), banks)
    out = Path(request.out) / MATCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(table, out)
    counts = {bank.name: 0 for bank in banks}
    for name in table.column("bank").to_pylist():
        counts[name] += 1
    shown = ", ".join(f"{name}: {n:,}" for name, n in counts.items())
    console.print(f"known-content matches ({rich_markup(shown)}) -> {rich_markup(str(out))}; matched images are never shown")

