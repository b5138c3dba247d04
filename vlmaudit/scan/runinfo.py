"""Plan a scan (which shards, which are done) and record/check the run's identity in run.json."""

from __future__ import annotations

import os
import platform
import secrets
import sys
import time

from vlmaudit.errors import ResumeConflict, UserError
from vlmaudit.scan.shards import expand_shard_specs, is_remote, output_names, select_partition
from vlmaudit.scan.worker import ShardJob
from vlmaudit.scan.writer import as_location, shard_is_done
from vlmaudit.storage.location import redact

RUN_FILE = "run.json"
IDENTITY = ("backend", "model", "revision", "taxonomy_fingerprint", "thresholds_fingerprint")
PACKAGES = ("vlmaudit", "torch", "transformers", "pyarrow", "webdataset", "pillow", "numpy", "tokenizers")


def plan_jobs(specs: list[str], num_shards: int = 1, shard_index: int = 0, hub=None,
              folder_shard_size: int | None = None) -> tuple[list[ShardJob], list[str]]:
    """(this job's shards, report names of the whole list). Names come from the full list, so
    every array job agrees on them. `hub`: --split/--config/--revision for hf://datasets/ specs;
    `folder_shard_size`: samples per shard of a loose image folder."""
    from vlmaudit.scan.folder_source import is_folder_shard

    for spec in specs:
        refuse_credentials(spec, "shard")
    shards = expand_shard_specs(specs, hub, folder_shard_size)
    names = output_names(shards)
    jobs = [ShardJob(url if is_remote(url) or is_folder_shard(url) else os.path.abspath(url), names[url])
            for url in select_partition(shards, num_shards, shard_index)]
    return jobs, [names[url] for url in shards]


def refuse_credentials(url: str, what: str) -> None:
    """user:password@ in a URL would end up in stats, run.json and logs: use the environment or
    the fsspec/cloud configuration instead."""
    if redact(url) != url:
        raise UserError(f"{what} {redact(url)}: credentials in a URL are not accepted (they would be "
                        "written to run.json and the stats); use environment variables or the cloud config")


def split_done(jobs: list[ShardJob], out_dir, overwrite: bool) -> tuple[list[ShardJob], list[ShardJob]]:
    if overwrite:
        return jobs, []
    out = as_location(out_dir)
    done = [job for job in jobs if shard_is_done(out, job.name)]
    _check_folder_shards(out, done)
    names = {job.name for job in done}
    return [job for job in jobs if job.name not in names], done


def _check_folder_shards(out, done: list[ShardJob]) -> None:
    """A done shard of a loose image folder is skipped only if it still holds the same files."""
    from vlmaudit.scan.folder_source import changed_since_scanned, is_folder_shard
    from vlmaudit.scan.writer import stats_name

    for job in done:
        if is_folder_shard(job.url):
            problem = changed_since_scanned((out.read_json(stats_name(job.name)) or {}).get("url"), job.url)
            if problem:
                raise ResumeConflict(f"{out}: {problem}; use another --out, or --overwrite to rescan")


def prepare_out_dir(out_dir) -> None:
    """Fail early, in one line, when --out (a directory or an fsspec URL) cannot be written."""
    refuse_credentials(str(out_dir), "--out")
    out = as_location(out_dir)
    try:
        if out.remote:
            probe = f".write-test.{secrets.token_hex(8)}.tmp"
            with out.open(probe, "wb") as handle:
                handle.write(b"ok")
            out.remove(probe)
            return
        from vlmaudit.storage.localfiles import create_exclusive, temp_path

        out.root.mkdir(parents=True, exist_ok=True)
        local = temp_path(out.root / ".write-test", "tmp")
        with create_exclusive(local) as handle:  # a unique name, never through a planted symlink
            handle.write(b"ok")
        local.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({redact(str(exc.strerror or exc))})") from None


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_record(backend_info: dict, rules, config: dict, planned: list[str]) -> dict:
    return {
        "planned_shards": planned,
        **{k: backend_info.get(k) for k in ("backend", "model", "revision", "device", "precision")},
        "model_info": backend_info,
        "coverage": backend_info.get("coverage"),  # which categories and modalities the model scores
        "taxonomy_version": rules.taxonomy.tag,
        "taxonomy_fingerprint": rules.taxonomy.fingerprint(),
        "thresholds_fingerprint": rules.thresholds.fingerprint(),
        "rules_dir": str(rules.directory),
        "config": config,
        "command": [redact(arg) for arg in sys.argv],
        "packages": package_versions(),
        "created_at": time.time(),
    }


def check_resume(out_dir, record: dict, overwrite: bool, keys: tuple = IDENTITY) -> None:
    """Refuse to mix reports of different models, taxonomies or thresholds in one directory.
    `keys`: the identity fields to compare (before the model loads, those known without it)."""
    out = as_location(out_dir)
    previous = None if overwrite else out.read_json(RUN_FILE)
    if not isinstance(previous, dict):
        return
    changed = [k for k in keys if previous.get(k) != record.get(k)]
    if changed:
        raise ResumeConflict(
            f"{out} holds a run with a different {', '.join(changed)}; "
            "use another --out, or --overwrite to rescan everything with the new settings")


def write_run_record(out_dir, record: dict) -> None:
    as_location(out_dir).write_json(RUN_FILE, record)
