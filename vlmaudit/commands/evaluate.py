"""`vlmaudit eval`: UnsafeConcepts metrics of a backend on labelled data in either published layout."""

from __future__ import annotations

from pathlib import Path

from vlmaudit.commands.options import EvalRequest
from vlmaudit.errors import UserError

FORMATS = ("table", "json", "markdown")


def run_eval(request: EvalRequest) -> dict:
    from rich.console import Console

    from vlmaudit.evaluate import run
    from vlmaudit.evaluate.data import benign_images, load_eval_data
    from vlmaudit.rulebook.load import load_rules

    if request.text_concepts not in ("all", "present"):
        raise UserError(f"--text-concepts {request.text_concepts}: expected all or present")
    if request.fmt not in FORMATS:
        raise UserError(f"--format {request.fmt}: expected one of {', '.join(FORMATS)}")
    if request.output is not None:
        check_output_file(request.output)
    console = Console(stderr=True, quiet=request.quiet)
    rules = load_rules(request.rules, request.thresholds)
    items = load_eval_data(request.data, rules.taxonomy)[:request.limit]
    benign = benign_images(request.benign) if request.benign else None
    probe = build_probe(request, rules)
    if probe.kind == "judge" and benign is not None:
        console.print("[yellow]--benign is used with scorers (AUROC); a judge's metrics need no benign images")
    total = len(items) + (len(benign) if benign is not None and probe.kind != "judge" else 0)
    with request.progress().start("eval", samples=total, console=console, flagged=None) as progress:
        if probe.kind == "judge":
            result = run.evaluate_judge(probe, items, rules.taxonomy, request.batch_size, progress, request.text_concepts)
        else:
            result = run.evaluate_scorer(probe, items, rules.taxonomy, benign, rules.thresholds.image,
                                         request.batch_size, progress)
    return {"model": probe.describe(), **result}


def check_output_file(path: Path) -> None:
    """--output must be writable before minutes of model work are spent."""
    import os

    if path.is_dir():
        raise UserError(f"--output {path}: is a directory")
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--output {path}: cannot write there")


def build_probe(request: EvalRequest, rules):
    from vlmaudit.backends import BackendOptions, build_backend
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.evaluate.probes import JudgeProbe, ScoreProbe

    if not request.model and request.head is None:
        raise UserError("eval needs --model (a VLM judge, a CLIP/SigLIP checkpoint or opennsfw) or --head HEAD_DIR")
    backend = _backend_name(request)
    if backend == "cascade":
        raise UserError("--backend cascade: evaluate its stages one at a time (clip/head/opennsfw, then vlm)")
    options = ModelOptions(request.model, request.device, request.precision, request.allow_unsafe_weights,
                           request.trust_remote_code)
    built = build_backend(backend, rules, options, BackendOptions(prompts=request.prompts, head=request.head))
    return JudgeProbe(built) if backend == "vlm" else ScoreProbe(built)


def _backend_name(request: EvalRequest) -> str:
    """auto: vlm for an image-text-to-text checkpoint, head with --head, else the clip scorer."""
    if request.backend != "auto":
        return request.backend
    if request.head is not None:
        return "head"
    from vlmaudit.backends.opennsfw import MODEL_NAME

    if request.model == MODEL_NAME:
        return "clip"
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from vlmaudit.backends.modelref import load_config

    config = load_config(request.model, request.trust_remote_code)
    return "vlm" if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES else "clip"


def emit(result: dict, fmt: str, output: Path | None) -> None:
    import json

    from vlmaudit.evaluate.render import print_table, to_markdown

    if fmt == "table" and output is None:
        print_table(result)
        return
    text = json.dumps(result, indent=2) if fmt == "json" else to_markdown(result)
    if output:
        from vlmaudit.storage.localfiles import write_text_atomic

        write_text_atomic(output, text + "\n")
    else:
        print(text)
