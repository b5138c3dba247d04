"""Pass 1 of a summary: one DuckDB GROUP BY over every row of the reports.

Per row, the lists of flagged concepts per modality (from the stored `*_flagged_concepts`
columns with the scan's thresholds, or recomputed from the score lists for a re-threshold or a
policy) become a few (code, score) items; counting the items per code gives every count of the
summary, per shard and status where those matter, and max_by over the ANY items gives each
concept's CANDIDATES best flagged rows (example candidates).
"""

from __future__ import annotations

from vlmaudit.report import engine, flagsql
from vlmaudit.report.counts import CANDIDATES, Counts, View

FLAG_COLUMNS = {"image_flagged_concepts", "caption_flagged_concepts"}
STORED_SCORES = {"image_flagged_scores", "caption_flagged_scores"}
KIND = 1_000_000  # code = kind * KIND + index
ROW, IMAGE, CAPTION, ANY, CAT_ANY, CAT_BOTH, CAT_IMAGE, CAT_CAPTION, FLAGGED, DAMAGED = range(10)


def rules_for(view: View) -> flagsql.Rules:
    if view.policy is not None:
        return flagsql.Rules.from_policy(view.policy, view.concepts & (view.policy.action > 0))
    return flagsql.Rules.from_thresholds(view.thr_image, view.thr_caption, view.concepts)


def reads_scores(view: View, columns: set[str]) -> bool:
    """The counting pass reads the score lists (a re-threshold, a policy, no stored flags): it then
    checks them too (DAMAGED); else the stored flag columns are enough and a check pass of its
    own, reading only the score columns, is cheaper than widening the counting pass."""
    return view.needs_all_scores or not FLAG_COLUMNS | STORED_SCORES <= columns


def damaged_sql(columns: set[str], n_concepts: int) -> str:
    """SQL true on a row whose scores (lists, top, per-category, judge) are damaged."""
    return " OR ".join(engine.bad_score_conditions(columns, n_concepts).values()) or "false"


def flag_lists(view: View, meta: dict, columns: set[str]) -> tuple[str, str, str, str]:
    """SQL for each row's (image, caption) lists of flagged concept indices, and for the score of
    flagged concept i on each side."""
    if not reads_scores(view, columns):
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
    icat, ccat, damaged; score (the concept's best flagged score) only on the ANY items."""
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
            f"{code(0, flagged_row, 'f')}, "
            f"CASE WHEN damaged THEN [{{'code': {DAMAGED * KIND}, 's': NULL::FLOAT}}] ELSE [] END])")


def counts_sql(view: View, meta: dict, files: list, columns: set[str], source: str | None = None) -> str:
    """One GROUP BY over every row: rows per code (per shard and status where they matter) and,
    per concept, the CANDIDATES best flagged rows (by best score; ties by shard, sample index);
    when it reads the score lists, rows with damaged scores are counted too (DAMAGED): the same
    pass checks them.
    `source` replaces read_parquet over `files` (e.g. a registered Arrow table)."""
    img, cap, image_score, caption_score = flag_lists(view, meta, columns)
    damaged = damaged_sql(columns, len(meta["concepts"])) if reads_scores(view, columns) else "false"
    cat = engine.ints([meta["categories"].index(c) + 1 for c in meta["concept_categories"]])
    return f"""
        SELECT item.code AS code, CASE WHEN item.code IN ({ROW * KIND}, {FLAGGED * KIND}) THEN shard END AS shard,
               CASE WHEN item.code = {ROW * KIND} THEN status END AS status, count(*) AS n,
               max_by({{'shard': shard, 'i': sample_index, 's': item.s}}, {{'s': item.s, 'shard': shard, 'i': sample_index}},
                      {CANDIDATES}) FILTER (WHERE item.s IS NOT NULL) AS best
        FROM (SELECT shard, status, sample_index, unnest({codes_sql(meta, image_score, caption_score)}) AS item
              FROM (SELECT *, list_distinct(list_transform(img, lambda i: {cat}[i])) AS icat,
                           list_distinct(list_transform(cap, lambda i: {cat}[i])) AS ccat
                    FROM (SELECT coalesce(shard, '') AS shard, coalesce(status, '') AS status, sample_index,
                                 {img} AS img, {cap} AS cap, coalesce({damaged}, false) AS damaged,
                                 {_stored_columns(image_score, caption_score)}
                          FROM {source or engine.source(files)})))
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
        elif kind == DAMAGED:
            counts.damaged += n
        else:
            per_concept[kind][index - 1] = n
            if kind == ANY:
                counts.candidates[index - 1] = [(item["shard"], item["i"]) for item in best or []]
    counts.shards = {name: tuple(v) for name, v in shards.items()}
