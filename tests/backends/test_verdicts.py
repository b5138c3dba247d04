"""From a judge's answer probabilities to per-concept scores (verdicts.py): renormalisation over the
answer options, degenerate probabilities (zeros) without NaN, categories without concepts."""

import numpy as np
import pytest
import torch

from vlmaudit.backends.verdicts import concept_scores, option_probabilities, yes_no_unsafe


def logprobs(rows):
    """[n, vocab] log-probabilities from rows of probabilities (the rest of the mass elsewhere)."""
    probs = torch.tensor(rows, dtype=torch.float64)
    rest = (1.0 - probs.sum(-1, keepdim=True)).clamp(min=0)
    return torch.log(torch.cat([probs, rest], -1).clamp(min=1e-30))


def test_p_unsafe_ignores_mass_on_other_tokens():
    lp = logprobs([[0.1, 0.05, 0.15, 0.0], [0.0, 0.0, 0.02, 0.02]])  # most mass on tokens that are no answer
    p = yes_no_unsafe(lp, safe_ids=[0, 1], unsafe_ids=[2, 3])
    assert p.tolist() == pytest.approx([0.15 / 0.3, 1.0], abs=1e-9)


def test_option_probabilities_are_renormalised_over_the_options():
    lp = logprobs([[0.1, 0.1, 0.05, 0.05], [0.3, 0.0, 0.1, 0.0]])
    options = option_probabilities(lp, [[0], [1, 2], [3]])
    assert options.shape == (2, 3)
    assert options.tolist()[0] == pytest.approx([0.1 / 0.3, 0.15 / 0.3, 0.05 / 0.3], abs=1e-9)
    assert options.tolist()[1] == pytest.approx([0.75, 0.25, 0.0], abs=1e-9)
    assert torch.allclose(options.sum(-1), torch.ones(2, dtype=options.dtype))


def test_the_top_category_and_its_top_concept_carry_p_unsafe():
    scores = concept_scores(np.array([0.8, 0.2]), np.array([[0.1, 0.4, 0.2], [0.5, 0.5, 0.0]]), [0, 1, 1, 2],
                            within=np.array([[5.0, 1.0, 3.0, 2.0], [1.0, 2.0, 2.0, 9.0]]))
    assert scores.dtype == np.float32 and scores.shape == (2, 4)
    assert scores[0].tolist() == pytest.approx([0.8 * 0.25, 0.8 / 3, 0.8, 0.8 * 0.5])
    assert scores[1].tolist() == pytest.approx([0.2, 0.2, 0.2, 0.0])


def test_zero_probabilities_give_zero_scores_not_nan():
    scores = concept_scores(np.array([0.9, 0.5]), np.array([[0.0, 0.0], [0.3, 0.0]]), [0, 0, 1],
                            within=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))
    assert np.isfinite(scores).all()
    assert scores.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_a_category_without_concepts_still_counts_for_the_top_category():
    # three categories, the middle one has no concept in these rules: it can still be the judge's top answer
    scores = concept_scores(np.array([1.0]), np.array([[0.2, 0.8, 0.4]]), [0, 2], within=np.array([[1.0, 2.0]]))
    assert scores[0].tolist() == pytest.approx([0.25, 0.5])
    without_within = concept_scores(np.array([1.0]), np.array([[0.2, 0.8, 0.4]]), [0, 2])
    assert without_within[0].tolist() == pytest.approx([0.25, 0.5])
