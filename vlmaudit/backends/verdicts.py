"""From a judge's probabilities to the report's per-concept scores (shared by the VLM judge and the
safety head).

A judge answers three things: P(unsafe); which category (one probability per category); and,
when it can, which concept within a category. Per-concept score:

    score[c] = P(unsafe) * cat[k(c)] / max_k cat[k] * within[c] / max_{c' in k(c)} within[c']

so the most likely category's most likely concept carries P(unsafe) itself (thresholds keep
their meaning: "the judge says unsafe with this confidence"), and the other concepts are ranked
below it in proportion. Without concept resolution (within = 1) every concept of a category
shares the category's score.
"""

from __future__ import annotations

import numpy as np


def yes_no_unsafe(logprobs, safe_ids: list[int], unsafe_ids: list[int]):
    """P(unsafe) = p(unsafe answers) / (p(safe answers) + p(unsafe answers)) from next-token
    log-probabilities [n, vocab] (any answer variant counts: 'No', ' no', ...)."""
    import torch

    safe = torch.logsumexp(logprobs[:, safe_ids], dim=-1)
    unsafe = torch.logsumexp(logprobs[:, unsafe_ids], dim=-1)
    return torch.sigmoid(unsafe - safe)


def option_probabilities(logprobs, option_ids: list[list[int]]):
    """[n, options]: each option's probability (sum over its token variants), renormalised over
    the options so they sum to 1."""
    import torch

    per_option = torch.stack([torch.logsumexp(logprobs[:, ids], dim=-1) for ids in option_ids], dim=-1)
    return torch.softmax(per_option, dim=-1)


def concept_scores(p_unsafe: np.ndarray, category: np.ndarray, concept_category: list[int],
                   within: np.ndarray | None = None) -> np.ndarray:
    """[n, C] float32 from P(unsafe) [n], category probabilities [n, K] (without the safe/none
    option) and optionally concept probabilities [n, C] (any scale; compared within a category)."""
    index = np.asarray(concept_category)
    category = np.asarray(category, np.float64)
    relative = category / np.maximum(category.max(axis=1, keepdims=True), 1e-12)
    scores = p_unsafe[:, None] * relative[:, index]
    if within is not None:
        within = np.asarray(within, np.float64)
        top = np.zeros_like(category)
        for k in range(category.shape[1]):
            members = index == k
            if members.any():
                top[:, k] = within[:, members].max(axis=1)
        scores *= within / np.maximum(top[:, index], 1e-12)
    return scores.astype(np.float32)
