"""What a report summary counts (the view) and the numbers it comes back with (named fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BINS = 1000  # score histograms: bin b holds the scores s with EDGES[b] <= s < EDGES[b + 1]
EDGES = (np.arange(BINS) / BINS).astype(np.float32)  # float32, as the scores and the report's thresholds
CANDIDATES = 8  # example candidates kept per top concept; the examples pass re-reads them


@dataclass
class View:
    """What to count: thresholds (or a policy), which concepts, which shards."""

    thr_image: np.ndarray
    thr_caption: np.ndarray
    concepts: np.ndarray  # bool mask of concepts that count
    shard_glob: str | None = None
    policy: object = None
    source: str = "scan"
    examples: int = 3
    hist_concept: int | None = None

    @property
    def needs_all_scores(self) -> bool:
        """Flags must be recomputed from the score lists (not read from the stored flag columns)."""
        return self.policy is not None or self.source != "scan"


def default_view(meta: dict, examples: int = 3) -> View:
    thr = meta["thresholds"]
    return View(np.asarray(thr["image"], np.float32), np.asarray(thr["caption"], np.float32),
                np.ones(len(meta["concepts"]), bool), examples=examples)


@dataclass
class ConceptCounts:
    """Per concept (report order): rows where it is flagged in either modality, the image, the caption."""

    any: np.ndarray
    image: np.ndarray
    caption: np.ndarray


@dataclass
class CategoryCounts:
    """Per category (report order): rows flagged in either modality, in both, in only one."""

    any: np.ndarray
    both: np.ndarray
    image_only: np.ndarray
    caption_only: np.ndarray


@dataclass
class ConceptDetail:
    """Score distribution of one concept over the scored rows (or the sampled files' rows)."""

    mean_image: float | None = None
    mean_caption: float | None = None
    hist_image: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    hist_caption: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))


@dataclass
class Counts:
    samples: int = 0
    flagged: int = 0
    both: int = 0  # flagged rows with a flag in both modalities
    image_only: int = 0
    caption_only: int = 0
    status: dict = field(default_factory=dict)  # status -> rows
    shards: dict = field(default_factory=dict)  # shard -> (rows, flagged rows)
    concept: ConceptCounts | None = None
    category: CategoryCounts | None = None
    candidates: dict = field(default_factory=dict)  # concept index -> [(shard, sample_index)], best first
    candidate_scores: dict = field(default_factory=dict)  # summaries: concept -> [(score, shard, index)], best first
    details: dict = field(default_factory=dict)  # concept index -> ConceptDetail (top concepts, --concept)
    damaged: int = 0  # rows whose scores are damaged (NaN, out of range, wrong length): refused

    @classmethod
    def empty(cls, n_concepts: int, n_categories: int) -> "Counts":
        zeros = lambda n: np.zeros(n, np.int64)  # noqa: E731
        return cls(concept=ConceptCounts(zeros(n_concepts), zeros(n_concepts), zeros(n_concepts)),
                   category=CategoryCounts(*(zeros(n_categories) for _ in range(4))))

    def top_concepts(self, top: int) -> list[int]:
        """Indices of the most flagged concepts, ties in report order, flagged at least once."""
        order = np.argsort(-self.concept.any, kind="stable")
        return [int(i) for i in order if self.concept.any[i] > 0][:top]


def score_bins(values: np.ndarray) -> np.ndarray:
    """Bin index of each float32 score: the number of edges it reaches, less one, so that the rows
    with s >= EDGES[k] (the report's own comparison, in float32) are exactly those in bins >= k.
    NaN (unscored) goes to bin BINS, which callers drop; scores are in [0, 1] (checked on read)."""
    values = values.astype(np.float32, copy=False)
    nan = np.isnan(values)
    with np.errstate(invalid="ignore"):
        bins = np.clip(np.where(nan, 0, values) * np.float32(BINS), 0, BINS - 1).astype(np.int32)
    bins -= (values < EDGES[bins]) & (bins > 0)  # float32 rounding at an edge: the comparison decides
    bins += (values >= _UPPER[bins])
    bins[nan] = BINS
    return bins


_UPPER = np.append(EDGES[1:], np.float32(np.inf))  # bin b's upper edge (none for the last)


def edge_index(threshold: float) -> int | None:
    """k when the float32 threshold is exactly EDGES[k] (a histogram answers it), else None."""
    k = int(round(float(threshold) * BINS))
    return k if 0 <= k < BINS and np.float32(threshold) == EDGES[k] else None


def p95(hist: np.ndarray) -> float | None:
    """95th percentile of a BINS-bin histogram, as the upper edge of the bin holding it."""
    total = int(hist.sum())
    if not total:
        return None
    return round(float((int(np.searchsorted(np.cumsum(hist), 0.95 * total)) + 1) / BINS), 4)
