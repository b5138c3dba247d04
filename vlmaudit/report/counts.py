"""Additive counters of a report summary, and what to count (the view)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

BINS = 1000
CANDIDATES = 8  # per concept; the examples pass re-reads only the top concepts' candidates


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
        return self.policy is not None or self.source != "scan" or self.hist_concept is not None


@dataclass
class Counts:
    n_concepts: int
    n_categories: int
    samples: int = 0
    flagged: int = 0
    status: dict = field(default_factory=dict)
    shards: dict = field(default_factory=dict)

    def __post_init__(self):
        self.agreement = np.zeros(3, np.int64)  # both, image only, caption only
        self.concept = np.zeros((3, self.n_concepts), np.int64)  # any, image, caption
        self.category = np.zeros((4, self.n_categories), np.int64)  # any, both, image only, caption only
        self.sums = np.zeros((2, self.n_concepts), np.float64)  # image, caption score sums
        self.scored = np.zeros(2, np.int64)  # rows with image / caption scores
        self.hist = np.zeros((2, self.n_concepts, BINS), np.int64)  # subsampled
        self.exact_hist = np.zeros((2, BINS), np.int64)  # the --concept, all rows
        self.candidates = [[] for _ in range(self.n_concepts)]  # heaps of (score, shard, sample_index)

    def merge(self, other: "Counts") -> None:
        self.samples += other.samples
        self.flagged += other.flagged
        for name in ("agreement", "concept", "category", "sums", "scored", "hist", "exact_hist"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.status.items():
            self.status[key] = self.status.get(key, 0) + value
        for key, (n, f) in other.shards.items():
            entry = self.shards.setdefault(key, [0, 0])
            entry[0] += n
            entry[1] += f
        for mine, theirs in zip(self.candidates, other.candidates):
            for item in theirs:
                push_candidate(mine, item)


def push_candidate(heap: list, item: tuple) -> None:
    """Keep the CANDIDATES highest-scoring items."""
    (heapq.heappush if len(heap) < CANDIDATES else heapq.heappushpop)(heap, item)


def histogram(scores: np.ndarray) -> np.ndarray:
    """[C, BINS] counts of the scores of each concept (rows with NaN must be removed first)."""
    n_concepts = scores.shape[1]
    bins = np.minimum((scores * BINS).astype(np.int32), BINS - 1)
    bins += np.arange(n_concepts, dtype=np.int32)[None, :] * BINS
    return np.bincount(bins.ravel(), minlength=n_concepts * BINS).reshape(n_concepts, BINS)
