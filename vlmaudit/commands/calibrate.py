"""`vlmaudit calibrate`: per category or concept, the lowest threshold whose precision on the
user's labels reaches the target; a thresholds file that scan --thresholds / report --thresholds
(or a rules directory's thresholds.yaml) accept."""

from __future__ import annotations


import numpy as np

from vlmaudit.commands.options import CalibrateRequest
from vlmaudit.errors import UserError

PERS = ("category", "concept")


def run_calibrate(request: CalibrateRequest) -> dict:
    from vlmaudit.calibrate.choose import choose
    from vlmaudit.calibrate.labels import load_labels
    from vlmaudit.calibrate.scores import MODALITIES, group_scores, labelled_rows
    from vlmaudit.report.reportset import ReportSet

    _check(request, MODALITIES)
    reports = ReportSet.open(request.report_dir)  # the checks `report` runs: footers, stats, mixed models
    files, meta = reports.files, reports.meta
    ids, names, members = _groups(meta, request.per)
    labels = load_labels(request.labels, request.per, ids, names)
    rows, image, caption = labelled_rows(labels, meta, files)
    results = []
    for group in ids:
        mine = (labels.targets == group) & (rows >= 0)
        if not (labels.targets == group).any():
            continue
        scores = group_scores(image[rows[mine]], caption[rows[mine]], members[group], request.modality)
        results.append({"id": group, **vars(choose(scores, labels.values[mine], request.target_precision,
                                                      request.min_flagged))})
    missing = int((rows < 0).sum())
    summary = {"target_precision": request.target_precision, "per": request.per, "modality": request.modality,
               "labels": int(len(rows)), "labels_without_report_row": missing, "groups": results, "out": str(request.out)}
    _write(request, results)
    return summary


def _check(request: CalibrateRequest, modalities) -> None:
    if request.per not in PERS:
        raise UserError(f"--per {request.per}: expected category or concept")
    if request.modality not in modalities:
        raise UserError(f"--modality {request.modality}: expected image, caption or both")
    if not 0 < request.target_precision <= 1:
        raise UserError(f"--target-precision {request.target_precision}: must be in (0, 1]")


def _groups(meta: dict, per: str):
    """(ids, names, id -> boolean concept mask) of the report's categories or concepts."""
    concept_categories = np.array(meta["concept_categories"], dtype=object)
    if per == "category":
        return meta["categories"], meta["category_names"], {c: concept_categories == c for c in meta["categories"]}
    concepts = np.array(meta["concepts"], dtype=object)
    return meta["concepts"], meta["concept_names"], {c: concepts == c for c in meta["concepts"]}


def _write(request: CalibrateRequest, results: list[dict]) -> None:
    from vlmaudit.calibrate.scores import MODALITIES
    from vlmaudit.rulebook.thresholds import thresholds_yaml

    entries = {r["id"]: {m: r["threshold"] for m in MODALITIES[request.modality]}
               for r in results if r["threshold"] is not None}
    section = "categories" if request.per == "category" else "concepts"
    header = (f"written by `vlmaudit calibrate`: target precision {request.target_precision}, per {request.per}, "
              f"modality {request.modality}.\nCategories / concepts not listed could not be calibrated and keep the "
              "thresholds this file is applied to.")
    request.out.parent.mkdir(parents=True, exist_ok=True)
    from vlmaudit.storage.localfiles import write_text_atomic

    write_text_atomic(request.out, thresholds_yaml({section: entries}, header))


def print_calibration(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from vlmaudit.report.safetext import rich_markup as escape  # markup and terminal control characters

    console = Console()

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=f"target precision {summary['target_precision']} per {summary['per']}, modality "
                        f"{summary['modality']}")
    for column in (summary["per"], "threshold", "precision", "recall", "flagged", "support", "negatives"):
        table.add_column(column, justify="left" if column == summary["per"] else "right")
    for r in summary["groups"]:
        table.add_row(escape(r["id"]), fmt(r["threshold"]), fmt(r["precision"]), fmt(r["recall"]), str(r["flagged"]),
                      str(r["positives"]), str(r["negatives"]))
    console.print(table)
    for r in summary["groups"]:
        if r["threshold"] is None:
            why = "no positive labels" if not r["positives"] else f"best precision {fmt(r['best_precision'])}"
            console.print(f"[yellow]{escape(r['id'])}: target precision {summary['target_precision']} cannot be "
                          f"reached ({why}); not written")
    if summary["labels_without_report_row"]:
        console.print(f"[yellow]{summary['labels_without_report_row']} label rows have no sample in the reports")
    console.print(f"thresholds written to {escape(summary['out'])} (use: vlmaudit report DIR --thresholds FILE, "
                  "or vlmaudit scan ... --thresholds FILE)")
