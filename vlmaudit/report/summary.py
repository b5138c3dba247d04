"""Aggregate report rows into dashboard numbers with DuckDB, reading only the columns needed:
pass 1 (report.codes) counts every row, pass 2 (report.details) reads the top concepts' scores,
then the example candidates are re-read from their shard files only."""

from __future__ import annotations

import fnmatch

import numpy as np

from vlmaudit.report import codes, details, engine
from vlmaudit.report.engine import stem
from vlmaudit.report.counts import Counts, View, default_view  # noqa: F401 (default_view: callers import it here)
from vlmaudit.report.reading import read_report_meta, read_stats, report_files


def select_files(report_dir, shard_glob: str | None) -> list:
    files = report_files(report_dir)
    if shard_glob:
        files = [f for f in files if fnmatch.fnmatch(stem(f), shard_glob)]
        if not files:
            from vlmaudit.errors import UserError

            raise UserError(f"--shard {shard_glob!r}: no shard report matches")
    return files


def count(view: View, files: list, meta: dict, top: int = 10) -> Counts:
    import pyarrow.parquet as pq

    from vlmaudit.storage.location import open_input

    with open_input(files[0]) as handle:
        columns = set(pq.read_schema(handle).names)
    counts = Counts.empty(len(meta["concepts"]), len(meta["categories"]))
    with engine.session(files, str(files[0]).rsplit("/", 1)[0]) as con:
        engine.check_scores(con, files, len(meta["concepts"]))
        codes.add_codes(counts, con.execute(codes.counts_sql(view, meta, files, columns)).fetchall())
        extra = [view.hist_concept] if view.hist_concept is not None else []
        concepts = list(dict.fromkeys(counts.top_concepts(top) + extra))
        if concepts:
            accumulator = details.DetailAccumulator(concepts)
            scored = details.sample_files(files, counts.samples, exact=bool(extra))
            for batch in con.sql(details.details_sql(concepts, scored)).to_arrow_reader(details.BATCH_ROWS):
                accumulator.add(batch)
            counts.details = accumulator.details()
    return counts


def example_rows(files: list, counts: Counts, concepts: list[int]) -> dict:
    """(shard, sample_index) -> row (key, url, caption, score lists) of the candidates, re-read
    from the candidates' shard files only."""
    wanted = {pair for c in concepts for pair in counts.candidates[c]}
    if not wanted:
        return {}
    shards = {shard for shard, _ in wanted}
    stems = {stem(f) for f in files}
    chosen = [f for f in files if stem(f) in shards] if shards <= stems else files  # else: names differ
    indices = ", ".join(sorted({str(int(i)) for _, i in wanted}))
    pairs = ", ".join(f"({engine.text(s)}, {int(i)})" for s, i in sorted(wanted))
    with engine.session(chosen, "examples") as con:  # sample_index IN (...) lets row-group statistics skip
        result = con.execute(f"SELECT shard, sample_index, key, url, caption, image_scores, caption_scores "
                             f"FROM {engine.source(chosen)} WHERE sample_index IN ({indices}) "
                             f"AND (shard, sample_index) IN ({pairs})")
        names = [d[0] for d in result.description]
        return {(r[0], r[1]): dict(zip(names, r)) for r in result.fetchall()}


def summarize(report_dir, top: int = 10, view: View | None = None, hist_concept: str | None = None) -> dict:
    """The summary dict of a report directory (or an opened ReportSet): from the per-shard
    summaries when every selected file has one and the view is the scan's own, else one pass
    over the rows."""
    from vlmaudit.report.reportset import ReportSet

    reports = report_dir if isinstance(report_dir, ReportSet) else None
    meta = reports.meta if reports else read_report_meta(report_files(report_dir))
    view = view or default_view(meta)
    if hist_concept:
        view.hist_concept = meta["concepts"].index(hist_concept)
    if reports is not None and summaries_answer(view, meta):
        files = reports.select(view.shard_glob)
        if reports.has_summaries(files):
            return from_summaries(reports, files, meta, view, top, hist_concept)
    files = reports.select(view.shard_glob) if reports else select_files(report_dir, view.shard_glob)
    counts = count(view, files, meta, top)
    examples = example_rows(files, counts, counts.top_concepts(top)) if view.examples else {}
    stats = reports.selected_stats(view.shard_glob) if reports else {
        name: s for name, s in read_stats(report_dir).items()
        if not view.shard_glob or fnmatch.fnmatch(name, view.shard_glob)}
    from vlmaudit.report.reading import read_run_file

    run = reports.run if reports else read_run_file(report_dir)
    return _finish(meta, counts, stats, top, files, view, hist_concept, examples, run)


def _finish(meta, counts, stats, top, files, view, hist_concept, examples, run: dict, highest=None) -> dict:
    from vlmaudit.report.summary_dict import build_summary

    summary = build_summary(meta, counts, stats, top, files, view, hist_concept, examples)
    _apply_coverage(summary, run, meta)
    if not counts.flagged:  # an empty dashboard still shows how close the data came
        from vlmaudit.report.highest import highest_scores

        summary["highest_scores"] = highest() if highest else highest_scores(files, min(top, 5))
    return summary


def summaries_answer(view: View, meta: dict) -> bool:
    """The per-shard summaries hold this view's numbers: the scan's thresholds, every concept."""
    thr = meta["thresholds"]
    return (view.policy is None and view.source == "scan" and bool(view.concepts.all())
            and np.array_equal(view.thr_image, np.asarray(thr["image"], np.float32))
            and np.array_equal(view.thr_caption, np.asarray(thr["caption"], np.float32)))


def from_summaries(reports, files: list, meta: dict, view: View, top: int, hist_concept) -> dict:
    """The summary dict from per-shard summaries only (each read once, folded, forgotten): no pass
    over the rows; the top concepts' histograms are read afterwards, file by file."""
    from vlmaudit.report.highest import merge_highest
    from vlmaudit.report.shard_summary import Merger

    merger, digests = Merger(meta), []
    for path in files:
        shard = reports.summary(path)
        merger.add(shard)
        digests.append(shard["hist"]["sha256"])
    counts = merger.result()
    extra = [view.hist_concept] if view.hist_concept is not None else []
    concepts = list(dict.fromkeys(counts.top_concepts(top) + extra))
    if concepts:
        hists = (reports.hist(path, digest, concepts) for path, digest in zip(files, digests))
        counts.details = merger.details(hists, concepts)
    examples = merger.rows if view.examples else {}
    highest = lambda: merge_highest(merger.highest, min(top, 5))  # noqa: E731
    return _finish(meta, counts, reports.selected_stats(view.shard_glob), top, files, view, hist_concept,
                   examples, reports.run, highest)


def _apply_coverage(summary: dict, run: dict, meta: dict) -> None:
    """Unscored categories / modalities become n/a (report.coverage_view); run: run.json's contents."""
    from vlmaudit.report.coverage_view import apply_coverage
    from vlmaudit.rulebook.coverage import coverage_of

    apply_coverage(summary, coverage_of(run, meta))
