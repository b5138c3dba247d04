"""The sampling design: strata from a fine score histogram, and how many rows each stratum gets.

Scores are first counted in BINS equal-width bins (one pass over the reports, per group: the
whole data set for `--strata top`, or per top-scoring category for `--strata category`). Each
group's bins are then cut into at most `bands` strata with the cumulative square-root-of-f rule
of Dalenius and Hodges (Cochran 1977, section 5A.7), and the sample size is shared out with
Neyman's allocation (Cochran 5.9), taking each stratum's mean score as its expected share of
positives: n_h proportional to N_h sqrt(m_h (1 - m_h)), m_h clipped to [0.5 %, 99.5 %] so no
stratum is starved, at least FLOOR rows per stratum (a variance needs two) and at most N_h.
"""

from __future__ import annotations

import numpy as np

BINS = 200
FLOOR = 2
SPREAD_CLIP = (0.005, 0.995)


def bin_of(score) -> np.ndarray:
    """The histogram bin of each score (the same rule as design_sql.bin_sql)."""
    scaled = np.floor(np.asarray(score, np.float32).astype(np.float64) * BINS)
    return np.clip(scaled, 0, BINS - 1).astype(np.int64)


def cut_bins(counts, bands: int) -> list[tuple[int, int]]:
    """[lo, hi) bin ranges of at most `bands` non-empty strata covering every non-empty bin."""
    counts = np.asarray(counts, np.float64)
    filled = np.flatnonzero(counts)
    if not len(filled):
        return []
    cum = np.cumsum(np.sqrt(counts[filled]))
    targets = cum[-1] * np.arange(1, bands) / bands
    cuts = sorted({int(i) + 1 for i in np.searchsorted(cum, targets) if int(i) + 1 < len(filled)})
    starts = [0] + cuts
    ends = cuts + [len(filled)]
    return [(int(filled[a]), int(filled[b - 1]) + 1) for a, b in zip(starts, ends)]


def allocate(N, mean_score, size: int, floor: int = FLOOR) -> np.ndarray:
    """Rows to draw per stratum (Neyman with the mean score as the expected share; see above).
    Raises ValueError when `size` cannot give every stratum its floor."""
    N = np.asarray(N, np.int64)
    if size >= N.sum():
        return N.copy()
    low = np.minimum(N, floor)
    if low.sum() > size:
        raise ValueError(f"{size} rows cannot give {len(N)} strata {floor} each")
    m = np.clip(np.asarray(mean_score, np.float64), *SPREAD_CLIP)
    weight = N * np.sqrt(m * (1 - m))
    share = _water_fill(weight, low, N, size)
    n = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - n), kind="stable")
    for h in order:
        if n.sum() >= size:
            break
        if n[h] < N[h]:
            n[h] += 1
    return n


def _water_fill(weight, low, high, size: int) -> np.ndarray:
    """clip(c * weight, low, high) with c chosen so the shares sum to `size` (bisection)."""
    lo, hi = 0.0, 1.0
    while np.clip(hi * weight, low, high).sum() < size:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(mid * weight, low, high).sum() < size else (lo, mid)
    return np.clip(hi * weight, low, high)
