"""Vectorised score -> flag math shared by the scanner, the report and the filter."""

from __future__ import annotations

import numpy as np


def category_masks(concept_category: list[int], n_categories: int) -> np.ndarray:
    """Boolean [n_categories, n_concepts]: which concepts belong to each category."""
    index = np.asarray(concept_category)
    return np.stack([index == k for k in range(n_categories)])


def category_max(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-category score = the max of its concepts' scores; NaN rows stay NaN."""
    out = np.full((scores.shape[0], masks.shape[0]), np.nan, np.float32)
    for k, mask in enumerate(masks):
        if mask.any():
            out[:, k] = scores[:, mask].max(axis=1)
    return out


def concept_flags(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean [n, C]: score >= threshold (NaN, i.e. not scored, is never flagged)."""
    with np.errstate(invalid="ignore"):
        return scores >= thresholds[None, :]


def category_flags(flags: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Boolean [n, K]: any flagged concept of the category (one small matmul)."""
    return (flags.astype(np.float32) @ masks.T.astype(np.float32)) > 0


def top_concept(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, score) of the highest-scoring concept per row; index -1 for unscored rows."""
    valid = ~np.isnan(scores).all(axis=1)
    filled = np.where(np.isnan(scores), -np.inf, scores)
    index = np.where(valid, filled.argmax(axis=1), -1)
    score = np.where(valid, filled.max(axis=1), np.nan).astype(np.float32)
    return index, score
