"""Pick a threshold from scores and binary labels: the lowest one (so the highest recall) whose
precision on the labels reaches the target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Choice:
    threshold: float | None  # None: the target cannot be reached
    precision: float | None
    recall: float | None
    flagged: int  # labelled samples at or above the threshold
    positives: int  # labelled positives (support)
    negatives: int
    best_precision: float | None  # the highest precision any threshold reaches (for the message)


def curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, precision, recall, flagged) for flagging score >= threshold, one
    entry per distinct score."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.int64)
    tp, flagged = np.cumsum(y), np.arange(1, len(y) + 1)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last of each run of equal scores
    positives = max(int(y.sum()), 1)
    return s[last], tp[last] / flagged[last], tp[last] / positives, flagged[last]


def choose(scores: np.ndarray, labels: np.ndarray, target: float, min_flagged: int = 1) -> Choice:
    keep = ~np.isnan(scores)
    scores, labels = scores[keep], labels[keep].astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0:
        return Choice(None, None, None, 0, 0, negatives, None)
    thresholds, precision, recall, flagged = curve(scores, labels)
    ok = (precision >= target) & (flagged >= min_flagged)
    best = float(precision[flagged >= min_flagged].max()) if (flagged >= min_flagged).any() else None
    if not ok.any():
        return Choice(None, None, None, 0, positives, negatives, best)
    i = int(np.flatnonzero(ok)[-1])  # thresholds descend: the last one that is ok is the lowest
    return Choice(float(thresholds[i]), float(precision[i]), float(recall[i]), int(flagged[i]), positives, negatives, best)
