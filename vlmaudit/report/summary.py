"""Aggregate report rows into dashboard numbers with DuckDB, reading only the columns needed:
pass 1 (report.codes) counts every row, pass 2 (report.details) reads the top concepts' scores,
then the example candidates are re-read from their shard files only."""

from __future__ import annotations

import fnmatch

import numpy as np

from vlmaudit.report import codes, details, engine
from vlmaudit.report.engine import stem
from vlmaudit.report.counts import Counts, View, default_view  # noqa: F401 (default_view: callers import it here)
from vlmaudit.report.reading import BadScores, read_report_meta, read_stats, report_files


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
    n_concepts = len(meta["concepts"])
    deferred = not codes.reads_scores(view, columns)  # the counting pass reads the stored flags only
    with engine.session(files, str(files[0]).rsplit("/", 1)[0]) as con:
        codes.add_codes(counts, con.execute(codes.counts_sql(view, meta, files, columns)).fetchall())
        _refuse_damage(con, files, n_concepts, counts.damaged)  # checked in the counting pass
        extra = [view.hist_concept] if view.hist_concept is not None else []
        concepts = list(dict.fromkeys(counts.top_concepts(top) + extra))
        if deferred and not concepts:  # nothing to detail: the score check is a pass of its own
            engine.check_scores(con, files, n_concepts)
        if concepts:  # the details pass reads the score lists: with the check when deferred, every file
            accumulator = details.DetailAccumulator(concepts)
            scored = files if deferred else details.sample_files(files, counts.samples, exact=bool(extra))
            damaged = codes.damaged_sql(columns, n_concepts) if deferred else None
            for batch in con.sql(details.details_sql(concepts, scored, damaged=damaged)).to_arrow_reader(details.BATCH_ROWS):
                accumulator.add(batch)
            _refuse_damage(con, files, n_concepts, accumulator.damaged)
            counts.details = accumulator.details()
    return counts


def _refuse_damage(con, files: list, n_concepts: int, damaged: int) -> None:
    """Damaged scores were counted: find and name the file (engine.check_scores raises)."""
    if damaged:
        engine.check_scores(con, files, n_concepts)
        raise BadScores("a report holds scores that are NaN, infinite or outside [0, 1]")


def example_rows(files: list, counts: Counts, concepts: list[int]) -> dict:
    """(shard, sample_index) -> row (key, url, caption, score lists) of the candidates, re-read
    from the candidates' shard files only."""
    wanted = {pair for c in concepts for pair in counts.candidates.get(c, [])}
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
    summaries when every selected file has one and they answer the view (the scan's thresholds,
    or one threshold on a histogram bin edge), else one pass over the rows."""
    from vlmaudit.report.reportset import ReportSet

    reports = report_dir if isinstance(report_dir, ReportSet) else None
    meta = reports.meta if reports else read_report_meta(report_files(report_dir))
    view = view or default_view(meta)
    if hist_concept:
        view.hist_concept = meta["concepts"].index(hist_concept)
    if reports is not None and (summaries_answer(view, meta) or rethreshold_edge(view) is not None):
        files = reports.select(view.shard_glob)
        if reports.has_summaries(files):
            from vlmaudit.report.shard_summary import SummaryMismatch

            try:
                return from_summaries(reports, files, meta, view, top, hist_concept)
            except SummaryMismatch:
                pass  # a report file rewritten since its summary, or another run's: its rows say what it holds
    if reports is not None and reports.lazy:
        reports = reports.checked()
        _adopt(report_dir, reports)
    files = reports.select(view.shard_glob) if reports else select_files(report_dir, view.shard_glob)
    counts = count(view, files, meta, top)
    examples = example_rows(files, counts, counts.top_concepts(top)) if view.examples else {}
    stats = reports.selected_stats(view.shard_glob) if reports else {
        name: s for name, s in read_stats(report_dir).items()
        if not view.shard_glob or fnmatch.fnmatch(name, view.shard_glob)}
    from vlmaudit.report.reading import read_run_file

    run = reports.run if reports else read_run_file(report_dir)
    return _finish(meta, counts, stats, top, files, view, hist_concept, examples, run)


def _adopt(lazy, checked) -> None:
    """The caller's lazy ReportSet becomes the checked one (its stats complete for later steps)."""
    lazy.__dict__.update(checked.__dict__)


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


def rethreshold_edge(view: View) -> int | None:
    """k when the view is one threshold EDGES[k] for every concept and modality (the histograms
    answer it exactly), else None."""
    from vlmaudit.report.counts import edge_index

    values = np.concatenate([view.thr_image, view.thr_caption])
    if view.policy is not None or not view.concepts.all() or not len(values) or not (values == values[0]).all():
        return None
    return edge_index(float(values[0]))


def from_summaries(reports, files: list, meta: dict, view: View, top: int, hist_concept) -> dict:
    """The summary dict from per-shard summaries (each read once, folded, forgotten; worker
    processes for many files), then histograms: the top concepts' blocks, or every block for a
    re-threshold. Rows are read only for the examples shown (a few rows of a few files)."""
    import contextlib

    from vlmaudit.report import summary_fold
    from vlmaudit.report.highest import merge_highest

    with summary_fold.workers_for(files) or contextlib.nullcontext() as pool:
        counts, merger, kept = _fold_summaries(reports, files, pool)
        k = None if summaries_answer(view, meta) else rethreshold_edge(view)
        hists = _rethreshold(reports.reader(), files, kept, k, counts, pool) if k is not None else None
        extra = [view.hist_concept] if view.hist_concept is not None else []
        concepts = list(dict.fromkeys(counts.top_concepts(top) + extra))
        if concepts and hists is None:
            items = [(path, hist) for path, (hist, _) in zip(files, kept)]
            totals = summary_fold.run(summary_fold.fold_concept_hists, reports.reader(), items, concepts, pool=pool)
            counts.details = merger.details({c: sum(t[c] for t in totals) for c in concepts})
        elif concepts:
            counts.details = merger.details({c: hists[c] for c in concepts})
    examples = _checked_examples(reports, files, counts, counts.top_concepts(top), view.examples) if view.examples else {}
    highest = lambda: merge_highest(merger.highest, min(top, 5))  # noqa: E731
    return _finish(meta, counts, reports.selected_stats(view.shard_glob), top, files, view, hist_concept,
                   examples, reports.run, highest)


def _fold_summaries(reports, files: list, pool):
    """(Counts, Merger, [(the summary's hist field, rows)] per file) of the files' summaries; a lazy
    set's stats are filled from what the fold read."""
    from vlmaudit.report import summary_fold

    parts = summary_fold.run(summary_fold.fold_summaries, reports.reader(), files, pool=pool)
    merger, kept = parts[0][0], [item for _, part, _ in parts for item in part]
    for other, _, _ in parts[1:]:
        merger.merge(other)
    stats = {name: s for _, _, part in parts for name, s in part.items()}
    chosen = set(files)
    others = [f for f in reports.files if f not in chosen] if reports.lazy else []
    if others:  # outside --shard: checked as every file is (its summary against its footer), not counted
        stats |= {name: s for _, _, part in summary_fold.run(summary_fold.fold_summaries, reports.reader(),
                                                             others, pool=pool) for name, s in part.items()}
    if reports.lazy:
        reports.adopt_stats(stats)
    return merger.result(), merger, kept


def _rethreshold(reader, files: list, kept: list, k: int, counts: Counts, pool):
    """counts at threshold EDGES[k] from every file's histograms; returns the concepts' summed
    [image, caption] histograms."""
    from vlmaudit.report import summary_fold

    items = [(path, hist, rows) for path, (hist, rows) in zip(files, kept)]
    parts = summary_fold.run(summary_fold.fold_rethreshold, reader, items, k, pool=pool)
    for other in parts[1:]:
        parts[0].merge(other)
    parts[0].apply(counts)
    return parts[0].hists


def _checked_examples(reports, files: list, counts: Counts, concepts: list[int], shown: int) -> dict:
    """example_rows of the candidates that can be shown (the `shown` best per concept, ties
    included), from the few files holding their shards (a summarised file holds only its own
    shard), each fully checked first (never a pass over every file)."""
    from types import SimpleNamespace

    wanted = {}
    for c in concepts:
        items = counts.candidate_scores.get(c, [])
        cut = items[shown - 1][0] if 0 < shown < len(items) else None
        wanted[c] = [(shard, i) for score, shard, i in items if cut is None or score >= cut]
    holder = {stem(path): path for path in files}
    shards = {shard for pairs in wanted.values() for shard, _ in pairs}
    chosen = sorted({holder[s] for s in shards if s in holder}, key=str)
    for path in chosen if reports.lazy else ():
        reports.check_footer(path)
    return example_rows(chosen, SimpleNamespace(candidates=wanted), concepts) if chosen else {}


def _apply_coverage(summary: dict, run: dict, meta: dict) -> None:
    """Unscored categories / modalities become n/a (report.coverage_view); run: run.json's contents."""
    from vlmaudit.report.coverage_view import apply_coverage
    from vlmaudit.rulebook.coverage import coverage_of

    apply_coverage(summary, coverage_of(run, meta))
