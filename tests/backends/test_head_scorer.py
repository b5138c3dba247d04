"""The safety-head backend: P(unsafe) and per-concept scores from a head with known outputs, the
metadata it writes into reports, and the refusals of a head that does not fit the rules or the tower."""

import hashlib
import json

import numpy as np
import pytest
import torch

from vlmaudit.backends.head import HeadScorer, check_taxonomy
from vlmaudit.backends.modelref import ModelOptions
from vlmaudit.errors import ModelError
from vlmaudit.rulebook.load import load_rules

TAX = load_rules().taxonomy


@pytest.fixture(scope="module")
def tower(tiny_clip):
    from vlmaudit.backends.vision import VisionTower

    return VisionTower(ModelOptions(str(tiny_clip), "cpu"))


def known_head(tmp_path, tower, category_probs, concept_probs, **config_changes):
    """A real SafetyHead saved like train-head does, whose outputs are fixed: zero weights, biases
    = log of the given probabilities (the last one of each is 'safe')."""
    from vlmaudit.head.model import SafetyHead, save_head

    head = SafetyHead(tower.width, len(TAX.concepts), len(TAX.categories), dim=16, tokens=2, heads=2)
    with torch.no_grad():
        for layer, probs in ((head.category_logits, category_probs), (head.concept_logits, concept_probs)):
            layer.weight.zero_()
            layer.bias.copy_(torch.log(torch.as_tensor(probs, dtype=torch.float32)))
    config = {"vision_model": tower.options.model, "vision_revision": tower.revision, "vision_dim": tower.width,
              "dim": 16, "tokens": 2, "heads": 2, "concepts": TAX.concept_ids, "categories": TAX.category_ids,
              "taxonomy_version": TAX.tag, **config_changes}
    out = tmp_path / f"head-{len(list(tmp_path.iterdir()))}"
    save_head(head, out, config)
    return out


def probabilities(n, seed):
    return np.random.default_rng(seed).dirichlet(np.ones(n))


def images(n=3):
    from PIL import Image

    return [Image.new("RGB", (30 + 7 * i, 40), (60 * i, 200 - 50 * i, 120)) for i in range(n)]


@pytest.fixture
def head_dir(tmp_path, tower):
    return known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 1), probabilities(len(TAX.concepts) + 1, 2))


def test_scores_follow_the_verdict_formula_from_the_heads_probabilities(tmp_path, tower):
    category = probabilities(len(TAX.categories) + 1, 1)
    concept = probabilities(len(TAX.concepts) + 1, 2)
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), known_head(tmp_path, tower, category, concept))
    scores, captions, extras = scorer.score(scorer.preprocessor.prepare(images(), ["a caption"]))
    p_unsafe = 1.0 - category[-1]
    assert captions is None and extras["image_unsafe"].dtype == np.float32
    assert extras["image_unsafe"] == pytest.approx([p_unsafe] * 3, abs=1e-6)
    # score[c] = P(unsafe) * cat[k(c)] / max cat * within[c] / max within over k(c)'s concepts
    index = np.array(TAX.concept_category_index())
    within = concept[:-1]
    top_within = np.array([within[index == index[c]].max() for c in range(len(within))])
    expected = p_unsafe * category[index] / category[:-1].max() * within / top_within
    assert scores.shape == (3, len(TAX.concepts)) and scores.dtype == np.float32
    assert np.allclose(scores, expected[None, :], atol=1e-6)
    assert scores[0].max() == pytest.approx(p_unsafe, abs=1e-6)


def test_a_head_sure_of_safe_scores_nothing(tmp_path, tower):
    category = np.full(len(TAX.categories) + 1, 1e-6)
    category[-1] = 1.0
    concept = probabilities(len(TAX.concepts) + 1, 3)
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), known_head(tmp_path, tower, category / category.sum(), concept))
    scores, _, extras = scorer.score(scorer.preprocessor.prepare(images(2), []))
    assert np.all(extras["image_unsafe"] < 1e-4) and np.all(scores < 1e-4)


def test_captions_alone_are_not_scored(head_dir):
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), head_dir)
    assert scorer.score(scorer.preprocessor.prepare([], ["only a caption"])) == (None, None, {})
    assert scorer.score({}) == (None, None, {})


def test_forward_only_runs_the_tower_and_the_head(head_dir, monkeypatch):
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), head_dir)
    seen = []
    monkeypatch.setattr(scorer.head, "forward", lambda patches: seen.append(patches.shape) or (None, None))
    assert scorer.forward_only(scorer.preprocessor.prepare(images(2), [])) is None
    assert seen == [(2, 16, scorer.tower.width)]


def test_describe_names_the_head_its_tower_and_what_it_covers(tmp_path, tower, tiny_clip):
    trained = [c.id for c in TAX.concepts if c.category == "hate"][:2]
    head = known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 1),
                      probabilities(len(TAX.concepts) + 1, 2), trained_concepts=trained)
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), head)
    digest = hashlib.sha256((head / "head.safetensors").read_bytes()).hexdigest()[:16]
    assert scorer.describe() == {
        "backend": "head", "model": str(head), "revision": f"head-{digest}", "family": "safety-head",
        "vision_model": str(tiny_clip), "vision_revision": tower.revision, "device": "cpu", "precision": "fp32",
        "coverage": {"model": str(head), "level": "concept", "categories": ["hate"], "concepts": trained,
                     "modalities": ["image"]}}
    assert (scorer.name, scorer.stage, scorer.escalation, scorer.device, scorer.precision) == (
        "head", "head", None, "cpu", "fp32")


def test_an_older_head_without_trained_concepts_covers_every_concept_of_images(head_dir):
    coverage = HeadScorer(TAX, ModelOptions(None, "cpu"), head_dir).describe()["coverage"]
    assert coverage["concepts"] == TAX.concept_ids and coverage["categories"] == TAX.category_ids
    assert coverage["modalities"] == ["image"]


def test_the_revision_changes_with_the_head_weights(tmp_path, tower):
    a = HeadScorer(TAX, ModelOptions(None, "cpu"), known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 1),
                                                               probabilities(len(TAX.concepts) + 1, 2)))
    b = HeadScorer(TAX, ModelOptions(None, "cpu"), known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 4),
                                                               probabilities(len(TAX.concepts) + 1, 2)))
    assert a.head_revision() != b.head_revision()
    assert a.head_revision().startswith("head-") and len(a.head_revision()) == len("head-") + 16


def test_a_head_for_other_rules_is_refused(head_dir):
    config = json.loads((head_dir / "head_config.json").read_text())
    fewer = {**config, "concepts": config["concepts"][:-1], "taxonomy_version": "other-1"}
    with pytest.raises(ModelError) as err:
        check_taxonomy(fewer, TAX, head_dir)
    assert str(err.value) == (f"--head {head_dir} was trained for taxonomy other-1 ({len(TAX.concepts) - 1} concepts); "
                              f"these rules have {TAX.tag} ({len(TAX.concepts)} concepts): retrain it or pass the "
                              "matching --rules")
    with pytest.raises(ModelError, match="was trained for taxonomy"):
        check_taxonomy({**config, "categories": config["categories"][::-1]}, TAX, head_dir)
    with pytest.raises(ModelError, match=r"taxonomy None \(0 concepts\)"):
        check_taxonomy({}, TAX, head_dir)
    check_taxonomy(config, TAX, head_dir)


def test_a_head_for_other_rules_is_refused_before_the_tower_loads(tmp_path, tower, monkeypatch):
    import vlmaudit.backends.vision as vision

    head = known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 1), probabilities(len(TAX.concepts) + 1, 2),
                      concepts=TAX.concept_ids[1:])
    monkeypatch.setattr(vision, "VisionTower", lambda *a: pytest.fail("the tower loaded"))
    with pytest.raises(ModelError) as err:
        HeadScorer(TAX, ModelOptions(None, "cpu"), head)
    assert str(err.value).startswith(f"--head {head} was trained for taxonomy ")


def test_a_head_trained_on_another_hub_revision_of_its_tower_is_refused(tmp_path, tower, tiny_clip, hub_cache):
    """Hub models' revisions are their commits (they were "unknown", so any revision passed)."""
    hub_cache(tiny_clip, "vlmaudit-test/tiny-clip")
    head = known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 1), probabilities(len(TAX.concepts) + 1, 2),
                      vision_model="vlmaudit-test/tiny-clip", vision_revision="f" * 40)
    with pytest.raises(ModelError) as err:
        HeadScorer(TAX, ModelOptions(None, "cpu"), head)
    assert f"was trained on vlmaudit-test/tiny-clip@{'f' * 40}; vlmaudit-test/tiny-clip@" in str(err.value)


def test_the_heads_vision_model_is_loaded_unless_model_is_given(head_dir, tiny_clip, tmp_path, monkeypatch):
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), head_dir)
    assert scorer.tower.options.model == str(tiny_clip) and scorer.tower.options.device == "cpu"
    import shutil

    copy = shutil.copytree(tiny_clip, tmp_path / "copy")  # same weights, another directory
    (copy / "extra.txt").write_text("changes the local fingerprint")
    with pytest.raises(ModelError) as err:
        HeadScorer(TAX, ModelOptions(str(copy), "cpu"), head_dir)
    revision = json.loads((head_dir / "head_config.json").read_text())["vision_revision"]
    assert str(err.value).startswith(f"--head {head_dir} was trained on {tiny_clip}@{revision}; {copy}@local-")
    assert str(err.value).endswith(" gives different features (drop --model)")


@pytest.mark.parametrize("trained,now,ok", [("unknown", "local-b", True), ("local-a", "unknown", True),
                                            ("local-a", "local-a", True), ("local-a", "local-b", False)])
def test_an_unknown_revision_on_either_side_is_not_held_against_the_head(head_dir, trained, now, ok):
    scorer = HeadScorer(TAX, ModelOptions(None, "cpu"), head_dir)
    scorer.head_config["vision_revision"], scorer.tower.revision = trained, now
    if ok:
        scorer._check_features()
    else:
        with pytest.raises(ModelError, match="gives different features"):
            scorer._check_features()


def test_a_head_for_another_feature_width_is_refused(tmp_path, tower):
    head = known_head(tmp_path, tower, probabilities(len(TAX.categories) + 1, 1), probabilities(len(TAX.concepts) + 1, 2),
                      vision_dim=tower.width * 2, vision_revision="unknown")
    with pytest.raises(ModelError, match="gives different features"):
        HeadScorer(TAX, ModelOptions(None, "cpu"), head)
