"""Frozen vision features for the safety head: extracted once per model and data (the cache is
reused only for the same images and labels), and, for `distill`, read only for the judged samples
of the shards."""

import numpy as np
import pytest

from conftest import png, write_shard
from vlmaudit.head.data import SAFE, Example


@pytest.fixture(scope="module")
def tower(tiny_clip):
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.vision import VisionTower

    return VisionTower(ModelOptions(str(tiny_clip), "cpu", "fp32", flag="--vision-model"))


def images(directory, seeds):
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{seed}.png" for seed in seeds]
    for path, seed in zip(paths, seeds):
        path.write_bytes(png(seed))
    return paths


def test_features_are_cached_per_images_and_labels(tmp_path, tower):
    from vlmaudit.head.training import extract_features

    first = [Example(p, c, c, p.name) for p, c in zip(images(tmp_path / "a", [0, 1]), [0, SAFE])]
    first.append(Example(png(2), 0, 0, "train.parquet row 0"))  # an image held in a Parquet row
    cache = tmp_path / "out" / "head" / "cache"  # parents made as needed
    log = []
    features = extract_features(tower, first, cache, 2, log.append)
    assert features.dtype == np.float16 and features.shape[0] == 3
    assert log == ["features: 2/3 images", "features: 3/3 images"]
    log.clear()
    reused = extract_features(tower, first, cache, 2, log.append)
    assert log == [f"features: reusing the cache in {cache}"] and np.array_equal(reused, features)
    assert isinstance(reused, np.memmap)  # mapped, not read into memory: a cache may hold many GB
    # other images (files, then bytes) under the same labels, the same images under other labels: extracted again
    other = [Example(p, e.concept, e.category, p.name) for p, e in zip(images(tmp_path / "b", [3, 4]), first)] + first[2:]
    other_bytes = first[:2] + [Example(png(5), 0, 0, "train.parquet row 0")]
    relabelled = [Example(e.image, SAFE, SAFE, e.origin) for e in first]
    for examples in (other, other_bytes, relabelled, first):
        log.clear()
        again = extract_features(tower, examples, cache, 3, log.append)
        assert log == ["features: 3/3 images"]
    np.testing.assert_allclose(again.astype(np.float32), features.astype(np.float32), atol=0.02)  # batches of 3, not 2


def test_the_preprocessor_drafts_images_to_the_towers_input_size(tower):
    from types import SimpleNamespace

    from transformers import SiglipImageProcessor

    from vlmaudit.head.preprocess import HeadPreprocessor

    edge = tower.image_processor.size["shortest_edge"]
    assert edge != 224 and HeadPreprocessor(tower.image_processor).draft_size == edge  # CLIP: shortest edge
    assert HeadPreprocessor(SiglipImageProcessor(size={"height": 40, "width": 40})).draft_size == 40  # SigLIP: height
    assert HeadPreprocessor(SimpleNamespace()).draft_size == 224  # a processor that names no size


@pytest.fixture
def judged_shard(tmp_path):
    """00000: k0, k1 broken; k2 good; k3 broken; k4 and k5 good. 00001: nothing judged."""
    good = {2: png(2), 4: png(4), 5: png(5)}
    samples = [{"__key__": f"k{i}", "png": good.get(i, b"not an image"), "txt": "x"} for i in range(6)]
    return write_shard(tmp_path / "00000.tar", samples), write_shard(tmp_path / "00001.tar", samples[:2])


class Progress:
    def __init__(self):
        self.samples, self.shards = 0, []

    def batch(self, n):
        self.samples += n

    def shard_done(self, name, status):
        self.shards.append((name, status))


def test_judged_features_read_only_the_judged_samples_and_skip_undecodable_ones(judged_shard, tower):
    from vlmaudit.head.distill import Verdict, judged_features
    from vlmaudit.scan.worker import ScanSettings, ShardJob
    from vlmaudit.schema import ShardStatus

    unsafe = Verdict(5, 0)
    verdicts = {"00000": {"k0": unsafe, "k1": Verdict(SAFE, SAFE), "k2": unsafe, "k3": unsafe, "k4": Verdict(SAFE, SAFE)}}
    jobs = [ShardJob(str(judged_shard[1]), "00001"), ShardJob(str(judged_shard[0]), "00000")]  # no verdicts first
    settings = ScanSettings(batch_size=2, workers=0)  # batches k0 k1 (nothing decodes) | k2 k3 | k4
    progress = Progress()
    features, concepts, categories = judged_features(tower, jobs, verdicts, settings, progress)
    assert features.dtype == np.float16 and len(features) == 2
    assert concepts.tolist() == [5, SAFE] and categories.tolist() == [0, SAFE]
    assert progress.samples == 5 and progress.shards == [("00000", ShardStatus.COMPLETE)]  # judged samples only
    alone, concepts, _ = judged_features(tower, jobs[1:], {"00000": {"k4": Verdict(SAFE, SAFE)}}, settings)
    assert np.array_equal(alone, features[1:]) and concepts.tolist() == [SAFE]


def test_judged_samples_missing_from_the_shards_are_one_error(judged_shard, tower):
    from vlmaudit.errors import UserError
    from vlmaudit.head.distill import Verdict, judged_features
    from vlmaudit.scan.worker import ScanSettings, ShardJob

    with pytest.raises(UserError) as info:
        judged_features(tower, [ShardJob(str(judged_shard[0]), "00000")], {"00000": {"gone": Verdict(1, 0)}},
                        ScanSettings(batch_size=2, workers=0), Progress())
    assert str(info.value) == "none of the judged samples was found in --shards (the shards scanned for these reports?)"
