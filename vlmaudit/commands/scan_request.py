"""The scan's options as one keyword-only record with the one set of defaults: cli.py reads its
DEFAULTS for the `scan` command's options, and demo/bench build it by keyword. Light to import
(the CLI imports it to build its options): anything heavy is imported inside the methods."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from vlmaudit.errors import UserError


@dataclass(kw_only=True)
class ScanRequest:
    """Every scan option, by keyword only; these defaults are the CLI's (cli.py reads DEFAULTS)."""

    shards: list[str]
    out: str | Path  # a directory or an fsspec URL (s3://bucket/prefix)
    model: str | None = None
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
    actors: int | None = None  # --actors (--engine ray): the number of Ray actors
    decode: str = "auto"
    compile: bool = False
    progress_every: float = 30.0  # seconds between progress lines when stderr is not a terminal
    folder_shard_size: int = 10_000  # loose image folders: samples per shard
    hashes: bool = True  # SHA-256, MD5 and PDQ of every image (known-content matching)
    banks: list[str] = field(default_factory=list)  # --bank: hash banks matched when the scan ends

    def backend_options(self):
        from vlmaudit.backends import BackendOptions

        return BackendOptions(self.prompts, self.rationale, self.head, self.judge_model, self.escalate_above,
                              self.escalate_top)

    def settings(self):
        from vlmaudit.scan.worker import ScanSettings

        return ScanSettings(batch_size=self.batch_size, workers=self.workers, max_pixels=self.max_pixels,
                            max_member_bytes=self.max_member_bytes, retries=self.retries, columns=self.columns(),
                            overwrite=self.overwrite, hashes=self.hashes)

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


def default_model(request: ScanRequest) -> str | None:
    """--model, else the backend's default (the head backend takes its vision model from the head)."""
    from vlmaudit.backends.vlm import DEFAULT_JUDGE
    from vlmaudit.backends.clip import DEFAULT_MODEL

    if request.model or request.backend == "head":
        return request.model
    return DEFAULT_JUDGE if request.backend == "vlm" else DEFAULT_MODEL


DEFAULTS = ScanRequest(shards=[], out="", model=None)
