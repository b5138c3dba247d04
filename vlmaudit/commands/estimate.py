"""`vlmaudit estimate`: prevalence per category with 95 % intervals from a labelled review sheet,
and the precision / recall of the current thresholds."""

from __future__ import annotations

from pathlib import Path

from vlmaudit.commands.options import EstimateRequest
from vlmaudit.errors import UserError

FORMATS = ("table", "json", "markdown", "html")


def estimate_for(report_dir, labels: Path, meta: dict, files: list, thr_image, thr_caption) -> dict:
    """The estimate dict of REPORTS against the review sheet LABELS at these thresholds."""
    from vlmaudit.estimate.estimate import estimate
    from vlmaudit.estimate.sheet import locate, read_design, read_labels

    labels_file, design_file = locate(labels)
    design = read_design(design_file)
    if design.get("categories") != meta["categories"]:
        raise UserError(f"{design_file}: drawn from reports with other categories than {report_dir}")
    names = meta.get("category_names") or meta["categories"]
    found = read_labels(labels_file, meta["categories"], names)
    return estimate(files, meta, design, found, thr_image, thr_caption)


def run_estimate(request: EstimateRequest) -> None:
    from vlmaudit.estimate import render
    from vlmaudit.report.reportset import ReportSet
    from vlmaudit.report.safetext import json_text

    report_dir, labels, fmt, output, allow_mixed = (request.report_dir, request.labels, request.fmt, request.output,
                                                    request.allow_mixed)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    reports = ReportSet.open(report_dir, allow_mixed)  # listed, footers and stats read once
    meta = reports.meta
    thr = meta["thresholds"]
    result = estimate_for(report_dir, labels, meta, reports.files, thr["image"], thr["caption"])
    if fmt == "table" and not output:
        render.render_table(result)
        return
    text = {"json": lambda: json_text(result), "markdown": lambda: render.to_markdown(result),
            "html": lambda: render.to_html(result), "table": lambda: render.to_markdown(result)}[fmt]()
    if output:
        from vlmaudit.storage.localfiles import write_text_atomic

        write_text_atomic(output, text)
    else:
        print(text)
