"""Pass 2 of a summary: the top concepts' score distributions (mean, 1000-bin histogram -> p95).

DuckDB extracts the concepts' scores from the score lists; numpy folds the Arrow batches (a loop
over batches, never over rows). Below 2 * SAMPLE_ROWS rows every row counts; above, every k-th file.
"""

from __future__ import annotations

import numpy as np

from vlmaudit.report import engine
from vlmaudit.report.counts import BINS, ConceptDetail, score_bins

SAMPLE_ROWS = 2_000_000
BATCH_ROWS = 1 << 17


def details_sql(concepts: list[int], files: list, source: str | None = None, damaged: str | None = None) -> str:
    """Per row: each concept's image and caption score (from `source` when given, else the files),
    and, given its SQL, whether the row's scores are damaged (the score check, in the same pass)."""
    items = [f"image_scores[{c + 1}] AS i{c}, caption_scores[{c + 1}] AS c{c}" for c in concepts]
    if damaged:
        items.append(f"coalesce({damaged}, false) AS damaged")
    return f"SELECT {', '.join(items)} FROM {source or engine.source(files)}"


class DetailAccumulator:
    """Folds the details query's Arrow batches into exact sums and BINS-bin histograms per concept
    and modality (numpy, vectorised per batch)."""

    def __init__(self, concepts: list[int]):
        self.concepts = concepts
        self.sums = {(c, m): [0.0, 0] for c in concepts for m in "ic"}
        self.hists = {(c, m): np.zeros(BINS, np.int64) for c in concepts for m in "ic"}
        self.damaged = 0  # rows whose scores are damaged, when the query says (details_sql's damaged)

    def add(self, batch) -> None:
        if "damaged" in batch.schema.names:
            self.damaged += int(np.count_nonzero(batch.column("damaged").to_numpy(zero_copy_only=False)))
        for c in self.concepts:
            for m in "ic":
                values = batch.column(f"{m}{c}").to_numpy(zero_copy_only=False)
                values = values[~np.isnan(values)].astype(np.float32)
                self.sums[(c, m)][0] += float(values.sum(dtype=np.float64))
                self.sums[(c, m)][1] += len(values)
                self.hists[(c, m)] += np.bincount(score_bins(values), minlength=BINS)[:BINS]

    def details(self) -> dict:
        out = {}
        for c in self.concepts:
            (si, ni), (sc, nc) = self.sums[(c, "i")], self.sums[(c, "c")]
            out[c] = ConceptDetail(round(si / ni, 4) if ni else None, round(sc / nc, 4) if nc else None,
                                   self.hists[(c, "i")], self.hists[(c, "c")])
        return out


def sample_files(files: list, rows: int, exact: bool) -> list:
    """The files whose score lists give the means and p95: all of them below 2 * SAMPLE_ROWS rows
    (or when exact), else every k-th file with k = rows // SAMPLE_ROWS (about SAMPLE_ROWS rows or
    more when the files hold similar numbers of rows)."""
    step = 1 if exact else max(1, rows // SAMPLE_ROWS)
    return files[::step]
