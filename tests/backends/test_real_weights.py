"""Real hub checkpoints from the local Hugging Face cache (never downloaded by the tests).

Deselected by default; run with `pytest -m real_weights` on a machine whose HF cache holds the
model (e.g. after one `vlmaudit scan` with network access). Skipped when it is not cached.
"""

import numpy as np
import pytest

from vlmaudit.backends.clip import DEFAULT_MODEL

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module")
def real_clip():
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(DEFAULT_MODEL, "config.json"), str):
        pytest.skip(f"{DEFAULT_MODEL} is not in the local Hugging Face cache")
    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules

    rules = load_rules()
    return rules, ClipScorer(rules.taxonomy, ModelOptions(DEFAULT_MODEL, "cpu", "fp32"))


def test_real_clip_ranks_a_concept_caption_above_benign_captions(real_clip):
    rules, scorer = real_clip
    captions = ["a red apple on a wooden table", "a mountain lake at sunrise", "a nazi flag with a swastika"]
    _, caption, *_ = scorer.score(scorer.preprocessor.prepare([], captions))
    swastika = rules.taxonomy.concept_ids.index("swastika")
    assert caption[2, swastika] > max(caption[0, swastika], caption[1, swastika]) + 0.2
    assert caption[0].max() < 0.8 and caption[1].max() < 0.8  # benign captions stay under the default threshold


def test_real_clip_keeps_plain_benign_pictures_low(real_clip):
    from PIL import Image, ImageDraw

    _, scorer = real_clip
    sky = Image.new("RGB", (224, 224), (120, 170, 230))
    chart = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(chart)
    for i, h in enumerate((60, 120, 90, 160)):
        draw.rectangle((20 + 50 * i, 200 - h, 55 + 50 * i, 200), fill=(40, 90, 200))
    image, *_ = scorer.score(scorer.preprocessor.prepare([sky, chart], []))
    assert np.all(image.max(axis=1) < 0.8)
