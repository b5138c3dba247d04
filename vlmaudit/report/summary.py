"""Aggregate report rows into dashboard numbers with DuckDB, reading only the columns needed.

Two passes over the Parquet files, each one SQL aggregation (no Python loop over rows):
1. counts: per row the sorted lists of flagged concepts per modality, from the stored
   `*_flagged_concepts` columns (scan thresholds) or recomputed from the score lists
   (re-threshold, policy), turned into a few integer codes that one GROUP BY counts;
2. details of the top concepts (and the --concept): DuckDB extracts their scores from the score
   lists and numpy folds the Arrow batches into exact means, 1000-bin histograms (p95) and the
   best flagged rows (example candidates); a loop over batches, never over rows.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from vlmaudit.report import engine
from vlmaudit.report import flagsql
from vlmaudit.report.counts import BINS, CANDIDATES, ConceptDetail, Counts, View
from vlmaudit.report.reading import read_report_meta, read_stats, report_files

FLAG_COLUMNS = {"image_flagged_concepts", "caption_flagged_concepts"}
STORED_SCORES = {"image_flagged_scores", "caption_flagged_scores"}
SAMPLE_ROWS = 2_000_000
BATCH_ROWS = 1 << 17
KIND = 1_000_000  # code = kind * KIND + index
ROW, IMAGE, CAPTION, ANY, CAT_ANY, CAT_BOTH, CAT_IMAGE, CAT_CAPTION, FLAGGED = range(9)


def stem(path) -> str:
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".parquet")] if name.endswith(".parquet") else name


def select_files(report_dir, shard_glob: str | None) -> list:
    files = report_files(report_dir)
    if shard_glob:
        files = [f for f in files if fnmatch.fnmatch(stem(f), shard_glob)]
        if not files:
            from vlmaudit.errors import UserError

            raise UserError(f"--shard {shard_glob!r}: no shard report matches")
    return files


def rules_for(view: View) -> flagsql.Rules:
    if view.policy is not None:
        return flagsql.Rules.from_policy(view.policy, view.concepts & (view.policy.action > 0))
    return flagsql.Rules.from_thresholds(view.thr_image, view.thr_caption, view.concepts)


def flag_lists(view: View, meta: dict, columns: set[str]) -> tuple[str, str, str, str]:
    """SQL for each row's (image, caption) lists of flagged concept indices, and for the score of
    flagged concept i on each side."""
    if not view.needs_all_scores and FLAG_COLUMNS | STORED_SCORES <= columns:
        names = engine.texts(meta["concepts"])
        img, cap = (flagsql.stored_flags(side, meta["concepts"], view.concepts) for side in flagsql.SIDES)
        score = lambda side: (f"{side}_flagged_scores[list_position({side}_flagged_concepts, "  # noqa: E731
                              f"{names}[i])]")
        return img, cap, score("image"), score("caption")
    rules = rules_for(view)
    img, cap = (flagsql.side_flags(rules, side) for side in flagsql.SIDES)
    return img, cap, "image_scores[i]", "caption_scores[i]"


def codes_sql(meta: dict, image_score: str, caption_score: str) -> str:
    """SQL: the (code, score) items one row adds to the counts (see KIND) from columns img, cap,
    icat, ccat; score (the concept's best flagged score) only on the ANY items."""
    best = (f"greatest(CASE WHEN list_contains(img, i) THEN {image_score} END, "
            f"CASE WHEN list_contains(cap, i) THEN {caption_score} END)")
    code = lambda kind, items, var="i": (f"list_transform({items}, lambda {var}: "  # noqa: E731
                                         f"{{'code': {kind * KIND} + {var}, 's': NULL::FLOAT}})")
    flagged_row = (f"CASE WHEN len(img) > 0 OR len(cap) > 0 THEN [{FLAGGED * KIND}, {FLAGGED * KIND} + "
                   f"CASE WHEN len(cap) = 0 THEN 2 WHEN len(img) = 0 THEN 3 ELSE 1 END] ELSE []::INTEGER[] END")
    return (f"flatten([[{{'code': {ROW * KIND}, 's': NULL::FLOAT}}], {code(IMAGE, 'img')}, {code(CAPTION, 'cap')}, "
            f"list_transform(list_distinct(list_concat(img, cap)), lambda i: {{'code': {ANY * KIND} + i, 's': {best}}}), "
            f"{code(CAT_ANY, 'list_distinct(list_concat(icat, ccat))', 'k')}, "
            f"{code(CAT_BOTH, 'list_intersect(icat, ccat)', 'k')}, "
            f"{code(CAT_IMAGE, 'list_filter(icat, lambda k: NOT list_contains(ccat, k))', 'k')}, "
            f"{code(CAT_CAPTION, 'list_filter(ccat, lambda k: NOT list_contains(icat, k))', 'k')}, "
            f"{code(0, flagged_row, 'f')}])")


def counts_sql(view: View, meta: dict, files: list, columns: set[str]) -> str:
    """One GROUP BY over every row: rows per code (per shard and status where they matter) and,
    per concept, the CANDIDATES best flagged rows (by best score; ties by shard, sample index)."""
    img, cap, image_score, caption_score = flag_lists(view, meta, columns)
    cat = engine.ints([meta["categories"].index(c) + 1 for c in meta["concept_categories"]])
    return f"""
        SELECT item.code AS code, CASE WHEN item.code IN ({ROW * KIND}, {FLAGGED * KIND}) THEN shard END AS shard,
               CASE WHEN item.code = {ROW * KIND} THEN status END AS status, count(*) AS n,
               max_by({{'shard': shard, 'i': sample_index}}, {{'s': item.s, 'shard': shard, 'i': sample_index}},
                      {CANDIDATES}) FILTER (WHERE item.s IS NOT NULL) AS best
        FROM (SELECT shard, status, sample_index, unnest({codes_sql(meta, image_score, caption_score)}) AS item
              FROM (SELECT *, list_distinct(list_transform(img, lambda i: {cat}[i])) AS icat,
                           list_distinct(list_transform(cap, lambda i: {cat}[i])) AS ccat
                    FROM (SELECT coalesce(shard, '') AS shard, coalesce(status, '') AS status, sample_index,
                                 {img} AS img, {cap} AS cap, {_stored_columns(image_score, caption_score)}
                          FROM {engine.source(files)})))
        GROUP BY ALL"""


def _stored_columns(image_score: str, caption_score: str) -> str:
    used = [c for c in ("image_scores", "caption_scores", "image_flagged_scores", "caption_flagged_scores",
                        "image_flagged_concepts", "caption_flagged_concepts") if c in image_score + caption_score]
    return ", ".join(used)


def add_codes(counts: Counts, rows) -> None:
    """Fold the (code, shard, status, n, best) rows of the counts query into the named counters."""
    per_concept = {IMAGE: counts.concept.image, CAPTION: counts.concept.caption, ANY: counts.concept.any,
                   CAT_ANY: counts.category.any, CAT_BOTH: counts.category.both,
                   CAT_IMAGE: counts.category.image_only, CAT_CAPTION: counts.category.caption_only}
    shards = {}
    for code, shard, status, n, best in rows:
        kind, index = divmod(code, KIND)
        if kind == ROW:
            counts.samples += n
            counts.status[status] = counts.status.get(status, 0) + n
            shards.setdefault(shard, [0, 0])[0] += n
        elif kind == FLAGGED and index == 0:
            counts.flagged += n
            shards.setdefault(shard, [0, 0])[1] += n
        elif kind == FLAGGED:
            setattr(counts, ("both", "image_only", "caption_only")[index - 1], n)
        else:
            per_concept[kind][index - 1] = n
            if kind == ANY:
                counts.candidates[index - 1] = [(item["shard"], item["i"]) for item in best or []]
    counts.shards = {name: tuple(v) for name, v in shards.items()}


def details_sql(concepts: list[int], files: list) -> str:
    """Per row: each concept's image and caption score."""
    items = [f"image_scores[{c + 1}] AS i{c}, caption_scores[{c + 1}] AS c{c}" for c in concepts]
    return f"SELECT {', '.join(items)} FROM {engine.source(files)}"


class DetailAccumulator:
    """Folds the details query's Arrow batches into exact sums and BINS-bin histograms per concept
    and modality (numpy, vectorised per batch)."""

    def __init__(self, concepts: list[int]):
        self.concepts = concepts
        self.sums = {(c, m): [0.0, 0] for c in concepts for m in "ic"}
        self.hists = {(c, m): np.zeros(BINS, np.int64) for c in concepts for m in "ic"}

    def add(self, batch) -> None:
        for c in self.concepts:
            for m in "ic":
                values = batch.column(f"{m}{c}").to_numpy(zero_copy_only=False)
                values = values[~np.isnan(values)].astype(np.float32)
                self.sums[(c, m)][0] += float(values.sum(dtype=np.float64))
                self.sums[(c, m)][1] += len(values)
                bins = np.clip((values * np.float32(BINS)).astype(np.int32), 0, BINS - 1)
                self.hists[(c, m)] += np.bincount(bins, minlength=BINS)

    def details(self) -> dict:
        out = {}
        for c in self.concepts:
            (si, ni), (sc, nc) = self.sums[(c, "i")], self.sums[(c, "c")]
            out[c] = ConceptDetail(round(si / ni, 4) if ni else None, round(sc / nc, 4) if nc else None,
                                   self.hists[(c, "i")], self.hists[(c, "c")])
        return out


def sample_files(files: list, rows: int, exact: bool) -> list:
    """The files whose score lists give the means and p95: all of them up to SAMPLE_ROWS rows (or
    when exact), else every k-th file, k chosen so that the sample keeps at least SAMPLE_ROWS rows."""
    step = 1 if exact else max(1, rows // SAMPLE_ROWS)
    return files[::step]


def count(view: View, files: list, meta: dict, top: int = 10) -> Counts:
    import pyarrow.parquet as pq

    from vlmaudit.report.reading import open_input

    with open_input(files[0]) as handle:
        columns = set(pq.read_schema(handle).names)
    counts = Counts.empty(len(meta["concepts"]), len(meta["categories"]))
    con = engine.connect(files)
    try:
        add_codes(counts, con.execute(counts_sql(view, meta, files, columns)).fetchall())
        extra = [view.hist_concept] if view.hist_concept is not None else []
        concepts = list(dict.fromkeys(counts.top_concepts(top) + extra))
        if concepts:
            accumulator = DetailAccumulator(concepts)
            scored = sample_files(files, counts.samples, exact=bool(extra))
            for batch in con.sql(details_sql(concepts, scored)).to_arrow_reader(BATCH_ROWS):
                accumulator.add(batch)
            counts.details = accumulator.details()
    finally:
        con.close()
    return counts


def example_rows(files: list, counts: Counts, concepts: list[int]) -> dict:
    """(shard, sample_index) -> row (key, url, caption, score lists) of the candidates, re-read
    from the candidates' shard files only."""
    wanted = {pair for c in concepts for pair in counts.candidates[c]}
    if not wanted:
        return {}
    shards = {shard for shard, _ in wanted}
    chosen = [f for f in files if stem(f) in shards] or files
    pairs = ", ".join(f"({engine.text(s)}, {int(i)})" for s, i in sorted(wanted))
    con = engine.connect(chosen)
    try:
        result = con.execute(f"SELECT shard, sample_index, key, url, caption, image_scores, caption_scores "
                             f"FROM {engine.source(chosen)} WHERE (shard, sample_index) IN ({pairs})")
        names = [d[0] for d in result.description]
        return {(r[0], r[1]): dict(zip(names, r)) for r in result.fetchall()}
    finally:
        con.close()


def default_view(meta: dict, examples: int = 3) -> View:
    thr = meta["thresholds"]
    return View(np.asarray(thr["image"], np.float32), np.asarray(thr["caption"], np.float32),
                np.ones(len(meta["concepts"]), bool), examples=examples)


def summarize(report_dir, top: int = 10, view: View | None = None, hist_concept: str | None = None) -> dict:
    from vlmaudit.report.summary_dict import build_summary

    meta = read_report_meta(report_files(report_dir))
    view = view or default_view(meta)
    if hist_concept:
        view.hist_concept = meta["concepts"].index(hist_concept)
    files = select_files(report_dir, view.shard_glob)
    counts = count(view, files, meta, top)
    examples = example_rows(files, counts, counts.top_concepts(top)) if view.examples else {}
    stats = {name: s for name, s in read_stats(report_dir).items()
             if not view.shard_glob or fnmatch.fnmatch(name, view.shard_glob)}
    return build_summary(meta, counts, stats, top, files, view, hist_concept, examples)
