"""The safety head and its training, at unit level on synthetic features (fp32, tiny sizes): output
shapes, samples scored independently of their batch, a learnable task learnt, the settings honoured
(seed, learning rate), the logged loss, class-balanced sampling and the validation metrics."""

import math

import numpy as np
import pytest
import torch

from vlmaudit.head.data import SAFE
from vlmaudit.head.model import SafetyHead
from vlmaudit.head.training import TrainSettings, _balanced_sampler, evaluate, predict, stratified_split, train


def tiny_head(seed=0):
    torch.manual_seed(seed)
    return SafetyHead(6, 3, 2, dim=8, tokens=3, heads=2).eval()


@pytest.mark.parametrize("grid", [1, 2, 3])
def test_the_head_scores_each_sample_on_any_square_grid(grid):
    head = tiny_head()
    patches = torch.randn(5, grid * grid, 6)
    with torch.inference_mode():
        concepts, categories = head(patches)
        assert concepts.shape == (5, 4) and categories.shape == (5, 3)  # + safe
        alone = head(patches[2:3])  # a sample's scores do not depend on the rest of its batch
    assert torch.allclose(alone[0][0], concepts[2], atol=1e-6) and torch.allclose(alone[1][0], categories[2], atol=1e-6)


def synthetic(n_per_class=24, seed=0):
    """[N, 4, 5] float16 features (as the cache holds them) on a 2x2 grid: concept c (or safe) lights channel c
    of one patch; noise elsewhere."""
    rng = np.random.default_rng(seed)
    concepts = np.repeat(np.array([0, 1, 2, SAFE]), n_per_class)
    features = rng.normal(0, 0.3, (len(concepts), 4, 5)).astype(np.float32)
    for i, c in enumerate(concepts):
        features[i, i % 4, 3 if c == SAFE else c] += 3.0
    categories = np.where(concepts == SAFE, SAFE, np.array([0, 0, 1, 0])[concepts])
    return features.astype(np.float16), concepts, categories


SMALL = dict(batch_size=16, dim=16, tokens=4, heads=2, val_fraction=0.25)


def test_training_learns_a_synthetic_task_and_holds_out_a_stratified_split():
    features, concepts, categories = synthetic()
    settings = TrainSettings(epochs=10, lr=1e-2, **SMALL)
    head, train_idx, val_idx = train(features, concepts, categories, 3, 2, settings, "cpu", log=lambda line: None)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(concepts)))
    assert [int((concepts[val_idx] == c).sum()) for c in (0, 1, 2, SAFE)] == [6] * 4
    pred_concept, pred_category = predict(head, features[val_idx], "cpu", batch=5)
    truth_concept = np.where(concepts[val_idx] == SAFE, 3, concepts[val_idx])
    truth_category = np.where(categories[val_idx] == SAFE, 2, categories[val_idx])
    assert (pred_concept == truth_concept).mean() >= 0.9 and (pred_category == truth_category).mean() >= 0.9


def test_the_seed_fixes_the_split_and_the_head_and_the_learning_rate_is_used():
    features, concepts, categories = synthetic(8)
    settings = TrainSettings(epochs=2, lr=1e-2, seed=3, **SMALL)

    def run(**changes):
        head, train_idx, val_idx = train(features, concepts, categories, 3, 2, TrainSettings(**{**settings.__dict__, **changes}),
                                         "cpu", log=lambda line: None)
        with torch.inference_mode():
            return head(torch.from_numpy(features).float())[0], val_idx

    scores, val_idx = run()
    again, same_idx = run()
    assert torch.equal(scores, again) and np.array_equal(val_idx, same_idx)
    other, other_idx = run(seed=4)
    assert not np.array_equal(val_idx, other_idx) and not torch.allclose(scores, other)
    frozen = run(lr=0.0)[0]
    torch.manual_seed(3)
    untrained = SafetyHead(5, 3, 2, 16, 4, 2).eval()
    with torch.inference_mode():
        assert torch.equal(frozen, untrained(torch.from_numpy(features).float())[0])  # nothing learnt at lr 0
    assert not torch.allclose(run(lr=1e-3)[0], scores)


def test_the_logged_loss_is_the_mean_training_loss_of_each_epoch():
    """At lr 0 the head never changes; with every sample alike every step's loss is the same known value."""
    features = np.tile(np.random.default_rng(0).normal(size=(1, 4, 5)).astype(np.float32), (10, 1, 1))
    concepts, categories = np.full(10, 1), np.full(10, 0)  # 8 train samples in batches of 2: 4 steps per epoch
    lines = []
    head, train_idx, _ = train(features, concepts, categories, 3, 2, TrainSettings(epochs=2, lr=0.0, batch_size=2, dim=8,
                                                                                   tokens=2, heads=2), "cpu", lines.append)
    assert len(train_idx) == 8
    with torch.inference_mode():
        concept_logits, category_logits = head(torch.from_numpy(features[:1]))
    loss = float(torch.nn.functional.cross_entropy(concept_logits, torch.tensor([1]))
                 + torch.nn.functional.cross_entropy(category_logits, torch.tensor([0])))
    assert lines == [f"epoch 1/2: loss {loss:.4f}", f"epoch 2/2: loss {loss:.4f}"]


def test_an_epoch_smaller_than_a_batch_is_one_step():
    """8 training samples, batches of 16: epoch 1 logs the loss of the untrained head alone."""
    features = np.tile(np.random.default_rng(0).normal(size=(1, 4, 5)).astype(np.float32), (10, 1, 1))
    concepts, categories = np.full(10, 1), np.full(10, 0)
    settings = TrainSettings(epochs=2, lr=0.05, batch_size=16, dim=8, tokens=2, heads=2, seed=7)
    torch.manual_seed(7)
    untrained = SafetyHead(5, 3, 2, 8, 2, 2)
    with torch.inference_mode():
        concept_logits, category_logits = untrained(torch.from_numpy(features[:1]))
    first = float(torch.nn.functional.cross_entropy(concept_logits, torch.tensor([1]))
                  + torch.nn.functional.cross_entropy(category_logits, torch.tensor([0])))
    lines = []
    train(features, concepts, categories, 3, 2, settings, "cpu", lines.append)
    logged = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert logged[0] == pytest.approx(first, abs=2e-4) and logged[1] < logged[0] - 1e-3


def test_sampling_draws_every_class_equally_often_and_repeats_with_the_seed():
    labels = np.array([0] * 90 + [1] * 10 + [3] * 20)  # class 2 absent
    draws = _balanced_sampler(labels, 5)(30_000)
    assert draws.shape == (30_000,) and draws.max() < len(labels)
    shares = np.bincount(labels[draws], minlength=4) / len(draws)
    assert shares[2] == 0 and np.allclose(shares[[0, 1, 3]], 1 / 3, atol=0.02)
    assert len(set(draws[labels[draws] == 1].tolist())) == 10  # with replacement: the 10 rare ones drawn again and again
    assert np.array_equal(_balanced_sampler(labels, 5)(50), _balanced_sampler(labels, 5)(50))


def test_validation_metrics_per_category_and_overall():
    truth_concept, pred_concept = np.array([0, 1, 3, 3, 2]), np.array([0, 2, 3, 0, 2])
    truth_category, pred_category = np.array([0, 0, 2, 2, 1]), np.array([0, 1, 2, 0, 1])  # 2 = safe
    metrics = evaluate(truth_concept, truth_category, pred_concept, pred_category, ["a", "b"])
    assert metrics == {
        "samples": 5, "concept_accuracy": 0.6, "category_accuracy": 0.6, "unsafe_vs_safe_accuracy": 0.8,
        "per_category": {"a": {"precision": 0.5, "recall": 0.5, "support": 2},
                         "b": {"precision": 0.5, "recall": 1.0, "support": 1},
                         "safe": {"precision": 1.0, "recall": 0.5, "support": 2}}}
    none = evaluate(np.array([0]), np.array([0]), np.array([0]), np.array([0]), ["a", "b"])["per_category"]["b"]
    assert none == {"precision": None, "recall": None, "support": 0}  # never predicted, never true
    empty = evaluate(np.array([]), np.array([]), np.array([]), np.array([]), ["a"])
    assert empty["samples"] == 0 and empty["concept_accuracy"] is None and empty["category_accuracy"] is None
    assert empty["unsafe_vs_safe_accuracy"] is None


def test_settings_are_recorded_as_a_plain_dict():
    from vlmaudit.head.training import settings_dict

    assert settings_dict(TrainSettings(epochs=3)) == {**TrainSettings().__dict__, "epochs": 3}
    assert math.isclose(settings_dict(TrainSettings())["lr"], 1e-3)


def test_the_split_holds_out_a_fraction_of_each_class_at_least_one_of_two_none_of_one():
    labels = np.array([4] * 10 + [0] + [2] * 2 + [1] * 7)
    train_idx, val_idx = stratified_split(labels, 0.2, 0)
    assert train_idx.dtype == val_idx.dtype == np.int64
    assert list(train_idx) == sorted(train_idx) and list(val_idx) == sorted(val_idx)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
    assert {c: int((labels[val_idx] == c).sum()) for c in (0, 1, 2, 4)} == {0: 0, 1: 1, 2: 1, 4: 2}
    assert np.array_equal(stratified_split(labels, 0.2, 0)[1], val_idx)
    assert not all(np.array_equal(stratified_split(labels, 0.2, s)[1], val_idx) for s in (1, 2, 3))
    assert len(stratified_split(labels, 0.5, 0)[1]) == 0 + 4 + 1 + 5
    for fraction, empty in ((0.2, 1), (1.0, 0)):  # nothing held out / nothing left to train: still int64 indices
        split = stratified_split(np.array([0, 1, 2]) if empty else np.array([0, 0, 1, 1]), fraction, 0)
        assert len(split[empty]) == 0 and split[empty].dtype == np.int64
        assert np.zeros((4, 2))[split[empty]].shape == (0, 2)


def test_the_settings_shape_the_head():
    def size(**changes):
        return sum(p.numel() for p in SafetyHead(**{**dict(vision_dim=6, n_concepts=3, n_categories=2, dim=8, tokens=3,
                                                           heads=2), **changes}).parameters())

    assert size(tokens=4) - size(tokens=3) == 8  # one more safety token of dim 8
    assert size(n_concepts=4) - size() == 8 + 1  # one more concept logit
