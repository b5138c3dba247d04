"""Command-line entry point: thin typer commands; domain errors become one line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from vlmaudit.commands.options import (BenchRequest, CalibrateRequest, ConceptsRequest, DemoRequest, DistillRequest,
                                       EstimateRequest, EvalRequest, FilterRequest, MatchRequest, ReportRequest,
                                       SampleRequest, SummarizeRequest, TrainHeadRequest, VerifyCardRequest, defaults)
from vlmaudit.commands.scan_request import DEFAULTS as SCAN
from vlmaudit.errors import UserError

# the options' defaults: each command's request record (commands/options.py) is their one source
CONCEPTS, REPORT, VERIFY_CARD = defaults(ConceptsRequest), defaults(ReportRequest), defaults(VerifyCardRequest)
FILTER, SAMPLE, ESTIMATE, MATCH = defaults(FilterRequest), defaults(SampleRequest), defaults(EstimateRequest), defaults(MatchRequest)
TRAIN_HEAD, DISTILL, EVAL = defaults(TrainHeadRequest), defaults(DistillRequest), defaults(EvalRequest)
BENCH, DEMO, CALIBRATE = defaults(BenchRequest), defaults(DemoRequest), defaults(CalibrateRequest)


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
def concepts(rules: RulesOpt = CONCEPTS.rules,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = CONCEPTS.as_json):
    """Print the taxonomy: categories, concepts, thresholds."""
    from vlmaudit.commands.concepts import show_concepts

    show_concepts(ConceptsRequest(rules=rules, as_json=as_json))


@app.command()
@handle_errors
def scan(
    shards: Annotated[list[str], typer.Argument(help="Shards: .tar/.tar.gz/.parquet/.arrow paths, dirs, globs, {a..b} ranges, URLs, pipe:CMD, hf://datasets/ORG/NAME, folders of loose images.")],
    out: Annotated[str, typer.Option("--out", help="Report directory or fsspec URL (s3://bucket/prefix): one Parquet + stats JSON per shard.")],
    model: Annotated[Optional[str], typer.Option(help="Hub id, local checkpoint dir, or opennsfw (bundled, offline). Default: openai/clip-vit-large-patch14; llava-hf/llava-1.5-7b-hf for --backend vlm; the head's vision model for --backend head.")] = SCAN.model,
    backend: Annotated[str, typer.Option(help="clip (CLIP/SigLIP scorer), vlm (VLM judge), head (trained safety head), cascade.")] = SCAN.backend,
    rules: RulesOpt = SCAN.rules,
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
    allow_unsafe_weights: UnsafeWeightsOpt = SCAN.allow_unsafe_weights,
    trust_remote_code: RemoteCodeOpt = SCAN.trust_remote_code,
    quiet: QuietOpt = SCAN.quiet,
    progress_every: ProgressEveryOpt = SCAN.progress_every,
    prompts: Annotated[str, typer.Option(help="VLM judge questions: a name in rules/prompts/ or a .yaml file.")] = SCAN.prompts,
    rationale: Annotated[bool, typer.Option(help="VLM judge: also generate a short explanation for flagged samples.")] = SCAN.rationale,
    head: Annotated[Optional[Path], typer.Option(help="Safety head directory (from `vlmaudit train-head`) for --backend head or cascade.")] = SCAN.head,
    judge_model: Annotated[Optional[str], typer.Option(help="Cascade: the VLM judge (default llava-hf/llava-1.5-7b-hf).")] = SCAN.judge_model,
    escalate_above: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Cascade: judge samples whose top score is >= this.")] = SCAN.escalate_above,
    escalate_top: Annotated[Optional[float], typer.Option(min=0.0, max=100.0, help="Cascade: judge the top PERCENT of each shard by top score.")] = SCAN.escalate_top,
    thresholds: Annotated[Optional[Path], typer.Option(help="Thresholds YAML (e.g. from `vlmaudit calibrate`) applied on top of the rules' thresholds.")] = SCAN.thresholds,
    image_column: Annotated[Optional[str], typer.Option(help="Parquet/Arrow shards: the image column (binary, or a {bytes, path} struct).")] = SCAN.image_column,
    caption_column: Annotated[Optional[str], typer.Option(help="Parquet/Arrow shards: the caption column (default caption, text or TEXT).")] = SCAN.caption_column,
    key_column: Annotated[Optional[str], typer.Option(help="Parquet/Arrow shards: the key column (default key or id; else FILE/ROW).")] = SCAN.key_column,
    split: Annotated[Optional[str], typer.Option(help="hf://datasets/ shards: only this split's files.")] = SCAN.split,
    config: Annotated[Optional[str], typer.Option(help="hf://datasets/ shards: only this config's files.")] = SCAN.config,
    revision: Annotated[Optional[str], typer.Option(help="hf://datasets/ shards: branch, tag or commit (e.g. refs/convert/parquet).")] = SCAN.revision,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (a pool of actors; pip install 'vlmaudit[ray]').")] = SCAN.engine,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (default: a running one, else start a local one).")] = SCAN.ray_address,
    gpus_per_worker: Annotated[Optional[float], typer.Option(min=0.0, help="Ray: GPUs per actor, fractional allowed (default 1 if the cluster has GPUs, else 0).")] = SCAN.gpus_per_worker,
    cpus_per_worker: Annotated[float, typer.Option(min=0.0, help="Ray: CPUs per actor; an actor decodes with int(N)-1 worker processes.")] = SCAN.cpus_per_worker,
    actors: Annotated[Optional[int], typer.Option(min=1, help="Ray: scorer actors (default: one per GPU of the cluster, else 2).")] = SCAN.actors,
    decode: Annotated[str, typer.Option(help="JPEG decoding: auto (gpu when the model is on CUDA and torchvision is installed), cpu, gpu.")] = SCAN.decode,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (clip backend; slow first batch).")] = SCAN.compile,
    folder_shard_size: Annotated[int, typer.Option(min=1, metavar="N", help="Folders of loose images: samples per shard (keep it when resuming).")] = SCAN.folder_shard_size,
    hashes: Annotated[bool, typer.Option("--hashes/--no-hashes", help="SHA-256, MD5 and PDQ of every image, for `vlmaudit match`.")] = SCAN.hashes,
    banks: Annotated[list[str], typer.Option("--bank", metavar="[KIND:]FILE", help="Match this hash bank when the scan ends (OUT/matches); repeatable.")] = SCAN.banks,
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
        compile=compile, progress_every=progress_every, folder_shard_size=folder_shard_size, hashes=hashes,
        banks=banks)
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
    fmt: Annotated[str, typer.Option("--format", help="table, json, markdown, html, or card (an audit card: PATH.md + PATH.json, check it with verify-card).")] = REPORT.fmt,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = REPORT.as_json,
    output: Annotated[Optional[Path], typer.Option("--output", "--out", "-o", help="Write the export to this file (card: default ./audit-card).")] = REPORT.output,
    top: Annotated[int, typer.Option(min=1, help="How many concepts and shards to list.")] = REPORT.top,
    thresholds: Annotated[list[str], typer.Option("--threshold", help="Re-threshold: 0.7 or CONCEPT_OR_CATEGORY=0.6 (repeatable).")] = REPORT.thresholds,
    policy: Annotated[Optional[str], typer.Option(help="Flag with a policy's rules instead of thresholds.")] = REPORT.policy,
    category: Annotated[Optional[str], typer.Option(help="Only this category's concepts count.")] = REPORT.category,
    concept: Annotated[Optional[str], typer.Option(help="Only this concept counts; adds its score histogram.")] = REPORT.concept,
    shard: Annotated[Optional[str], typer.Option(help="Only shards whose name matches this glob.")] = REPORT.shard,
    compare: Annotated[Optional[str], typer.Option(help="Another report dir or URL: per-category deltas.")] = REPORT.compare,
    examples: Annotated[int, typer.Option(min=0, help="Example samples per top concept.")] = REPORT.examples,
    redact: Annotated[bool, typer.Option(help="Hide captions and URLs of examples.")] = REPORT.redact,
    blur: Annotated[bool, typer.Option(help="Blur HTML gallery thumbnails (click to reveal).")] = REPORT.blur,
    fail_above: Annotated[list[str], typer.Option(help="CATEGORY=RATE: exit 3 when exceeded (repeatable); exit 2 on an incomplete run unless --allow-incomplete.")] = REPORT.fail_above,
    rules: RulesOpt = REPORT.rules,
    thresholds_file: Annotated[Optional[Path], typer.Option("--thresholds", help="Re-threshold with a thresholds YAML (e.g. from `vlmaudit calibrate`); --threshold applies after it.")] = REPORT.thresholds_file,
    shards: ShardsOpt = REPORT.shards,
    allow_scheme: SchemeOpt = REPORT.allow_scheme,
    max_member_bytes: MemberBytesOpt = REPORT.max_member_bytes,
    allow_mixed: MixedOpt = REPORT.allow_mixed,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="A labelled review sheet (from `vlmaudit sample`): adds prevalence with 95 % intervals and the thresholds' precision / recall.")] = REPORT.labels,
    allow_incomplete: Annotated[bool, typer.Option(help="Let --fail-above gate a run whose shards are not all finished (else exit 2).")] = REPORT.allow_incomplete,
):
    """Summarise scan reports (reads only the reports; the HTML gallery also reads the shards)."""
    from vlmaudit.commands.report import run_report_command

    request = ReportRequest(
        report_dir=report_location(report_dir), fmt=fmt, as_json=as_json, output=output, top=top, thresholds=thresholds,
        policy=policy, category=category, concept=concept, shard=shard, compare=compare and report_location(compare),
        examples=examples, redact=redact, blur=blur, fail_above=fail_above, rules=rules, thresholds_file=thresholds_file,
        shards=shards, allow_scheme=allow_scheme, max_member_bytes=max_member_bytes, allow_mixed=allow_mixed,
        labels=labels, allow_incomplete=allow_incomplete)
    raise typer.Exit(run_report_command(request))


@app.command(name="verify-card")
@handle_errors
def verify_card(
    card: Annotated[Path, typer.Argument(help="The audit card (.json, or the .md beside it) from `report --format card`.")],
    report_dir: Annotated[str, typer.Argument(help="The report directory the card describes.")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help="The labelled review sheet the card's estimates came from (re-checks them).")] = VERIFY_CARD.labels,
):
    """Recompute an audit card's digests and numbers from the reports; exit 1 naming each difference."""
    from vlmaudit.commands.verify_card import run_verify_card

    raise typer.Exit(run_verify_card(VerifyCardRequest(card=card, report_dir=report_location(report_dir), labels=labels)))


@app.command()
@handle_errors
def summarize(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
):
    """Write the per-shard summaries a report directory lacks (reports from before summaries), so that
    `report` reads them instead of every row."""
    from vlmaudit.commands.summarize import run_summarize

    raise typer.Exit(run_summarize(SummarizeRequest(report_dir=report_location(report_dir))))


@app.command(name="filter")
@handle_errors
def filter_(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
    policy: Annotated[str, typer.Option(help="Policy name (default, strict, permissive) or a YAML file.")] = FILTER.policy,
    out: Annotated[str, typer.Option("--out", help="Where keep/drop/review.parquet and summary.json go (a directory or an s3://... URL).")] = FILTER.out,
    on_failed: Annotated[str, typer.Option(help="Action for samples that were not scored ok: keep, drop, review.")] = FILTER.on_failed,
    allow_partial: Annotated[bool, typer.Option(help="Filter even if some shards have no finished report.")] = FILTER.allow_partial,
    write_shards: Annotated[Optional[Path], typer.Option(help="Also write shards of the kept samples here (tars; Parquet/Arrow for such input).")] = FILTER.write_shards,
    rules: RulesOpt = FILTER.rules,
    shards: ShardsOpt = FILTER.shards,
    allow_scheme: SchemeOpt = FILTER.allow_scheme,
    max_member_bytes: MemberBytesOpt = FILTER.max_member_bytes,
    allow_mixed: MixedOpt = FILTER.allow_mixed,
    quiet: QuietOpt = FILTER.quiet,
    progress_every: ProgressEveryOpt = FILTER.progress_every,
    banks: Annotated[list[str], typer.Option("--bank", metavar="[KIND:]FILE", help="Also drop (or the policy's `match:` action) samples matching this hash bank; repeatable.")] = FILTER.banks,
):
    """Decide keep / drop / review per sample from stored scores and a policy (no rescan)."""
    from vlmaudit.commands.filter import run_filter_command

    run_filter_command(FilterRequest(
        report_dir=report_location(report_dir), policy=policy, out=report_location(out), on_failed=on_failed,
        allow_partial=allow_partial, write_shards=write_shards, rules=rules, shards=shards, allow_scheme=allow_scheme,
        max_member_bytes=max_member_bytes, allow_mixed=allow_mixed, quiet=quiet, progress_every=progress_every,
        banks=banks))


@app.command()
@handle_errors
def sample(
    report_dir: Annotated[str, typer.Argument(help="A directory written by `vlmaudit scan` (or an s3://... URL).")],
    size: Annotated[int, typer.Option("--size", help="How many samples to draw for review.")],
    out: Annotated[Path, typer.Option("--out", help="Review folder: review.csv, review.parquet, review.html, design.json.")],
    seed: Annotated[int, typer.Option(help="Random seed (the same seed and reports draw the same rows).")] = SAMPLE.seed,
    strata: Annotated[str, typer.Option(help="top: score bands of the top category score; category: score bands per top-scoring category.")] = SAMPLE.strata,
    bands: Annotated[int, typer.Option(help="Score bands (strata) per group, cut by the cumulative square-root-of-f rule.")] = SAMPLE.bands,
    overwrite: Annotated[bool, typer.Option(help="Replace a review sheet already in --out (its labels are lost).")] = SAMPLE.overwrite,
    redact: Annotated[bool, typer.Option(help="No captions or URLs on the review page.")] = SAMPLE.redact,
    blur: Annotated[bool, typer.Option(help="Blur the review page's images (click to reveal).")] = SAMPLE.blur,
    shards: ShardsOpt = SAMPLE.shards,
    allow_scheme: SchemeOpt = SAMPLE.allow_scheme,
    max_member_bytes: MemberBytesOpt = SAMPLE.max_member_bytes,
    allow_mixed: MixedOpt = SAMPLE.allow_mixed,
):
    """Draw a stratified random sample for human review (for `vlmaudit estimate`)."""
    from vlmaudit.commands.sample import print_design, run_sample

    request = SampleRequest(report_dir=report_location(report_dir), size=size, out=out, seed=seed, strata=strata,
                            bands=bands, overwrite=overwrite, redact=redact, blur=blur, shards=shards,
                            allow_scheme=allow_scheme, max_member_bytes=max_member_bytes, allow_mixed=allow_mixed)
    print_design(run_sample(request), out)


@app.command()
@handle_errors
def estimate(
    report_dir: Annotated[str, typer.Argument(help="The reports the review sample was drawn from.")],
    labels: Annotated[Path, typer.Option("--labels", help="The review folder (or its review.csv / review.parquet) with the labels column filled.")],
    fmt: Annotated[str, typer.Option("--format", help="table, json, markdown or html.")] = ESTIMATE.fmt,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = ESTIMATE.as_json,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the result to this file.")] = ESTIMATE.output,
    allow_mixed: MixedOpt = ESTIMATE.allow_mixed,
):
    """Prevalence per category with 95 % intervals, and the thresholds' precision / recall, from review labels."""
    from vlmaudit.commands.estimate import run_estimate

    run_estimate(EstimateRequest(report_dir=report_location(report_dir), labels=labels, fmt=fmt, as_json=as_json,
                                 output=output, allow_mixed=allow_mixed))


@app.command()
@handle_errors
def match(
    report_dir: Annotated[Path, typer.Argument(help="The reports whose stored hashes are matched (images are never read).")],
    banks: Annotated[list[str], typer.Option("--bank", metavar="[KIND:]FILE", help="Hash bank: PDQ CSV/TSV (ThreatExchange / HMA), MD5 or SHA-256 list, or a previous matches.parquet; repeatable.")] = MATCH.banks,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where the removal list goes (default REPORTS/matches).")] = MATCH.out,
    pdq_distance: Annotated[int, typer.Option(min=0, max=63, help="PDQ: largest Hamming distance that matches (Meta recommends 31).")] = MATCH.pdq_distance,
    min_quality: Annotated[int, typer.Option(min=0, max=100, help="PDQ: skip report hashes below this quality.")] = MATCH.min_quality,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = MATCH.quiet,
):
    """Match stored image hashes against hash banks; write a removal list (never shows an image)."""
    from vlmaudit.commands.match import run_match

    raise typer.Exit(run_match(MatchRequest(report_dir=report_dir, banks=banks, out=out, pdq_distance=pdq_distance,
                                            min_quality=min_quality, quiet=quiet)))


@app.command(name="train-head")
@handle_errors
def train_head(
    data: Annotated[Path, typer.Option(help="Labelled images: Parquet (image, category, unsafe_concept) or a dir with a CSV/JSONL.")],
    vision_model: Annotated[str, typer.Option(help="Frozen vision tower: CLIP/SigLIP hub id or dir, or a LLaVA-style VLM.")],
    out: Annotated[Path, typer.Option("--out", help="Head directory: head.safetensors, head_config.json, metrics.json.")],
    safe_images: Annotated[Optional[Path], typer.Option(help="A directory of safe images (the safe class).")] = TRAIN_HEAD.safe_images,
    epochs: EpochsOpt = TRAIN_HEAD.epochs,
    batch_size: TrainBatchOpt = TRAIN_HEAD.batch_size,
    lr: LrOpt = TRAIN_HEAD.lr,
    val_fraction: ValFractionOpt = TRAIN_HEAD.val_fraction,
    tokens: TokensOpt = TRAIN_HEAD.tokens,
    dim: DimOpt = TRAIN_HEAD.dim,
    seed: int = TRAIN_HEAD.seed,
    device: str = TRAIN_HEAD.device,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache (default OUT/feature-cache).")] = TRAIN_HEAD.cache_dir,
    rules: RulesOpt = TRAIN_HEAD.rules,
    allow_unsafe_weights: UnsafeWeightsOpt = TRAIN_HEAD.allow_unsafe_weights,
    trust_remote_code: RemoteCodeOpt = TRAIN_HEAD.trust_remote_code,
    quiet: QuietOpt = TRAIN_HEAD.quiet,
):
    """Train the safety head (SafeVLM safety projector + tokens + head) on a frozen vision tower."""
    from vlmaudit.commands.train_head import run_train_head

    quiet_libraries()
    run_train_head(TrainHeadRequest(
        data=data, vision_model=vision_model, out=out, safe_images=safe_images, epochs=epochs, batch_size=batch_size,
        lr=lr, val_fraction=val_fraction, tokens=tokens, dim=dim, seed=seed, device=device, cache_dir=cache_dir,
        rules=rules, allow_unsafe_weights=allow_unsafe_weights, trust_remote_code=trust_remote_code, quiet=quiet))


@app.command()
@handle_errors
def bench(
    model: Annotated[Optional[str], typer.Option(help="Checkpoint to time (default: a random-weight model of --size).")] = BENCH.model,
    size: Annotated[str, typer.Option(help="Random model size: tiny, vit-b-32, vit-l-14 (clip); tiny, llava-0.5b (vlm).")] = BENCH.size,
    backend: Annotated[str, typer.Option(help="clip (scorer) or vlm (judge).")] = BENCH.backend,
    shards: Annotated[int, typer.Option(min=1)] = BENCH.shards,
    per_shard: Annotated[int, typer.Option(min=1)] = BENCH.per_shard,
    batch_size: Annotated[int, typer.Option(min=1)] = BENCH.batch_size,
    workers: Annotated[int, typer.Option(min=0)] = BENCH.workers,
    device: str = BENCH.device,
    precision: str = BENCH.precision,
    decode: Annotated[str, typer.Option(help="auto, cpu or gpu JPEG decoding.")] = BENCH.decode,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = BENCH.compile,
    peak_tflops: Annotated[Optional[float], typer.Option(help="Peak TFLOP/s for MFU (default: the GPU's dense fp16/bf16 peak from a table).")] = BENCH.peak_tflops,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = BENCH.as_json,
    quiet: QuietOpt = BENCH.quiet,
    progress_every: ProgressEveryOpt = BENCH.progress_every,
):
    """Time the scan end to end against the bare model forward; FLOPs per sample, TFLOP/s, MFU."""
    import json

    from vlmaudit.commands.bench import format_bench, run_bench

    quiet_libraries()
    result = run_bench(BenchRequest(
        model=model, size=size, backend=backend, shards=shards, per_shard=per_shard, batch_size=batch_size,
        workers=workers, device=device, precision=precision, decode=decode, compile=compile, peak_tflops=peak_tflops,
        as_json=as_json, quiet=quiet, progress_every=progress_every))
    typer.echo(json.dumps(result, indent=2) if as_json else format_bench(result))


@app.command()
@handle_errors
def demo(directory: Annotated[Path, typer.Argument(help="Where the demo shards, model and reports go.")] = DEMO.directory):
    """Offline demo: builds shards and a tiny RANDOM CLIP (meaningless scores), scans, shows the dashboard."""
    from vlmaudit.commands.demo import run_demo

    quiet_libraries()
    raise typer.Exit(run_demo(DemoRequest(directory=directory)))


@app.command()
@handle_errors
def calibrate(
    report_dir: Annotated[Path, typer.Argument(help="A directory written by `vlmaudit scan`.")],
    labels: Annotated[Path, typer.Option(help="Human labels, CSV or Parquet: key, category (or concept), label (1/0).")],
    target_precision: Annotated[float, typer.Option(help="Precision each threshold must reach on the labels.")],
    out: Annotated[Path, typer.Option("--out", help="Thresholds YAML to write (for scan/report --thresholds).")],
    per: Annotated[str, typer.Option(help="category or concept: one threshold per what the labels name.")] = CALIBRATE.per,
    modality: Annotated[str, typer.Option(help="image, caption or both (a sample's score is the max of both).")] = CALIBRATE.modality,
    min_flagged: Annotated[int, typer.Option(min=1, help="Only thresholds that flag at least this many labelled samples.")] = CALIBRATE.min_flagged,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = CALIBRATE.as_json,
):
    """Pick thresholds from stored scores and human labels; print precision / recall / support."""
    import json

    from vlmaudit.commands.calibrate import print_calibration, run_calibrate

    summary = run_calibrate(CalibrateRequest(report_dir=report_dir, labels=labels, target_precision=target_precision,
                                             out=out, per=per, modality=modality, min_flagged=min_flagged,
                                             as_json=as_json))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_calibration(summary)


@app.command(name="eval")
@handle_errors
def eval_(
    data: Annotated[Path, typer.Option(help="UnsafeConcepts data: HF Parquet (image, category, unsafe_concept) or the authors' dir (metadata.jsonl / perception_metadata.jsonl).")],
    model: Annotated[Optional[str], typer.Option(help="VLM judge, CLIP/SigLIP checkpoint (hub id or dir), or opennsfw.")] = EVAL.model,
    backend: Annotated[str, typer.Option(help="auto (vlm for chat VLMs, head with --head, else clip), clip, vlm or head.")] = EVAL.backend,
    benign: Annotated[Optional[Path], typer.Option(help="Scorers: a directory of images with none of the concepts (AUROC, FPR).")] = EVAL.benign,
    fmt: Annotated[str, typer.Option("--format", help="table, json or markdown.")] = EVAL.fmt,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write JSON / Markdown here.")] = EVAL.output,
    rules: RulesOpt = EVAL.rules,
    thresholds: Annotated[Optional[Path], typer.Option(help="Thresholds YAML for the FPR/TPR at thresholds (default: the rules').")] = EVAL.thresholds,
    prompts: Annotated[str, typer.Option(help="VLM judge questions: a name in rules/prompts/ or a .yaml file.")] = EVAL.prompts,
    head: Annotated[Optional[Path], typer.Option(help="Safety head directory (--backend head).")] = EVAL.head,
    batch_size: Annotated[int, typer.Option(min=1)] = EVAL.batch_size,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N items.")] = EVAL.limit,
    device: str = EVAL.device,
    precision: str = EVAL.precision,
    allow_unsafe_weights: UnsafeWeightsOpt = EVAL.allow_unsafe_weights,
    trust_remote_code: RemoteCodeOpt = EVAL.trust_remote_code,
    quiet: QuietOpt = EVAL.quiet,
    progress_every: ProgressEveryOpt = EVAL.progress_every,
    text_concepts: Annotated[str, typer.Option(help="Judges' text alignment: all (75 concepts x 5 prompts, as the paper) or present (concepts with images here).")] = EVAL.text_concepts,
):
    """UnsafeConcepts metrics: perception / alignment / modality gap (judges), top-k / AUROC (scorers)."""
    from vlmaudit.commands.evaluate import emit, run_eval

    quiet_libraries()
    request = EvalRequest(
        data=data, model=model, backend=backend, benign=benign, fmt=fmt, output=output, rules=rules,
        thresholds=thresholds, prompts=prompts, head=head, batch_size=batch_size, limit=limit, device=device,
        precision=precision, allow_unsafe_weights=allow_unsafe_weights, trust_remote_code=trust_remote_code,
        quiet=quiet, progress_every=progress_every, text_concepts=text_concepts)
    emit(run_eval(request), fmt, output)


@app.command()
@handle_errors
def distill(
    report_dir: Annotated[Path, typer.Argument(help="Reports of `scan --backend vlm` or `--backend cascade` (the judge's verdicts).")],
    shards: Annotated[list[str], typer.Option("--shards", help="The shards those reports were scanned from (same specs as scan).")],
    out: Annotated[Path, typer.Option("--out", help="Head directory (use with scan --backend cascade --head OUT).")],
    vision_model: Annotated[Optional[str], typer.Option(help="Frozen vision tower (default: the cascade's CLIP screen).")] = DISTILL.vision_model,
    cutoff: Annotated[float, typer.Option(min=0.0, max=1.0, help="Judge P(unsafe) at or above this = unsafe.")] = DISTILL.cutoff,
    max_samples: Annotated[Optional[int], typer.Option(min=1, help="Use at most this many judged samples.")] = DISTILL.max_samples,
    epochs: EpochsOpt = DISTILL.epochs,
    batch_size: TrainBatchOpt = DISTILL.batch_size,
    lr: LrOpt = DISTILL.lr,
    val_fraction: ValFractionOpt = DISTILL.val_fraction,
    tokens: TokensOpt = DISTILL.tokens,
    dim: DimOpt = DISTILL.dim,
    seed: int = DISTILL.seed,
    device: str = DISTILL.device,
    rules: RulesOpt = DISTILL.rules,
    allow_unsafe_weights: UnsafeWeightsOpt = DISTILL.allow_unsafe_weights,
    trust_remote_code: RemoteCodeOpt = DISTILL.trust_remote_code,
    quiet: QuietOpt = DISTILL.quiet,
    progress_every: ProgressEveryOpt = DISTILL.progress_every,
):
    """Train the safety head on the VLM judge's stored verdicts over your own data (no labels)."""
    from vlmaudit.commands.distill import run_distill

    quiet_libraries()
    run_distill(DistillRequest(
        report_dir=report_dir, shards=shards, out=out, vision_model=vision_model, cutoff=cutoff, max_samples=max_samples,
        epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, tokens=tokens, dim=dim, seed=seed,
        device=device, rules=rules, allow_unsafe_weights=allow_unsafe_weights, trust_remote_code=trust_remote_code,
        quiet=quiet, progress_every=progress_every))


def main() -> None:
    app(prog_name="vlmaudit")


if __name__ == "__main__":
    sys.exit(main())
