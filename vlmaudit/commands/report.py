"""`vlmaudit report`: re-threshold, slice, compare, render or export, and gate a build."""

from __future__ import annotations


from vlmaudit.commands.options import ReportRequest
from vlmaudit.report.known_content import apply_known_matches
from vlmaudit.errors import UserError
from vlmaudit.rulebook.thresholds import target_mask

FORMATS = ("table", "json", "markdown", "html", "card")


def build_view(request: ReportRequest, meta: dict):
    from vlmaudit.report.summary import default_view

    view = default_view(meta, request.examples)
    _check_id(request.category, meta["categories"], "--category")
    _check_id(request.concept, meta["concepts"], "--concept")
    for option, value in (("--category", request.category), ("--concept", request.concept)):
        if value:
            view.concepts = target_mask(meta["concepts"], meta["concept_categories"], value, option, value)
    view.shard_glob = request.shard
    if request.thresholds_file:
        from vlmaudit.rulebook.thresholds import apply_to_report

        apply_to_report(request.thresholds_file, meta, view.thr_image, view.thr_caption)
    for text in request.thresholds:
        _override(view, meta, text)
    overrides = ([f"file {request.thresholds_file.name}"] if request.thresholds_file else []) + request.thresholds
    if overrides:
        view.source = "override: " + ", ".join(overrides)
    if request.policy:
        from vlmaudit.rulebook.policy import load_policy
        from vlmaudit.rulebook.load import find_rule_file

        path = find_rule_file("policies", request.policy, request.rules)
        view.policy = load_policy(path, meta["concepts"], meta["concept_categories"])
    return view


def _check_id(value, known, option):
    if value and value not in known:
        raise UserError(f"{option} {value!r}: not in this report's taxonomy")


def _override(view, meta: dict, text: str) -> None:
    target, _, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"--threshold {text!r}: expected NUMBER or ID=NUMBER") from None
    if not 0 <= number <= 1:
        raise UserError(f"--threshold {text!r}: must be between 0 and 1")
    mask = target_mask(meta["concepts"], meta["concept_categories"], target or "default", "--threshold", text)
    view.thr_image[mask] = number
    view.thr_caption[mask] = number


def parse_limits(items: list[str], categories: list[str]) -> dict[str, float]:
    limits = {}
    for text in items:
        category, _, value = text.partition("=")
        if category not in categories:
            raise UserError(f"--fail-above {text!r}: unknown category {category!r}")
        try:
            limits[category] = float(value)
        except ValueError:
            raise UserError(f"--fail-above {text!r}: expected CATEGORY=RATE (e.g. sexual=0.001)") from None
    return limits


def run_report_command(request: ReportRequest) -> int:
    if request.fmt not in FORMATS:
        raise UserError(f"--format {request.fmt}: expected one of {', '.join(FORMATS)}")
    if request.fmt == "html" and not request.output:
        raise UserError("--format html needs --output FILE")
    reports = _open(request, request.report_dir)  # listed, footers, stats and run.json read once, passed down
    summary, meta = _summarize(request, reports)
    add_completeness(summary, request, reports)
    apply_known_matches(summary, request.report_dir)  # before any example is shown or re-read
    limits = parse_limits(request.fail_above, meta["categories"])
    check_coverage(request, meta, limits, reports.run)
    if request.compare:
        _add_comparison(summary, request)
    if request.labels:
        _add_estimates(summary, meta, request, reports)
    if request.fmt == "card":
        _write_card(summary, meta, request, reports)
    else:
        _emit(summary, request, reports)
    if limits and not summary["complete"] and not request.allow_incomplete:
        import sys

        from vlmaudit.report.completeness import gate_message
        from vlmaudit.report.safetext import safe_text

        print(f"error: {safe_text(gate_message(summary))}", file=sys.stderr)
        return 2
    return _gate(summary, limits)


def check_coverage(request: ReportRequest, meta: dict, limits: dict, run: dict | None = None) -> None:
    """--fail-above or --policy on a category / modality the model did not score: exit 2, naming it.
    `run`: run.json as already read (else read here)."""
    from vlmaudit.report.reading import read_run_file
    from vlmaudit.rulebook import coverage

    cover = coverage.coverage_of(read_run_file(request.report_dir) if run is None else run, meta)
    coverage.check_limits(limits, cover)
    if request.policy:
        from vlmaudit.rulebook.load import find_rule_file

        coverage.check_policy(find_rule_file("policies", request.policy, request.rules), cover,
                              dict(zip(meta["concepts"], meta["concept_categories"])))


def add_completeness(summary: dict, request: ReportRequest, reports=None) -> None:
    """`complete` and `incomplete` (report.completeness) for the shards this report covers;
    `reports`: the opened ReportSet (its listing and stats are reused)."""
    from vlmaudit.report.completeness import assess

    summary.update(assess(reports or request.report_dir, request.shard, summary["overview"]["status"]))


def _write_card(summary: dict, meta: dict, request: ReportRequest, reports) -> None:
    """`--format card`: the audit card's Markdown and JSON (report.card) at --output."""
    from vlmaudit.report.card import build_card, card_paths, sha256_file, write_card

    md_path, json_path = card_paths(request.output)
    options = {"threshold": list(request.thresholds), "policy": request.policy, "category": request.category,
               "concept": request.concept, "shard": request.shard, "allow_mixed": request.allow_mixed,
               "rules": request.rules and str(request.rules),
               "thresholds_file": request.thresholds_file and str(request.thresholds_file)}
    if request.labels:
        from vlmaudit.estimate.sheet import locate

        options["labels_sha256"] = sha256_file(locate(request.labels)[0])
    card = build_card(reports, summary, meta, build_view(request, meta), options, skip=(md_path, json_path))
    write_card(card, md_path, json_path)
    print(f"audit card: {md_path} and {json_path}")


def _open(request: ReportRequest, report_dir):
    """The ReportSet of one report directory: the first file validated, each other one as it is
    read (against its summary, or in full when the rows are read)."""
    from vlmaudit.report.reportset import ReportSet

    return ReportSet.open_lazy(report_dir, request.allow_mixed)


def _summarize(request: ReportRequest, reports, histogram: bool = True) -> tuple[dict, dict]:
    """(summary, metadata) of one opened ReportSet."""
    from vlmaudit.report.reading import naming_damage
    from vlmaudit.report.summary import summarize

    meta = reports.meta
    view = build_view(request, meta)
    with naming_damage(reports.files, len(meta["concepts"])):
        return summarize(reports, request.top, view, request.concept if histogram else None), meta


def _add_comparison(summary: dict, request: ReportRequest) -> None:
    other, _ = _summarize(request, _open(request, request.compare), histogram=False)
    from vlmaudit.report.coverage_view import compare_rows

    summary["compare_dir"] = str(request.compare)
    summary["compare"] = compare_rows(summary, other)


def _add_estimates(summary: dict, meta: dict, request: ReportRequest, reports) -> None:
    """Prevalence with intervals, and the precision / recall of the thresholds in effect."""
    from vlmaudit.commands.estimate import estimate_for

    view = build_view(request, meta)
    reports = reports.checked()  # the estimates read rows: every footer checked first
    summary["estimates"] = estimate_for(request.report_dir, request.labels, meta, reports.files, view.thr_image,
                                        view.thr_caption)


def _emit(summary: dict, request: ReportRequest, reports=None) -> None:
    from vlmaudit.report import exports
    from vlmaudit.report.safetext import json_text

    if request.redact:
        for items in summary.get("examples", {}).values():
            for item in items:
                item["caption"] = item["url"] = None
    if request.fmt == "table":
        from vlmaudit.report.dashboard import render

        render(summary, redact=request.redact)
        if "estimates" in summary:
            from vlmaudit.estimate.render import render_table

            render_table(summary["estimates"])
        return
    if request.fmt == "json":
        text = json_text(summary)
    elif request.fmt == "markdown":
        text = exports.to_markdown(summary)
    else:
        thumbs = _thumbnails(request, summary, reports)
        text = exports.to_html(summary, thumbs, request.blur, request.redact)
    if "estimates" in summary and request.fmt == "markdown":  # the HTML page draws its own
        text = _with_estimates(text, summary["estimates"], request.fmt)
    if request.output:
        from vlmaudit.storage.localfiles import write_text_atomic

        write_text_atomic(request.output, text)
    else:
        print(text)


def _with_estimates(text: str, estimates: dict, fmt: str) -> str:
    from vlmaudit.estimate import render

    if fmt == "markdown":
        return text + "\n" + render.to_markdown(estimates)
    head, _, tail = text.rpartition("</body>")
    return head + render.to_html_section(estimates) + "\n</body>" + tail


def _thumbnails(request: ReportRequest, summary: dict, reports=None) -> dict:
    import sys

    from vlmaudit.report.exports import load_thumbnails
    from vlmaudit.report.safetext import safe_text

    thumbs, refused = load_thumbnails(reports or request.report_dir, summary, request.reread())
    for name, why in list(refused.items())[:5]:
        print(f"note: gallery shows no images of {safe_text(name)}: {why}", file=sys.stderr)
    return thumbs


def _gate(summary: dict, limits: dict[str, float]) -> int:
    import sys

    code = 0
    for c in summary["categories"]:
        if c["id"] in limits and c["rate"] > limits[c["id"]]:
            print(f"FAIL: {c['id']} flagged rate {c['rate']:.4%} exceeds --fail-above {limits[c['id']]:.4%}",
                  file=sys.stderr)
            code = 3
    return code
