"""Every command's options but scan's (those are in scan_request.py) as keyword-only records: one
record per command, built by keyword only, whose field defaults are the one set of defaults (cli.py
reads them with `defaults()` for its options; tests/commands/test_options.py holds the two together).
Light to import (the CLI imports it to build its options): anything heavy is imported inside the methods."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace

from vlmaudit.errors import UserError
from vlmaudit.head.training import TrainSettings
from vlmaudit.progress import DEFAULT_EVERY


def defaults(request_class) -> SimpleNamespace:
    """The field defaults of a request class, by name (a required field has none)."""
    found = {}
    for item in fields(request_class):
        if item.default is not MISSING:
            found[item.name] = item.default
        elif item.default_factory is not MISSING:
            found[item.name] = item.default_factory()
    return SimpleNamespace(**found)


# option groups that several commands share


@dataclass(kw_only=True)
class ReReadChoice:
    """--shards, --allow-scheme, --max-member-bytes: which shards may be re-read for images."""

    shards: list[str] = field(default_factory=list)
    allow_scheme: list[str] = field(default_factory=list)
    max_member_bytes: int = 64 << 20

    def reread(self):
        from vlmaudit.report.reread import ReReadOptions

        return ReReadOptions(shards=self.shards, allow_schemes=self.allow_scheme, max_member_bytes=self.max_member_bytes)


@dataclass(kw_only=True)
class ProgressChoice:
    """--quiet and --progress-every."""

    quiet: bool = False
    progress_every: float = DEFAULT_EVERY  # seconds between progress lines when stderr is not a terminal

    def progress(self):
        from vlmaudit.progress import ProgressOptions

        return ProgressOptions(quiet=self.quiet, every=self.progress_every)


_TRAIN = TrainSettings()


@dataclass(kw_only=True)
class HeadTraining:
    """The safety head's training options (train-head and distill)."""

    epochs: int = _TRAIN.epochs  # one set of defaults: head.training.TrainSettings
    batch_size: int = _TRAIN.batch_size
    lr: float = _TRAIN.lr
    val_fraction: float = _TRAIN.val_fraction
    tokens: int = _TRAIN.tokens
    dim: int = _TRAIN.dim
    seed: int = _TRAIN.seed

    def training(self):
        from vlmaudit.head.training import TrainSettings

        if self.dim % 8:
            raise UserError("--dim must be a multiple of 8 (8 attention heads)")
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, val_fraction=self.val_fraction,
                             dim=self.dim, tokens=self.tokens, seed=self.seed)


# one record per command


@dataclass(kw_only=True)
class ConceptsRequest:
    rules: Path | None = None
    as_json: bool = False


@dataclass(kw_only=True)
class ReportRequest(ReReadChoice):
    report_dir: str | Path  # a directory or an fsspec URL
    fmt: str = "table"
    as_json: bool = False  # --json: the same as fmt "json"
    output: Path | None = None
    top: int = 10
    thresholds: list[str] = field(default_factory=list)  # --threshold
    policy: str | None = None
    category: str | None = None
    concept: str | None = None
    shard: str | None = None
    compare: str | Path | None = None
    examples: int = 3
    redact: bool = False
    blur: bool = True
    fail_above: list[str] = field(default_factory=list)
    rules: Path | None = None
    thresholds_file: Path | None = None  # --thresholds: a thresholds YAML (e.g. from `vlmaudit calibrate`)
    allow_mixed: bool = False
    labels: Path | None = None  # a review sheet (`vlmaudit sample`) with labels: adds the estimates
    allow_incomplete: bool = False  # --fail-above gates a run with unfinished or truncated shards

    def __post_init__(self):
        if self.as_json:
            self.fmt = "json"


@dataclass(kw_only=True)
class VerifyCardRequest:
    card: Path
    report_dir: str | Path
    labels: Path | None = None  # the labelled review sheet the card's estimates came from


@dataclass(kw_only=True)
class SummarizeRequest:
    report_dir: str | Path


@dataclass(kw_only=True)
class FilterRequest(ReReadChoice, ProgressChoice):
    report_dir: str | Path
    policy: str = "default"
    out: str | Path = "filtered"
    on_failed: str = "review"
    allow_partial: bool = False
    write_shards: Path | None = None
    rules: Path | None = None
    allow_mixed: bool = False
    banks: list[str] = field(default_factory=list)  # --bank


@dataclass(kw_only=True)
class SampleRequest(ReReadChoice):
    report_dir: str | Path
    size: int
    out: Path
    seed: int = 0
    strata: str = "top"
    bands: int = 5
    overwrite: bool = False
    redact: bool = False
    blur: bool = True
    allow_mixed: bool = False


@dataclass(kw_only=True)
class EstimateRequest:
    report_dir: str | Path
    labels: Path
    fmt: str = "table"
    as_json: bool = False  # --json: the same as fmt "json"
    output: Path | None = None
    allow_mixed: bool = False

    def __post_init__(self):
        if self.as_json:
            self.fmt = "json"


@dataclass(kw_only=True)
class MatchRequest:
    report_dir: Path
    banks: list[str] = field(default_factory=list)  # --bank
    out: Path | None = None  # default REPORT_DIR/matches
    pdq_distance: int = 31
    min_quality: int = 50
    quiet: bool = False

    def match_options(self):
        from vlmaudit.match.run import MatchOptions

        return MatchOptions(max_distance=self.pdq_distance, min_quality=self.min_quality)


@dataclass(kw_only=True)
class TrainHeadRequest(HeadTraining):
    data: Path
    vision_model: str
    out: Path
    safe_images: Path | None = None
    device: str = "auto"
    cache_dir: Path | None = None
    rules: Path | None = None
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
    quiet: bool = False


@dataclass(kw_only=True)
class BenchRequest(ProgressChoice):
    model: str | None = None
    size: str = "vit-b-32"
    backend: str = "clip"
    shards: int = 4
    per_shard: int = 64
    batch_size: int = 32
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    decode: str = "auto"
    compile: bool = False
    peak_tflops: float | None = None
    as_json: bool = False


@dataclass(kw_only=True)
class DemoRequest:
    directory: Path = Path("vlmaudit-demo")
    shards: int = 3
    per_shard: int = 16


@dataclass(kw_only=True)
class CalibrateRequest:
    report_dir: Path
    labels: Path
    target_precision: float
    out: Path
    per: str = "category"
    modality: str = "both"
    min_flagged: int = 1
    as_json: bool = False


@dataclass(kw_only=True)
class EvalRequest(ProgressChoice):
    data: Path
    model: str | None = None
    backend: str = "auto"
    benign: Path | None = None
    fmt: str = "table"
    output: Path | None = None  # --output, checked before the model loads
    rules: Path | None = None
    thresholds: Path | None = None
    prompts: str = "unsafeconcepts"
    head: Path | None = None
    batch_size: int = 8
    limit: int | None = None
    device: str = "auto"
    precision: str = "auto"
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
    text_concepts: str = "all"


@dataclass(kw_only=True)
class DistillRequest(HeadTraining, ProgressChoice):
    report_dir: Path
    shards: list[str]
    out: Path
    vision_model: str | None = None
    cutoff: float = 0.5
    max_samples: int | None = None
    device: str = "auto"
    rules: Path | None = None
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
