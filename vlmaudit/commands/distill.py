"""`vlmaudit distill`: train the safety head on the judge's verdicts stored in reports (no human
labels), report held-out agreement with the judge; the head then serves as the cascade's first
stage (`scan --backend cascade --head OUT`)."""

from __future__ import annotations

import json

from vlmaudit.commands.options import DistillRequest
from vlmaudit.errors import UserError


def run_distill(request: DistillRequest) -> dict:
    from rich.console import Console

    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.vision import VisionTower
    from vlmaudit.commands.train_head import _head_config, _print_metrics, _validation_metrics
    from vlmaudit.head import training as T
    from vlmaudit.head.distill import judge_verdicts, judged_features
    from vlmaudit.head.model import save_head
    from vlmaudit.storage.localfiles import check_writable_dir
    from vlmaudit.report.reportset import ReportSet
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.runinfo import plan_jobs
    from vlmaudit.scan.worker import ScanSettings

    settings = request.training()
    check_writable_dir(request.out)  # like every check here, before the vision tower loads
    console = Console(stderr=True, quiet=request.quiet)
    taxonomy = load_rules(request.rules).taxonomy
    reports = ReportSet.open(request.report_dir)  # the checks `report` runs: footers, stats, mixed models
    files, meta = reports.files, reports.meta
    verdicts = judge_verdicts(files, meta, taxonomy, request.cutoff, request.max_samples)
    jobs, _ = plan_jobs(request.shards)
    model = vision_model(request, meta)  # every check above runs before the vision tower loads
    tower = VisionTower(ModelOptions(model, request.device, "fp32", request.allow_unsafe_weights,
                                     request.trust_remote_code, flag="--vision-model"))
    judged = [job for job in jobs if verdicts.get(job.name)]
    total = sum(len(verdicts[job.name]) for job in judged)
    with request.progress().start("features", shards=len(judged), samples=total, console=console,
                                  flagged=None) as progress:
        features, concepts, categories = judged_features(tower, judged, verdicts,
                                                         ScanSettings(batch_size=settings.extract_batch, workers=0),
                                                         progress)
    console.print(f"{len(features)} judged images ({int((categories == -1).sum())} judged safe)")
    head, train_idx, val_idx = T.train(features, concepts, categories, len(taxonomy.concepts),
                                       len(taxonomy.categories), settings, tower.device, console.print)
    metrics = _validation_metrics(head, features, concepts, categories, val_idx, taxonomy, tower.device)
    metrics.update(train_samples=int(len(train_idx)), distilled_from=str(request.report_dir), cutoff=request.cutoff,
                   judge=meta.get("model", {}).get("judge", meta.get("model", {})).get("model"))
    save_head(head, request.out, _head_config(tower, taxonomy, settings, features.shape, metrics))
    from vlmaudit.storage.localfiles import write_text_atomic

    write_text_atomic(request.out / "metrics.json", json.dumps(metrics, indent=2))
    _print_metrics(console, metrics)
    console.print(f"held-out agreement with the judge: unsafe vs safe {_fmt(metrics['unsafe_vs_safe_accuracy'])}, "
                  f"category {_fmt(metrics['category_accuracy'])} on {metrics['samples']} samples")
    console.print(f"head written to {request.out} (use: vlmaudit scan ... --backend cascade --head {request.out})")
    return metrics


def vision_model(request: DistillRequest, meta: dict) -> str:
    """--vision-model: the model to load comes from the command line only. A report may suggest
    one (the cascade's CLIP/SigLIP screen) in the error message; it is never loaded from there."""
    if request.vision_model:
        return request.vision_model
    from vlmaudit.report.safetext import safe_text

    screen = meta.get("model", {}).get("screen", {})
    hint = ""
    if isinstance(screen, dict) and screen.get("backend") == "clip" and isinstance(screen.get("model"), str):
        hint = f"; these reports name {safe_text(screen['model'][:200])!r} as their screen (pass it if you trust it)"
    raise UserError("distill needs --vision-model (a CLIP/SigLIP checkpoint or LLaVA-style VLM)" + hint)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
