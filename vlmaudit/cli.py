"""Command-line entry point: thin typer commands; domain errors become one line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from vlmaudit.commands.scan_request import DEFAULTS as SCAN
from vlmaudit.errors import UserError



def _metavar(param) -> str:
    """A short placeholder instead of typer's <int range> / <list[str]> type labels."""
    kind = param.bare_type() if hasattr(param, "bare_type") else ""
    longest = max(param.opts, key=len).lstrip("-") if param.param_type_name == "option" else param.name
    return {"int": "N", "float": "X"}.get(kind, longest.upper().replace("-", "_"))


def _tidy_argument(param) -> None:
    """SHARDS... / [DIRECTORY] in the usage line; the name once, with no type, in the list."""
    name = param.name.upper()
    usage = f"{name}..." if param.nargs != 1 else name
    param.metavar = usage
    param.display_type_rich = lambda ctx: None
    param._usage_display_name = lambda: usage if param.required else f"[{usage}]"


def tidy_help(command) -> None:
    """Plain help that reads at 80 columns: short placeholders, no '[default: no-x]' for off switches."""
    for param in command.params:
        if param.param_type_name == "argument":
            _tidy_argument(param)
        elif getattr(param, "is_flag", False):
            param.show_default = param.show_default and bool(param.default)
        elif param.metavar is None:
            param.metavar = _metavar(param)


class HelpGroup(typer.core.TyperGroup):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            tidy_help(command)


# plain click help (rich_markup_mode=None): rich's table squeezed descriptions at 80 columns and
# read text such as 'vlmaudit[ray]' as markup
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Audit image-text webdataset shards for the 75 UnsafeConcepts.")


def _version(value: bool) -> None:
    if value:
        from vlmaudit import __version__

        typer.echo(f"vlmaudit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Audit image-text webdataset shards for the 75 UnsafeConcepts."""

RulesOpt = Annotated[Optional[Path], typer.Option("--rules", help="Rules directory (default: the shipped rules/).")]
UnsafeWeightsOpt = Annotated[bool, typer.Option(help="Allow pickle-based (non-safetensors) weights.")]
RemoteCodeOpt = Annotated[bool, typer.Option(help="Run model code from the checkpoint's repository.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
ProgressEveryOpt = Annotated[float, typer.Option(min=0.0, help="Not on a terminal: seconds between progress lines.")]
# safety-head training options, shared by train-head and distill
EpochsOpt = Annotated[int, typer.Option(min=1)]
TrainBatchOpt = Annotated[int, typer.Option(min=1)]
LrOpt = Annotated[float, typer.Option(min=0.0)]
ValFractionOpt = Annotated[float, typer.Option(min=0.0, max=0.9, help="Held-out share of each class.")]
TokensOpt = Annotated[int, typer.Option(min=1, help="Learnable safety tokens.")]
DimOpt = Annotated[int, typer.Option(min=8, help="Head width (a multiple of 8).")]
ShardsOpt = Annotated[list[str], typer.Option("--shards", help="Shards to re-read images from (as given to scan; repeatable). Default: the recorded local paths only.")]
SchemeOpt = Annotated[list[str], typer.Option("--allow-scheme", help="Also re-read recorded sources with this URL scheme (s3, gs, https...; repeatable). pipe: never.")]
MemberBytesOpt = Annotated[int, typer.Option("--max-member-bytes", min=1, help="Skip larger tar members when re-reading shards.")]
MixedOpt = Annotated[bool, typer.Option("--allow-mixed", help="Summarise reports of different models together.")]


def fail(message: str, code: int) -> None:
    from vlmaudit.report.safetext import safe_text

    typer.echo(f"error: {safe_text(message)}", err=True)
    raise typer.Exit(code)


MACHINE_FAULTS = {27, 28, 30, 122}  # EFBIG, ENOSPC, EROFS, EDQUOT: the disk or its limits, not a bug


def handle_errors(command):
    """Turn UserError into 'error: ...' plus its exit code, and Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            fail(str(exc), exc.exit_code)
        except OSError as exc:
            if exc.errno not in MACHINE_FAULTS:
                raise
            fail(f"{exc.filename or 'output'}: {exc.strerror or exc}", 1)
        except KeyboardInterrupt:
            typer.echo("interrupted: finished shards are kept; re-run the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def train_settings(epochs, batch_size, lr, val_fraction, dim, tokens, seed):
    from vlmaudit.head.training import TrainSettings

    if dim % 8:
        fail("--dim must be a multiple of 8 (8 attention heads)", 2)
    return TrainSettings(epochs, batch_size, lr, val_fraction, dim, tokens, seed=seed)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@app.command()
@handle_errors
def concepts(rules: RulesOpt = None, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Print the taxonomy: categories, concepts, thresholds."""
    from vlmaudit.commands.concepts import show_concepts

    show_concepts(rules, as_json)


@app.command()
@handle_errors
def scan(
    shards: Annotated[list[str], typer.Argument(help="Shards: .tar/.tar.gz/.parquet/.arrow paths, dirs, globs, {a..b} ranges, URLs, pipe:CMD, hf://datasets/ORG/NAME, folders of loose images.")],
    out: Annotated[str, typer.Option("--out", help="Report directory or fsspec URL (s3://bucket/prefix): one Parquet + stats JSON per shard.")],
    model: Annotated[Optional[str], typer.Option(help="Hub id, local checkpoint dir, or opennsfw (bundled, offline). Default: openai/clip-vit-large-patch14; llava-hf/llava-1.5-7b-hf for --backend vlm; the head's vision model for --backend head.")] = None,
    backend: Annotated[str, typer.Option(help="clip (CLIP/SigLIP scorer), vlm (VLM judge), head (trained safety head), cascade.")] = SCAN.backend,
    rules: RulesOpt = None,
    batch_size: Annotated[int, typer.Option(min=1)] = SCAN.batch_size,
    workers: Annotated[Optional[int], typer.Option(min=0, help="Decoding worker processes (0: in-process; default 2). With --engine ray: the old spelling of --actors.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = SCAN.device,
    precision: Annotated[str, typer.Option(help="auto (fp16 on GPU, bf16 on CPUs that have it), fp32, fp16, bf16.")] = SCAN.precision,
    num_shards: Annotated[int, typer.Option(min=1, help="Split the shard list into N parts (array jobs).")] = SCAN.num_shards,
    shard_index: Annotated[int, typer.Option(min=0, help="Which part this job processes.")] = SCAN.shard_index,
    overwrite: Annotated[bool, typer.Option(help="Rescan shards that are already done.")] = SCAN.overwrite,
    retries: Annotated[int, typer.Option(min=0, help="Retries for a shard that cannot be opened.")] = SCAN.retries,
    max_pixels: Annotated[int, typer.Option(min=1, help="Reject larger images from their header.")] = SCAN.max_pixels,
    max_member_bytes: Annotated[int, typer.Option(min=1, help="Skip larger tar members.")] = SCAN.max_member_bytes,
    allow_unsafe_weights: UnsafeWeightsOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = SCAN.progress_every,
    prompts: Annotated[str, typer.Option(help="VLM judge questions: a name in rules/prompts/ or a .yaml file.")] = SCAN.prompts,
    rationale: Annotated[bool, typer.Option(help="VLM judge: also generate a short explanation for flagged samples.")] = SCAN.rationale,
    head: Annotated[Optional[Path], typer.Option(help="Safety head directory (from `vlmaudit train-head`) for --backend head or cascade.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="Cascade: the VLM judge (default llava-hf/llava-1.5-7b-hf).")] = None,
    escalate_above: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Cascade: judge samples whose top score is >= this.")] = None,
    escalate_top: Annotated[Optional[float], typer.Option(min=0.0, max=100.0, help="Cascade: judge the top PERCENT of each shard by top score.")] = None,
    thresholds: Annotated[Optional[Path], typer.Option(help="Thresholds YAML (e.g. from `vlmaudit calibrate`) applied on top of the rules' thresholds.")] = None,
    image_column: Annotated[Optional[str], typer.Option(help="Parquet/Arrow shards: the image column (binary, or a {bytes, path} struct).")] = None,
    caption_column: Annotated[Optional[str], typer.Option(help="Parquet/Arrow shards: the caption column (default caption, text or TEXT).")] = None,
    key_column: Annotated[Optional[str], typer.Option(help="Parquet/Arrow shards: the key column (default key or id; else FILE/ROW).")] = None,
    split: Annotated[Optional[str], typer.Option(help="hf://datasets/ shards: only this split's files.")] = None,
    config: Annotated[Optional[str], typer.Option(help="hf://datasets/ shards: only this config's files.")] = None,
    revision: Annotated[Optional[str], typer.Option(help="hf://datasets/ shards: branch, tag or commit (e.g. refs/convert/parquet).")] = None,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (a pool of actors; pip install 'vlmaudit[ray]').")] = SCAN.engine,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (default: a running one, else start a local one).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(min=0.0, help="Ray: GPUs per actor, fractional allowed (default 1 if the cluster has GPUs, else 0).")] = None,
    cpus_per_worker: Annotated[float, typer.Option(min=0.0, help="Ray: CPUs per actor; an actor decodes with int(N)-1 worker processes.")] = SCAN.cpus_per_worker,
    actors: Annotated[Optional[int], typer.Option(min=1, help="Ray: scorer actors (default: one per GPU of the cluster, else 2).")] = None,
    decode: Annotated[str, typer.Option(help="JPEG decoding: auto (gpu when the model is on CUDA and torchvision is installed), cpu, gpu.")] = SCAN.decode,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model (clip backend; slow first batch).")] = False,
    folder_shard_size: Annotated[int, typer.Option(min=1, metavar="N", help="Folders of loose images: samples per shard (keep it when resuming).")] = SCAN.folder_shard_size,
    hashes: Annotated[bool, typer.Option("--hashes/--no-hashes", help="SHA-256, MD5 and PDQ of every image, for `vlmaudit match`.")] = SCAN.hashes,
    bank: Annotated[list[str], typer.Option("--bank", metavar="[KIND:]FILE", help="Match this hash bank when the scan ends (OUT/matches); repeatable.")] = [],
):
    """Score every image and caption of SHARDS against every concept; write per-shard Parquet."""
    from vlmaudit.commands.scan import ScanRequest, run_scan_command

    quiet_libraries()
    actors = ray_actors(engine, workers, actors)
    local_workers = SCAN.workers if workers is None or engine == "ray" else workers
    request = ScanRequest(
        shards=shards, out=out, model=model, backend=backend, rules=rules, batch_size=batch_size,
        workers=local_workers, device=device, precision=precision, num_shards=num_shards, shard_index=shard_index,
        overwrite=overwrite, retries=retries, max_pixels=max_pixels, max_member_bytes=max_member_bytes,
        allow_unsafe_weights=allow_unsafe_weights, trust_remote_code=trust_remote_code, quiet=quiet,
        prompts=prompts, rationale=rationale, head=head, judge_model=judge_model, escalate_above=escalate_above,
        escalate_top=escalate_top, thresholds=thresholds, image_column=image_column, caption_column=caption_column,
        key_column=key_column, split=split, config=config, revision=revision, engine=engine, ray_address=ray_address,
        gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, actors=actors, decode=decode,
        compile=compile_model, progress_every=progress_every, folder_shard_size=folder_shard_size, hashes=hashes,
        banks=bank)
    raise typer.Exit(run_scan_command(request))


def ray_actors(engine: str, workers: int | None, actors: int | None) -> int | None:
    """--actors, or under --engine ray the old spelling --workers (one deprecation line)."""
    if actors is not None and engine != "ray":
        raise UserError("--actors: the number of Ray actors, for --engine ray only (--workers sets decoding processes)")
    if engine != "ray" or workers is None:
        return actors
    if actors is not None:
        raise UserError("--workers with --engine ray is the old spelling of --actors: pass only --actors")
    print(f"warning: --workers with --engine ray is deprecated; use --actors {workers}", file=sys.stderr)
    return workers


def report_location(text: str):
    """Report dirs: a local Path, or an fsspec URL kept as text (Path would fold its '//')."""
    from vlmaudit.storage.location import is_url

    return text if is_url(text) else Path(text)


@app.command()
@handle_errors
def report(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
    fmt: Annotated[str, typer.Option("--format", help="table, json, markdown, html, or card (an audit card: PATH.md + PATH.json, check it with verify-card).")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "--out", "-o", help="Write the export to this file (card: default ./audit-card).")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many concepts and shards to list.")] = 10,
    threshold: Annotated[list[str], typer.Option(help="Re-threshold: 0.7 or CONCEPT_OR_CATEGORY=0.6 (repeatable).")] = [],
    policy: Annotated[Optional[str], typer.Option(help="Flag with a policy's rules instead of thresholds.")] = None,
    category: Annotated[Optional[str], typer.Option(help="Only this category's concepts count.")] = None,
    concept: Annotated[Optional[str], typer.Option(help="Only this concept counts; adds its score histogram.")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Only shards whose name matches this glob.")] = None,
    compare: Annotated[Optional[str], typer.Option(help="Another report dir or URL: per-category deltas.")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Example samples per top concept.")] = 3,
    redact: Annotated[bool, typer.Option(help="Hide captions and URLs of examples.")] = False,
    blur: Annotated[bool, typer.Option(help="Blur HTML gallery thumbnails (click to reveal).")] = True,
    fail_above: Annotated[list[str], typer.Option(help="CATEGORY=RATE: exit 3 when exceeded (repeatable); exit 2 on an incomplete run unless --allow-incomplete.")] = [],
    rules: RulesOpt = None,
    thresholds_file: Annotated[Optional[Path], typer.Option("--thresholds", help="Re-threshold with a thresholds YAML (e.g. from `vlmaudit calibrate`); --threshold applies after it.")] = None,
    shards: ShardsOpt = [],
    allow_scheme: SchemeOpt = [],
    max_member_bytes: MemberBytesOpt = 64 << 20,
    allow_mixed: MixedOpt = False,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="A labelled review sheet (from `vlmaudit sample`): adds prevalence with 95 % intervals and the thresholds' precision / recall.")] = None,
    allow_incomplete: Annotated[bool, typer.Option(help="Let --fail-above gate a run whose shards are not all finished (else exit 2).")] = False,
):
    """Summarise scan reports (reads only the reports; the HTML gallery also reads the shards)."""
    from vlmaudit.commands.report import ReportRequest, run_report_command
    from vlmaudit.report.reread import ReReadOptions

    request = ReportRequest(report_location(report_dir), "json" if as_json else fmt, output, top, threshold, policy,
                            category, concept, shard, compare and report_location(compare), examples, redact, blur,
                            fail_above, rules, thresholds_file, ReReadOptions(shards, allow_scheme, max_member_bytes),
                            allow_mixed, labels, allow_incomplete)
    raise typer.Exit(run_report_command(request))


@app.command(name="verify-card")
@handle_errors
def verify_card(
    card: Annotated[Path, typer.Argument(help="The audit card (.json, or the .md beside it) from `report --format card`.")],
    report_dir: Annotated[str, typer.Argument(help="The report directory the card describes.")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help="The labelled review sheet the card's estimates came from (re-checks them).")] = None,
):
    """Recompute an audit card's digests and numbers from the reports; exit 1 naming each difference."""
    from vlmaudit.commands.verify_card import run_verify_card

    raise typer.Exit(run_verify_card(card, report_location(report_dir), labels))


@app.command()
@handle_errors
def summarize(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
):
    """Write the per-shard summaries a report directory lacks (reports from before summaries), so that
    `report` reads them instead of every row."""
    from vlmaudit.commands.summarize import run_summarize

    raise typer.Exit(run_summarize(report_location(report_dir)))


@app.command(name="filter")
@handle_errors
def filter_(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
    policy: Annotated[str, typer.Option(help="Policy name (default, strict, permissive) or a YAML file.")] = "default",
    out: Annotated[str, typer.Option("--out", help="Where keep/drop/review.parquet and summary.json go (a directory or an s3://... URL).")] = "filtered",
    on_failed: Annotated[str, typer.Option(help="Action for samples that were not scored ok: keep, drop, review.")] = "review",
    allow_partial: Annotated[bool, typer.Option(help="Filter even if some shards have no finished report.")] = False,
    write_shards: Annotated[Optional[Path], typer.Option(help="Also write shards of the kept samples here (tars; Parquet/Arrow for such input).")] = None,
    rules: RulesOpt = None,
    shards: ShardsOpt = [],
    allow_scheme: SchemeOpt = [],
    max_member_bytes: MemberBytesOpt = 64 << 20,
    allow_mixed: MixedOpt = False,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = 30.0,
    bank: Annotated[list[str], typer.Option("--bank", metavar="[KIND:]FILE", help="Also drop (or the policy's `match:` action) samples matching this hash bank; repeatable.")] = [],
):
    """Decide keep / drop / review per sample from stored scores and a policy (no rescan)."""
    from vlmaudit.commands.filter import run_filter_command
    from vlmaudit.progress import ProgressOptions
    from vlmaudit.report.reread import ReReadOptions

    run_filter_command(report_location(report_dir), policy, report_location(out), on_failed, allow_partial, write_shards, rules,
                       ReReadOptions(shards, allow_scheme, max_member_bytes), allow_mixed,
                       ProgressOptions(quiet, progress_every), bank)


@app.command()
@handle_errors
def sample(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
    size: Annotated[int, typer.Option("--size", help="How many samples to draw for review.")],
    out: Annotated[Path, typer.Option("--out", help="Review folder: review.csv, review.parquet, review.html, design.json.")],
    seed: Annotated[int, typer.Option(help="Random seed (the same seed and reports draw the same rows).")] = 0,
    strata: Annotated[str, typer.Option(help="top: score bands of the top category score; category: score bands per top-scoring category.")] = "top",
    bands: Annotated[int, typer.Option(help="Score bands (strata) per group, cut by the cumulative square-root-of-f rule.")] = 5,
    overwrite: Annotated[bool, typer.Option(help="Replace a review sheet already in --out (its labels are lost).")] = False,
    redact: Annotated[bool, typer.Option(help="No captions or URLs on the review page.")] = False,
    blur: Annotated[bool, typer.Option(help="Blur the review page's images (click to reveal).")] = True,
    shards: ShardsOpt = [],
    allow_scheme: SchemeOpt = [],
    max_member_bytes: MemberBytesOpt = 64 << 20,
    allow_mixed: MixedOpt = False,
):
    """Draw a stratified random sample for human review (for `vlmaudit estimate`)."""
    from vlmaudit.commands.sample import SampleRequest, print_design, run_sample
    from vlmaudit.report.reread import ReReadOptions

    request = SampleRequest(report_location(report_dir), out, size, seed, strata, bands, overwrite, redact, blur,
                            ReReadOptions(shards, allow_scheme, max_member_bytes), allow_mixed)
    print_design(run_sample(request), out)


@app.command()
@handle_errors
def estimate(
    report_dir: Annotated[str, typer.Argument(help="The reports the review sample was drawn from.")],
    labels: Annotated[Path, typer.Option("--labels", help="The review folder (or its review.csv / review.parquet) with the labels column filled.")],
    fmt: Annotated[str, typer.Option("--format", help="table, json, markdown or html.")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the result to this file.")] = None,
    allow_mixed: MixedOpt = False,
):
    """Prevalence per category with 95 % intervals, and the thresholds' precision / recall, from review labels."""
    from vlmaudit.commands.estimate import run_estimate

    run_estimate(report_location(report_dir), labels, "json" if as_json else fmt, output, allow_mixed)


@app.command()
@handle_errors
def match(
    report_dir: Annotated[Path, typer.Argument(help="The reports whose stored hashes are matched (images are never read).")],
    bank: Annotated[list[str], typer.Option("--bank", metavar="[KIND:]FILE", help="Hash bank: PDQ CSV/TSV (ThreatExchange / HMA), MD5 or SHA-256 list, or a previous matches.parquet; repeatable.")] = [],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where the removal list goes (default REPORTS/matches).")] = None,
    pdq_distance: Annotated[int, typer.Option(min=0, max=63, help="PDQ: largest Hamming distance that matches (Meta recommends 31).")] = 31,
    min_quality: Annotated[int, typer.Option(min=0, max=100, help="PDQ: skip report hashes below this quality.")] = 50,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
):
    """Match stored image hashes against hash banks; write a removal list (never shows an image)."""
    from vlmaudit.commands.match import run_match
    from vlmaudit.match.run import MatchOptions

    raise typer.Exit(run_match(report_dir, bank, out, MatchOptions(pdq_distance, min_quality), quiet))


@app.command(name="train-head")
@handle_errors
def train_head(
    data: Annotated[Path, typer.Option(help="Labelled images: Parquet (image, category, unsafe_concept) or a dir with a CSV/JSONL.")],
    vision_model: Annotated[str, typer.Option(help="Frozen vision tower: CLIP/SigLIP hub id or dir, or a LLaVA-style VLM.")],
    out: Annotated[Path, typer.Option("--out", help="Head directory: head.safetensors, head_config.json, metrics.json.")],
    safe_images: Annotated[Optional[Path], typer.Option(help="A directory of safe images (the safe class).")] = None,
    epochs: EpochsOpt = 20,
    batch_size: TrainBatchOpt = 64,
    lr: LrOpt = 1e-3,
    val_fraction: ValFractionOpt = 0.2,
    tokens: TokensOpt = 16,
    dim: DimOpt = 256,
    seed: int = 0,
    device: str = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache (default OUT/feature-cache).")] = None,
    rules: RulesOpt = None,
    allow_unsafe_weights: UnsafeWeightsOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
):
    """Train the safety head (SafeVLM safety projector + tokens + head) on a frozen vision tower."""
    from vlmaudit.commands.train_head import TrainHeadRequest, run_train_head

    quiet_libraries()
    settings = train_settings(epochs, batch_size, lr, val_fraction, dim, tokens, seed)
    request = TrainHeadRequest(data, vision_model, out, safe_images, rules, device, cache_dir, allow_unsafe_weights,
                               trust_remote_code, quiet)
    run_train_head(request, settings)


@app.command()
@handle_errors
def bench(
    model: Annotated[Optional[str], typer.Option(help="Checkpoint to time (default: a random-weight model of --size).")] = None,
    size: Annotated[str, typer.Option(help="Random model size: tiny, vit-b-32, vit-l-14 (clip); tiny, llava-0.5b (vlm).")] = "vit-b-32",
    backend: Annotated[str, typer.Option(help="clip (scorer) or vlm (judge).")] = "clip",
    shards: Annotated[int, typer.Option(min=1)] = 4,
    per_shard: Annotated[int, typer.Option(min=1)] = 64,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    workers: Annotated[int, typer.Option(min=0)] = 2,
    device: str = "auto",
    precision: str = "auto",
    decode: Annotated[str, typer.Option(help="auto, cpu or gpu JPEG decoding.")] = "auto",
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    peak_tflops: Annotated[Optional[float], typer.Option(help="Peak TFLOP/s for MFU (default: the GPU's dense fp16/bf16 peak from a table).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = 30.0,
):
    """Time the scan end to end against the bare model forward; FLOPs per sample, TFLOP/s, MFU."""
    import json

    from vlmaudit.commands.bench import BenchRequest, format_bench, run_bench
    from vlmaudit.progress import ProgressOptions

    quiet_libraries()
    result = run_bench(BenchRequest(model, size, backend, shards, per_shard, batch_size, workers, device, precision,
                                    decode, compile_model, peak_tflops, ProgressOptions(quiet, progress_every)))
    typer.echo(json.dumps(result, indent=2) if as_json else format_bench(result))


@app.command()
@handle_errors
def demo(directory: Annotated[Path, typer.Argument(help="Where the demo shards, model and reports go.")] = Path("vlmaudit-demo")):
    """Offline demo: builds shards and a tiny RANDOM CLIP (meaningless scores), scans, shows the dashboard."""
    from vlmaudit.commands.demo import run_demo

    quiet_libraries()
    raise typer.Exit(run_demo(directory))


@app.command()
@handle_errors
def calibrate(
    report_dir: Annotated[Path, typer.Argument(help="A directory written by `vlmaudit scan`.")],
    labels: Annotated[Path, typer.Option(help="Human labels, CSV or Parquet: key, category (or concept), label (1/0).")],
    target_precision: Annotated[float, typer.Option(help="Precision each threshold must reach on the labels.")],
    out: Annotated[Path, typer.Option("--out", help="Thresholds YAML to write (for scan/report --thresholds).")],
    per: Annotated[str, typer.Option(help="category or concept: one threshold per what the labels name.")] = "category",
    modality: Annotated[str, typer.Option(help="image, caption or both (a sample's score is the max of both).")] = "both",
    min_flagged: Annotated[int, typer.Option(min=1, help="Only thresholds that flag at least this many labelled samples.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Pick thresholds from stored scores and human labels; print precision / recall / support."""
    import json

    from vlmaudit.commands.calibrate import CalibrateRequest, print_calibration, run_calibrate

    summary = run_calibrate(CalibrateRequest(report_dir, labels, target_precision, out, per, modality, min_flagged))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_calibration(summary)


@app.command(name="eval")
@handle_errors
def eval_(
    data: Annotated[Path, typer.Option(help="UnsafeConcepts data: HF Parquet (image, category, unsafe_concept) or the authors' dir (metadata.jsonl / perception_metadata.jsonl).")],
    model: Annotated[Optional[str], typer.Option(help="VLM judge, CLIP/SigLIP checkpoint (hub id or dir), or opennsfw.")] = None,
    backend: Annotated[str, typer.Option(help="auto (vlm for chat VLMs, head with --head, else clip), clip, vlm or head.")] = "auto",
    benign: Annotated[Optional[Path], typer.Option(help="Scorers: a directory of images with none of the concepts (AUROC, FPR).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or markdown.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write JSON / Markdown here.")] = None,
    rules: RulesOpt = None,
    thresholds: Annotated[Optional[Path], typer.Option(help="Thresholds YAML for the FPR/TPR at thresholds (default: the rules').")] = None,
    prompts: Annotated[str, typer.Option(help="VLM judge questions: a name in rules/prompts/ or a .yaml file.")] = "unsafeconcepts",
    head: Annotated[Optional[Path], typer.Option(help="Safety head directory (--backend head).")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N items.")] = None,
    device: str = "auto",
    precision: str = "auto",
    allow_unsafe_weights: UnsafeWeightsOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = 30.0,
    text_concepts: Annotated[str, typer.Option(help="Judges' text alignment: all (75 concepts x 5 prompts, as the paper) or present (concepts with images here).")] = "all",
):
    """UnsafeConcepts metrics: perception / alignment / modality gap (judges), top-k / AUROC (scorers)."""
    from vlmaudit.commands.evaluate import EvalRequest, emit, run_eval

    quiet_libraries()
    request = EvalRequest(data, model, backend, benign, fmt, rules, thresholds, prompts, head, batch_size, limit,
                          device, precision, allow_unsafe_weights, trust_remote_code, quiet, text_concepts,
                          progress_every, output)
    emit(run_eval(request), fmt, output)


@app.command()
@handle_errors
def distill(
    report_dir: Annotated[Path, typer.Argument(help="Reports of `scan --backend vlm` or `--backend cascade` (the judge's verdicts).")],
    shards: Annotated[list[str], typer.Option("--shards", help="The shards those reports were scanned from (same specs as scan).")],
    out: Annotated[Path, typer.Option("--out", help="Head directory (use with scan --backend cascade --head OUT).")],
    vision_model: Annotated[Optional[str], typer.Option(help="Frozen vision tower (default: the cascade's CLIP screen).")] = None,
    cutoff: Annotated[float, typer.Option(min=0.0, max=1.0, help="Judge P(unsafe) at or above this = unsafe.")] = 0.5,
    max_samples: Annotated[Optional[int], typer.Option(min=1, help="Use at most this many judged samples.")] = None,
    epochs: EpochsOpt = 20,
    batch_size: TrainBatchOpt = 64,
    lr: LrOpt = 1e-3,
    val_fraction: ValFractionOpt = 0.2,
    tokens: TokensOpt = 16,
    dim: DimOpt = 256,
    seed: int = 0,
    device: str = "auto",
    rules: RulesOpt = None,
    allow_unsafe_weights: UnsafeWeightsOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = 30.0,
):
    """Train the safety head on the VLM judge's stored verdicts over your own data (no labels)."""
    from vlmaudit.commands.distill import DistillRequest, run_distill

    quiet_libraries()
    settings = train_settings(epochs, batch_size, lr, val_fraction, dim, tokens, seed)
    request = DistillRequest(report_dir, shards, out, vision_model, cutoff, max_samples, rules, device,
                             allow_unsafe_weights, trust_remote_code, quiet, progress_every)
    run_distill(request, settings)


def main() -> None:
    app(prog_name="vlmaudit")


if __name__ == "__main__":
    sys.exit(main())
