"""The zero-shot CLIP/SigLIP scorer: scores equal the documented formula computed straight from the
model, images and captions alone or together, the preprocessing (padding, truncation), the
metadata it writes into reports, bf16 and --compile within tolerance, and refusing other models."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vlmaudit.backends.clip import ClipScorer
from vlmaudit.backends.modelref import ModelOptions, fingerprint
from vlmaudit.errors import ModelError
from vlmaudit.rulebook.load import load_rules

TAX = load_rules().taxonomy
CAPTIONS = ["a red square on a table", "noise, with a longer caption than the other one"]


@pytest.fixture(scope="module")
def scorer(tiny_clip):
    return ClipScorer(TAX, ModelOptions(str(tiny_clip), "cpu", "fp32"))


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    from vlmaudit.demo.checkpoints import build_random_siglip

    return build_random_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


def images(n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8))
    return [Image.new("RGB", (40, 30), "red"), noise, Image.new("RGB", (70, 20), "white")][:n]


def expected_scores(path, images=(), captions=(), padding=True):
    """score(x, c) = sigmoid(s_c - log(mean_j exp(s_safe_j))), s = logit_scale * cos(x, prompt), from
    the model itself (padding: SigLIP was trained on max-length padded text)."""
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)

    def unit(features):
        features = getattr(features, "pooler_output", features)
        return features / features.norm(dim=-1, keepdim=True)

    def text(texts):
        return unit(model.get_text_features(**processor.tokenizer(list(texts), padding=padding, return_tensors="pt")))

    with torch.inference_mode():
        concepts = torch.stack([unit(text(TAX.prompts_for(c)).mean(0)) for c in TAX.concepts])
        safe = text(TAX.safe_prompts)
        xs = [unit(model.get_image_features(**processor.image_processor(images=[im], return_tensors="pt")))[0]
              for im in images] + list(text(captions) if captions else [])
        scale = model.logit_scale.exp()
        out = []
        for x in xs:
            s_c, s_safe = scale * concepts @ x, scale * safe @ x
            out.append(torch.sigmoid(s_c - (torch.logsumexp(s_safe, 0) - math.log(len(safe)))).numpy())
    return np.array(out).reshape(len(xs), len(TAX.concepts))


def test_scores_are_the_formula_computed_from_the_model(scorer, tiny_clip):
    image, caption = scorer.score(scorer.preprocessor.prepare(images(), CAPTIONS))
    expected = expected_scores(tiny_clip, images(), CAPTIONS)
    assert image.shape == (3, len(TAX.concepts)) and caption.shape == (2, len(TAX.concepts))
    assert image.dtype == np.float32 and caption.dtype == np.float32
    assert np.allclose(image, expected[:3], atol=1e-5) and np.allclose(caption, expected[3:], atol=1e-5)
    assert image.std() > 1e-4  # not a constant


def test_images_and_captions_are_scored_alone(scorer):
    both = scorer.score(scorer.preprocessor.prepare(images(2), CAPTIONS))
    image, none = scorer.score(scorer.preprocessor.prepare(images(2), []))
    none2, caption = scorer.score(scorer.preprocessor.prepare([], CAPTIONS))
    assert none is None and none2 is None
    assert np.allclose(image, both[0], atol=1e-6) and np.allclose(caption, both[1], atol=1e-6)
    assert scorer.score(scorer.preprocessor.prepare([], [])) == (None, None)
    assert scorer.preprocessor.prepare([], []) == {}


def test_a_batch_scores_each_sample_as_it_would_alone(scorer):
    batch = scorer.score(scorer.preprocessor.prepare(images(), CAPTIONS))
    for i, im in enumerate(images()):
        assert np.allclose(scorer.score(scorer.preprocessor.prepare([im], []))[0][0], batch[0][i], atol=1e-5)
    for i, text in enumerate(CAPTIONS):  # padding of the shorter caption changes nothing
        assert np.allclose(scorer.score(scorer.preprocessor.prepare([], [text]))[1][0], batch[1][i], atol=1e-5)


def test_preprocessing_of_a_clip_model(scorer):
    prepared = scorer.preprocessor.prepare(images(2), CAPTIONS + ["x" * 500])
    assert set(prepared) == {"pixel_values", "input_ids", "attention_mask"}
    assert prepared["pixel_values"].shape == (2, 3, 32, 32)
    ids, mask = prepared["input_ids"], prepared["attention_mask"]
    assert ids.shape == (3, 77) and mask[2].all()  # the long caption is cut to the model's 77 positions
    short = scorer.preprocessor.prepare([], CAPTIONS)
    assert short["input_ids"].shape[1] < 77  # CLIP: padded to the longest caption only
    assert short["attention_mask"][0].sum() < short["attention_mask"][1].sum() == short["input_ids"].shape[1]
    assert scorer.preprocessor.draft_size == 32 and scorer.preprocessor.max_text_len == 77
    assert not scorer.preprocessor.pad_to_max


def test_a_siglip_model_pads_to_its_maximum_length(tiny_siglip):
    siglip = ClipScorer(TAX, ModelOptions(str(tiny_siglip), "cpu", "fp32"))
    assert siglip.preprocessor.pad_to_max and siglip.preprocessor.max_text_len == 64
    assert siglip.preprocessor.draft_size == 32  # from size["height"]
    prepared = siglip.preprocessor.prepare([], ["short"])
    assert prepared["input_ids"].shape == (1, 64)
    image, caption = siglip.score(siglip.preprocessor.prepare(images(2), CAPTIONS))
    expected = expected_scores(tiny_siglip, images(2), CAPTIONS, padding="max_length")
    assert np.allclose(image, expected[:2], atol=1e-5) and np.allclose(caption, expected[2:], atol=1e-5)
    assert siglip.describe()["family"] == "siglip"


def test_draft_size_without_a_size_is_224(scorer):
    from vlmaudit.backends.clip import ClipPreprocessor

    processor = SimpleNamespace(image_processor=SimpleNamespace(size=None), tokenizer=None)
    assert ClipPreprocessor(processor, 77, False).draft_size == 224
    processor.image_processor.size = {"shortest_edge": 0, "height": 48}
    assert ClipPreprocessor(processor, 77, False).draft_size == 48
    processor.image_processor.size = {"shortest_edge": 40, "height": 48}
    assert ClipPreprocessor(processor, 77, False).draft_size == 40
    assert ClipPreprocessor(SimpleNamespace(image_processor=SimpleNamespace(), tokenizer=None), 77, True).draft_size == 224


@pytest.mark.parametrize("tokenizer_limit,config,expected", [
    (20, {"max_position_embeddings": 77}, 20),
    (10**30, {"max_position_embeddings": 77}, 77),  # transformers' "no limit" value
    (None, {"max_position_embeddings": 50}, 50),
    (0, {"max_position_embeddings": 50}, 50),
    (-1, {"max_position_embeddings": 50}, 50),
    (100, {}, 77),
    (40.0, {"max_position_embeddings": 60}, 60),
    (100, {"max_position_embeddings": 0}, 100),
    (1, {"max_position_embeddings": 50}, 1),
    ("absent", {"max_position_embeddings": 100}, 77),  # a tokenizer without a limit: CLIP's 77
])
def test_text_length_is_the_smaller_of_the_model_and_tokenizer_limits(scorer, tokenizer_limit, config, expected):
    tokenizer = SimpleNamespace() if tokenizer_limit == "absent" else SimpleNamespace(model_max_length=tokenizer_limit)
    processor = SimpleNamespace(tokenizer=tokenizer)
    real = scorer.config
    try:
        scorer.config = SimpleNamespace(text_config=SimpleNamespace(**config))
        assert scorer._max_text_len(processor) == expected
        scorer.config = SimpleNamespace(**config)  # a config without a text_config
        assert scorer._max_text_len(processor) == expected
    finally:
        scorer.config = real


def test_text_embedding_in_chunks_equals_one_batch(scorer):
    texts = [p for c in TAX.concepts[:3] for p in TAX.prompts_for(c)][:7]
    with torch.inference_mode():
        assert torch.allclose(scorer._embed_texts(texts, batch=2), scorer._embed_texts(texts), atol=1e-6)
        assert scorer._embed_texts(texts, batch=2).shape[0] == 7


def test_describe_is_the_report_metadata(scorer, tiny_clip):
    described = scorer.describe()
    assert described == {"backend": "clip", "model": str(tiny_clip), "revision": fingerprint(str(tiny_clip), scorer.config),
                         "family": "clip", "device": "cpu", "precision": "fp32",
                         "coverage": {"model": str(tiny_clip), "level": "concept", "categories": TAX.category_ids,
                                      "concepts": TAX.concept_ids, "modalities": ["image", "caption"]}}
    described["model"] = "changed by a caller"
    assert scorer.describe()["model"] == str(tiny_clip)
    assert (scorer.name, scorer.stage, scorer.escalation) == ("clip", "clip", None)


def test_a_hub_models_revision_is_its_commit(hub_cache, tiny_clip):
    commit = hub_cache(tiny_clip, "vlmaudit-test/tiny-clip")
    described = ClipScorer(TAX, ModelOptions("vlmaudit-test/tiny-clip", "cpu", "fp32")).describe()
    assert (described["model"], described["revision"]) == ("vlmaudit-test/tiny-clip", commit)
    assert described["coverage"] == {"model": "vlmaudit-test/tiny-clip", "level": "concept",
                                     "categories": TAX.category_ids, "concepts": TAX.concept_ids,
                                     "modalities": ["image", "caption"]}


@pytest.mark.parametrize("native_bf16,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_native_bf16_with_sdpa_attention(tiny_clip, monkeypatch, native_bf16, expected):
    from vlmaudit.backends.modelref import attention_of

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    auto = ClipScorer(TAX, ModelOptions(str(tiny_clip), "cpu"))
    assert auto.precision == expected and auto.describe()["precision"] == expected
    assert auto.model.dtype == torch.float32 and attention_of(auto.model) == "sdpa"  # CPU: fp32 weights


def test_captions_are_cut_to_the_text_limit_of_the_preprocessor(scorer):
    from vlmaudit.backends.clip import ClipPreprocessor

    short = ClipPreprocessor(scorer.preprocessor, 10, False)  # has .image_processor and .tokenizer
    enc = short.tokenize(["x" * 100, "y"])
    assert enc["input_ids"].shape == (2, 10) and enc["attention_mask"][1].sum() < 10
    assert ClipPreprocessor(scorer.preprocessor, 10, True).tokenize(["y"])["input_ids"].shape == (1, 10)


def test_forward_only_runs_both_encoders(scorer, monkeypatch):
    calls = []
    image_fn, text_fn = scorer.encode_image, scorer.encode_text
    monkeypatch.setattr(scorer, "encode_image", lambda **kw: calls.append(sorted(kw)) or image_fn(**kw))
    monkeypatch.setattr(scorer, "encode_text", lambda **kw: calls.append(sorted(kw)) or text_fn(**kw))
    assert scorer.forward_only(scorer.preprocessor.prepare(images(2), CAPTIONS)) is None
    assert calls == [["pixel_values"], ["attention_mask", "input_ids"]]


def test_bf16_autocast_stays_within_bf16_tolerance_of_fp32(scorer, tiny_clip):
    """bf16 is forced, not left to auto, so this runs the same on every CPU."""
    bf16 = ClipScorer(TAX, ModelOptions(str(tiny_clip), "cpu", "bf16"))
    assert bf16.precision == "bf16" and bf16.describe()["precision"] == "bf16"
    autocast = []
    for name in ("encode_image", "encode_text"):
        fn = getattr(bf16, name)
        setattr(bf16, name, lambda fn=fn, **kw: autocast.append(torch.get_autocast_dtype("cpu")
                                                                if torch.is_autocast_enabled("cpu") else None) or fn(**kw))
    exact = scorer.score(scorer.preprocessor.prepare(images(), CAPTIONS))
    approx = bf16.score(bf16.preprocessor.prepare(images(), CAPTIONS))
    for a, b in zip(approx, exact):
        assert a.dtype == np.float32 and np.allclose(a, b, atol=3e-2)
    assert autocast == [torch.bfloat16, torch.bfloat16]  # images and captions both ran under bf16 autocast


def test_compile_compiles_both_encoders(scorer, tiny_clip, monkeypatch):
    """--compile hands both encoders to torch.compile (device.compiled; tested in test_device.py).
    Recorded, not compiled here: a real compile of CLIP takes far longer than the rest of this file."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    fast = ClipScorer(TAX, ModelOptions(str(tiny_clip), "cpu", "fp32", compile=True))
    assert compiled == [fast.model.get_image_features, fast.model.get_text_features]
    exact = scorer.score(scorer.preprocessor.prepare(images(2), CAPTIONS))
    for a, b in zip(fast.score(fast.preprocessor.prepare(images(2), CAPTIONS)), exact):
        assert np.allclose(a, b, atol=1e-5)


def test_without_compile_nothing_is_compiled(tiny_clip, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("compiled without --compile"))
    ClipScorer(TAX, ModelOptions(str(tiny_clip), "cpu", "fp32"))


def test_a_model_that_is_no_dual_encoder_is_refused(tiny_vlms):
    path = tiny_vlms("llava")
    with pytest.raises(ModelError) as err:
        ClipScorer(TAX, ModelOptions(str(path), "cpu"))
    assert str(err.value) == (f"model {str(path)!r} is a 'llava' model; the clip backend needs a dual encoder "
                              "(clip, siglip, siglip2, chinese_clip, altclip, metaclip_2)")


def test_a_missing_model_names_its_flag(tmp_path):
    with pytest.raises(ModelError) as err:
        ClipScorer(TAX, ModelOptions("org/not-downloaded", "cpu", flag="--screen-model"))
    assert "pass --screen-model DIR" in str(err.value)
