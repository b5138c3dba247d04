"""Draw the stratified sample from the reports with DuckDB (bounded memory, no rows in Python).
After the score check every report command runs, pass 1 counts the top scores in fine bins per
group (and the unscored rows); the strata and their sample sizes follow (`design`); pass 2 keeps
per stratum only the rows with the smallest hash(seed, shard, sample_index) so far, which is a
simple random sample without replacement within each stratum, the same for the same seed,
reports and DuckDB version. Two passes keep DuckDB's memory to strata x largest n_h instead of
fine bins x sample size. `estimate` runs the same draw again to check its labels against it.

A row's score is its top category score, the max over the category's concepts in image and
caption; rows without any score (failed samples) are not in the population and are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlmaudit.estimate.design import BINS, allocate, cut_bins
from vlmaudit.report import engine

MODES = ("top", "category")
SCORED = "(image_scores IS NOT NULL OR caption_scores IS NOT NULL)"


@dataclass
class Params:
    mode: str = "top"
    bands: int = 5
    size: int = 200
    seed: int = 0


@dataclass
class Stratum:
    id: str
    group: str | None  # the top category (mode category) or None
    bins: tuple[int, int]  # [lo, hi) score bins
    rows: int
    mean_score: float
    drawn: int = 0


@dataclass
class Draw:
    params: Params
    strata: list[Stratum]
    population: int
    unscored: int
    picks: list[tuple[str, int, int]] = field(default_factory=list)  # (shard, sample_index, stratum) in hash order


def category_lists(meta: dict) -> list[list[int]]:
    """Per category (report order): its concepts' 1-based indices."""
    return [[i + 1 for i, c in enumerate(meta["concept_categories"]) if c == cat] for cat in meta["categories"]]


def _rows_sql(meta: dict, files: list, mode: str, scored_only: bool = True) -> str:
    """Per row: shard, sample_index, top score (the max of all concept scores, image and
    caption: the top category's score), group (mode category: the category of the concept
    holding it, image first on a tie; see `top_group`) and fine bin; all NULL for unscored rows
    unless `scored_only` drops them."""
    cats = engine.ints([meta["categories"].index(c) for c in meta["concept_categories"]])
    grp = (f"{cats}[CASE WHEN coalesce(ti >= tc, tc IS NULL) THEN list_position(image_scores, ti) "
           f"ELSE list_position(caption_scores, tc) END]" if mode == "category" else "0")
    where = f"WHERE {SCORED}" if scored_only else ""
    return f"""SELECT shard, sample_index, top, CASE WHEN top IS NOT NULL THEN grp END AS grp,
                      least(greatest(floor(top::DOUBLE * {BINS}), 0), {BINS - 1})::BIGINT AS bin
               FROM (SELECT shard, sample_index, greatest(ti, tc) AS top, {grp} AS grp
                     FROM (SELECT coalesce(shard, '') AS shard, sample_index, image_scores, caption_scores,
                                  list_max(image_scores) AS ti, list_max(caption_scores) AS tc
                           FROM {engine.source(files)} {where}))"""


def draw(files: list, meta: dict, params: Params) -> Draw:
    """The strata, their sizes and the drawn rows of these reports under `params`."""
    with engine.session(files, "sample") as con:
        engine.check_scores(con, files, len(meta["concepts"]))
        hist = con.execute(f"SELECT grp, bin, count(*), sum(top::DOUBLE) FROM "
                           f"({_rows_sql(meta, files, params.mode, scored_only=False)}) GROUP BY ALL").fetchall()
        unscored = sum(n for grp, _, n, _ in hist if grp is None)
        strata, bin_map = _strata([h for h in hist if h[0] is not None], meta, params)
        result = Draw(params, strata, sum(s.rows for s in strata), int(unscored))
        if strata:
            result.picks = _picks(con, files, meta, params, strata, bin_map)
    return result


def _strata(hist, meta: dict, params: Params) -> tuple[list[Stratum], np.ndarray]:
    groups = len(meta["categories"]) if params.mode == "category" else 1
    counts, sums = np.zeros((groups, BINS), np.int64), np.zeros((groups, BINS))
    for grp, b, n, total in hist:
        counts[grp, b], sums[grp, b] = n, total
    strata, bin_map = [], np.full(groups * BINS, -1, np.int64)
    for g in range(groups):
        name = meta["categories"][g] if params.mode == "category" else None
        for lo, hi in cut_bins(counts[g], params.bands):
            rows = int(counts[g, lo:hi].sum())
            label = f"{name or 'top'} [{lo / BINS:.3f}, {hi / BINS:.3f})"
            strata.append(Stratum(label, name, (lo, hi), rows, float(sums[g, lo:hi].sum() / rows)))
            bin_map[g * BINS + lo: g * BINS + hi] = len(strata) - 1
    if strata:
        sizes = allocate([s.rows for s in strata], [s.mean_score for s in strata], params.size)
        for stratum, n in zip(strata, sizes):
            stratum.drawn = int(n)
    return strata, bin_map


def _picks(con, files, meta, params: Params, strata: list[Stratum], bin_map) -> list[tuple[str, int, int]]:
    most = max(s.drawn for s in strata)
    rows = con.execute(f"""
        SELECT s, min_by({{'shard': shard, 'i': sample_index}}, {{'u': u, 'shard': shard, 'i': sample_index}}, {most})
        FROM (SELECT *, {engine.ints(bin_map)}[grp * {BINS} + bin + 1] AS s, hash({int(params.seed)}, shard, sample_index) AS u
              FROM ({_rows_sql(meta, files, params.mode)}))
        GROUP BY s""").fetchall()
    picks = []
    for s, chosen in sorted(rows):
        picks += [(c["shard"], int(c["i"]), int(s)) for c in chosen[: strata[s].drawn]]
    return picks


def fetch_rows(files: list, pairs: list[tuple[str, int]]) -> dict:
    """(shard, sample_index) -> row (key, url, caption, status, score lists) for these rows; the
    wanted rows are a registered Arrow table (no data is pasted into SQL), and sample_index
    IN (...) lets row-group statistics skip the rest."""
    import pyarrow as pa

    if not pairs:
        return {}
    pairs = sorted(set(pairs))
    wanted = pa.table({"s": [s for s, _ in pairs], "i": [int(i) for _, i in pairs]})
    indices = ", ".join(sorted({str(int(i)) for _, i in pairs}))
    with engine.session(files, "sample rows") as con:
        con.register("wanted", wanted)
        result = con.execute(f"SELECT r.* FROM (SELECT coalesce(shard, '') AS shard, sample_index, key, url, caption, "
                             f"status, image_scores, caption_scores FROM {engine.source(files)} "
                             f"WHERE sample_index IN ({indices})) r JOIN wanted ON r.shard = wanted.s "
                             "AND r.sample_index = wanted.i")
        names = [d[0] for d in result.description]
        return {(r[0], r[1]): dict(zip(names, r)) for r in result.fetchall()}


def find_keys(files: list, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (shard, key) pairs are rows of the reports at all."""
    import pyarrow as pa

    if not pairs:
        return set()
    pairs = sorted(set(pairs))
    with engine.session(files, "label keys") as con:
        con.register("wanted", pa.table({"s": [s for s, _ in pairs], "k": [k for _, k in pairs]}))
        return set(con.execute(f"SELECT DISTINCT r.shard, r.key FROM (SELECT coalesce(shard, '') AS shard, key "
                               f"FROM {engine.source(files)}) r JOIN wanted ON r.shard = wanted.s "
                               "AND r.key = wanted.k").fetchall())


def category_scores(row: dict, meta: dict) -> np.ndarray:
    """A row's category scores (max over the category's concepts, image and caption; nan where unscored)."""
    sides = [np.asarray(row[s], np.float32) for s in ("image_scores", "caption_scores") if row.get(s) is not None]
    best = np.max(sides, axis=0) if sides else np.full(len(meta["concepts"]), np.nan, np.float32)
    return np.array([best[[i - 1 for i in idx]].max() if idx else np.nan for idx in category_lists(meta)], np.float32)


def top_group(row: dict, meta: dict) -> int:
    """The index of a row's top category, by the rule `_rows_sql` uses: the category of the
    first concept holding the highest score, the image's on a tie with the caption."""
    sides = [np.asarray(row[s], np.float32) if row.get(s) is not None else None for s in ("image_scores", "caption_scores")]
    image, caption = sides
    use = image if caption is None or (image is not None and image.max() >= caption.max()) else caption
    return meta["categories"].index(meta["concept_categories"][int(use.argmax())])


def category_flags(row: dict, meta: dict, thr_image, thr_caption) -> np.ndarray:
    """Per category: flagged at these thresholds (any of its concepts, either modality)."""
    hit = np.zeros(len(meta["concepts"]), bool)
    for side, thr in (("image_scores", thr_image), ("caption_scores", thr_caption)):
        if row.get(side) is not None:
            hit |= np.asarray(row[side], np.float32) >= np.asarray(thr, np.float32)
    return np.array([hit[[i - 1 for i in idx]].any() if idx else False for idx in category_lists(meta)])
