"""`vlmaudit summarize DIR`: write the per-shard summaries that reports from before summaries (or
from an interrupted copy) lack, with the scan's rules: claim the shard, temporary name, rename."""

from __future__ import annotations

from vlmaudit.commands.options import SummarizeRequest


def run_summarize(request: SummarizeRequest) -> int:
    from vlmaudit.report.engine import stem
    from vlmaudit.report.reportset import ReportSet
    from vlmaudit.report.safetext import safe_text

    report_dir = request.report_dir
    reports = ReportSet.open(report_dir, allow_mixed=True)
    written = 0
    for path, meta in zip(reports.files, reports.metas):
        if not (reports.has_summaries([path]) and _current(reports, path, meta)):
            written += _summarize_file(reports, path, meta, stem(path))
    print(f"{written} summar{'y' if written == 1 else 'ies'} written in {safe_text(str(report_dir))}")
    return 0


def _current(reports, path, meta: dict) -> bool:
    """The summary beside `path` describes it as it is now; a damaged one is refused, not
    overwritten; one of an older format or of an older version of the file is rewritten."""
    from vlmaudit.report.engine import stem
    from vlmaudit.report.shard_summary import SummaryMismatch
    from vlmaudit.report.summary_fold import ShardReader

    name = stem(path)
    try:
        ShardReader(meta, {"meta": reports.meta_digests[name]}).summary(path, reports.footer_rows[name])
        return True
    except SummaryMismatch:
        return False


def _summarize_file(reports, path, meta: dict, name: str) -> int:
    from vlmaudit.report import engine
    from vlmaudit.scan.summary import write_summary
    from vlmaudit.storage.localfiles import ShardClaim
    from vlmaudit.storage.location import Location

    out = Location(str(reports.location)) if isinstance(reports.location, str) else Location(reports.location)
    claim = None if out.remote else ShardClaim.acquire(out.root, name)
    if claim is None and not out.remote:
        return 0  # a live writer (a scan, another summarize) holds the shard
    try:
        with engine.session([path], str(path)) as con:
            engine.check_scores(con, [path], len(meta["concepts"]))
            columns = {d[0] for d in con.execute(f"SELECT * FROM {engine.source([path])} LIMIT 0").description}
            from vlmaudit.report.shard_summary import compute

            summary, hist = compute(con, engine.source([path]), columns, meta, name)
        summary["footer_sha256"] = reports.footer_digests[name]
        summary["meta_sha256"] = reports.meta_digests[name]
        write_summary(out, name, summary, hist)
        return 1
    finally:
        if claim is not None:
            claim.release()
