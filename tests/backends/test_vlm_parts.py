"""The VLM judge's parts without a scan: rationales (which rows, greedy, no special tokens), row
selection of a batch (Qwen2-VL's packed patches too), the prefix/question API the eval probes use,
the blank caption image, forward_only, precision choice and the metadata it writes."""

import numpy as np
import pytest
import torch

from conftest import planted_logprobs
from vlmaudit.backends import BackendOptions, build_backend
from vlmaudit.backends import vlm as V
from vlmaudit.backends.modelref import ModelOptions, fingerprint
from vlmaudit.rulebook.load import load_rules


def judge(model_dir, precision="fp32", **extra):
    return build_backend("vlm", load_rules(), ModelOptions(str(model_dir), "cpu", precision=precision),
                         BackendOptions(**extra))


@pytest.fixture(scope="module")
def llava(tiny_vlms):
    return judge(tiny_vlms("llava"), rationale=True)


def images():
    from PIL import Image

    return [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 30), "blue"), Image.new("RGB", (20, 50), "green")]


def greedy_rationales(backend, prefix, rows):
    inputs = V._joined(V._select_rows(prefix, np.array(rows)), backend.rationale_suffix)
    out = backend.model.generate(**inputs, max_new_tokens=64, do_sample=False)
    return [t.strip() for t in backend.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                             skip_special_tokens=True)]


def test_rationales_explain_flagged_rows_only_at_the_default_threshold(llava):
    prefix = llava._to_device(llava.preprocessor.prepare(images(), [])["image"])
    llava.thresholds = None  # no rules thresholds: 0.5 for every concept
    scores = np.array([[0.1, 0.5, 0.2], [0.49, 0.3, 0.0], [0.9, 0.0, 0.0]])
    texts = llava._explain(prefix, scores, "image")
    assert [t is not None for t in texts] == [True, False, True]
    assert texts[0] == greedy_rationales(llava, prefix, [0])[0] and texts[2] == greedy_rationales(llava, prefix, [2])[0]
    assert len(texts[0]) > 20  # 64 new tokens, not the generation config's short default
    assert llava._explain(prefix, np.full((3, 3), 0.2), "image") == [None, None, None]


def test_rationales_follow_the_rules_thresholds_per_modality(llava):
    from types import SimpleNamespace

    prefix = llava._to_device(llava.preprocessor.prepare(images()[:2], [])["image"])
    scores = np.array([[0.3, 0.3], [0.1, 0.1]])
    llava.thresholds = SimpleNamespace(image=np.array([0.9, 0.25]), caption=np.array([0.9, 0.9]))
    try:
        assert [t is not None for t in llava._explain(prefix, scores, "image")] == [True, False]
        assert llava._explain(prefix, scores, "caption") == [None, None]
    finally:
        llava.thresholds = None


def test_rationales_are_greedy_even_when_the_model_config_samples(llava):
    prefix = llava._to_device(llava.preprocessor.prepare(images()[:2], [])["image"])
    config = llava.model.generation_config
    config.do_sample, config.temperature = True, 5.0
    try:
        first = llava._explain(prefix, np.array([[0.9], [0.9]]), "image")
        torch.manual_seed(123)
        second = llava._explain(prefix, np.array([[0.9], [0.9]]), "image")
    finally:
        config.do_sample, config.temperature = False, 1.0
    assert first == second == greedy_rationales(llava, prefix, [0, 1])


def test_a_rationale_holds_no_special_tokens(tiny_vlms):
    """A model that ends its answer at once gives an empty rationale, not '<|endoftext|>'."""
    backend = judge(tiny_vlms("llava"), rationale=True)
    prefix = backend._to_device(backend.preprocessor.prepare(images()[:1], [])["image"])
    eos = backend.tokenizer.eos_token_id
    with torch.no_grad():
        head = backend.model.lm_head.weight
        first = backend.model(**V._joined(prefix, backend.rationale_suffix)).logits[0, -1].argmax()
        head[eos] = head[first] * 50  # the end token becomes the first answer
    assert backend._explain(prefix, np.array([[0.9]]), "image") == [""]


def batch(n=4, length=5):
    return {"input_ids": torch.arange(n * length).reshape(n, length),
            "attention_mask": torch.ones(n, length, dtype=torch.long),
            "pixel_values": torch.arange(n * 12, dtype=torch.float32).reshape(n, 3, 2, 2),
            "image_sizes": torch.tensor([[30 + i, 40] for i in range(n)])}


def test_selecting_rows_of_a_batch():
    inputs = {**batch(), "not_per_row": torch.zeros(7)}
    picked = V._select_rows(inputs, np.array([2, 0]))
    assert set(picked) == {"input_ids", "attention_mask", "pixel_values", "image_sizes"}
    for key in ("input_ids", "attention_mask", "pixel_values", "image_sizes"):
        assert torch.equal(picked[key], inputs[key][[2, 0]]), key


def test_selecting_rows_of_a_qwen2_vl_batch_splits_the_packed_patches_by_image():
    grid = torch.tensor([[1, 2, 2], [1, 2, 4], [1, 4, 2], [1, 2, 2]])  # 4, 8, 8 and 4 patches
    pixels = torch.arange(24 * 6, dtype=torch.float32).reshape(24, 6)
    inputs = {"input_ids": torch.arange(20).reshape(4, 5), "attention_mask": torch.ones(4, 5, dtype=torch.long),
              "pixel_values": pixels, "image_grid_thw": grid}
    picked = V._select_rows(inputs, np.array([2, 0]))
    assert torch.equal(picked["pixel_values"], torch.cat([pixels[12:20], pixels[0:4]]))
    assert torch.equal(picked["image_grid_thw"], grid[[2, 0]])
    assert torch.equal(picked["input_ids"], inputs["input_ids"][[2, 0]])
    text_only = V._select_rows({k: v for k, v in inputs.items() if k != "pixel_values"}, np.array([1]))
    assert "pixel_values" not in text_only and torch.equal(text_only["input_ids"], inputs["input_ids"][[1]])


def test_joined_and_suffix_step_extend_every_row_with_the_same_suffix():
    prefix = {"input_ids": torch.tensor([[0, 5, 6], [7, 8, 9]]), "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
              "token_type_ids": torch.tensor([[0, 1, 1], [1, 1, 1]]), "pixel_values": torch.ones(2, 3)}
    joined = V._joined(prefix, [3, 4])
    assert joined["input_ids"].tolist() == [[0, 5, 6, 3, 4], [7, 8, 9, 3, 4]]
    assert joined["attention_mask"].tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert joined["token_type_ids"].tolist() == [[0, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert joined["pixel_values"] is prefix["pixel_values"] and prefix["input_ids"].shape == (2, 3)
    step = V._suffix_step(prefix, [3, 4])
    assert set(step) == {"input_ids", "attention_mask", "token_type_ids"}
    assert step["input_ids"].tolist() == [[3, 4], [3, 4]]
    assert step["attention_mask"].tolist() == joined["attention_mask"].tolist()  # the mask spans the cache too
    assert step["token_type_ids"].tolist() == [[0, 0], [0, 0]]
    plain = {k: prefix[k] for k in ("input_ids", "attention_mask")}
    assert "token_type_ids" not in V._joined(plain, [3]) and set(V._suffix_step(plain, [3])) == {"input_ids",
                                                                                                 "attention_mask"}


def test_the_probes_prefix_and_question_api_matches_the_models_own_template(llava):
    """eval's probes ask their own questions through image_prefix / question_ids / next_token_logprobs."""
    question = llava.prompts.image_questions[0]
    assert llava.tokenizer.decode(llava.question_ids(question)) == question + llava.layout.tail + llava.prompts.prefill
    prefix = llava.image_prefix(images()[:1])
    assert prefix["pixel_values"].dtype == llava.model.dtype and prefix["input_ids"].shape[0] == 1
    (logprobs,) = llava.next_token_logprobs(prefix, [llava.question_ids(question)])
    processor = llava.preprocessor.processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    with torch.inference_mode():
        expected = torch.log_softmax(llava.model(**processor(text=[text], images=[images()[:1]], return_tensors="pt"))
                                     .logits[0, -1].float(), -1)
    assert torch.allclose(logprobs[0], expected, atol=1e-4)


def test_question_ids_with_and_without_the_assistant_prefill(tiny_vlms):
    guard = judge(tiny_vlms("llava"), prompts="llavaguard")
    tail, prefill = guard.layout.tail, guard.prompts.prefill
    assert prefill == '{"rating": "'
    assert guard.tokenizer.decode(guard.question_ids("Is it safe?")) == "Is it safe?" + tail + prefill
    assert guard.tokenizer.decode(guard.question_ids("Is it safe?", False)) == "Is it safe?" + tail


def test_forward_only_runs_each_modalitys_questions(llava, monkeypatch):
    calls = []
    monkeypatch.setattr(llava, "next_token_logprobs", lambda prefix, suffixes: calls.append(
        (prefix["pixel_values"].dtype if "pixel_values" in prefix else None, suffixes)))
    inputs = llava.preprocessor.prepare(images()[:2], ["a caption"])
    assert llava.forward_only(inputs) is None
    assert calls == [(llava.model.dtype, llava.suffixes["image"]), (None, llava.suffixes["caption"])]
    calls.clear()
    llava.forward_only(llava.preprocessor.prepare([], ["a caption"]))
    assert calls == [(None, llava.suffixes["caption"])]


def test_score_and_forward_only_run_under_bf16_autocast(tiny_vlms, monkeypatch):
    bf16 = judge(tiny_vlms("llava"), precision="bf16")
    seen = []
    real = bf16.next_token_logprobs

    def recording(prefix, suffixes):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real(prefix, suffixes)

    monkeypatch.setattr(bf16, "next_token_logprobs", recording)
    bf16.forward_only(bf16.preprocessor.prepare(images()[:1], []))
    bf16.score(bf16.preprocessor.prepare(images()[:1], []))
    assert seen == [(True, torch.bfloat16)] * 2


@pytest.mark.parametrize("letter", [0, 3])
def test_the_category_answer_decides_which_concepts_carry_p_unsafe(llava, monkeypatch, letter):
    monkeypatch.setattr(llava, "next_token_logprobs", lambda prefix, suffixes: planted_logprobs(llava, 2, letter, 0.7))
    scores, p_unsafe = llava._judge({}, llava.suffixes["image"])
    assert p_unsafe.dtype == np.float32 and p_unsafe.tolist() == pytest.approx([0.7, 0.7], abs=1e-5)
    in_category = np.array([k == letter for k in load_rules().taxonomy.concept_category_index()])
    assert np.allclose(scores[:, in_category], 0.7, atol=1e-4) and np.allclose(scores[:, ~in_category], 0.0, atol=1e-4)


def test_a_hub_models_revision_is_its_commit(hub_cache, tiny_vlms):
    commit = hub_cache(tiny_vlms("llava"), "vlmaudit-test/tiny-llava")
    assert judge("vlmaudit-test/tiny-llava").describe()["revision"] == commit


def test_forward_only_does_the_same_model_work_as_score(llava, monkeypatch):
    inputs = llava.preprocessor.prepare(images()[:2], ["a caption"])
    counted = []
    real = llava.model.forward
    monkeypatch.setattr(llava.model, "forward", lambda *a, **kw: counted.append(1) or real(*a, **kw))
    monkeypatch.setattr(llava, "rationale", False)
    llava.score(inputs)
    scored, counted[:] = len(counted), []
    llava.forward_only(inputs)
    assert len(counted) == scored > 0


def test_captions_with_a_blank_image_are_asked_with_a_white_picture(tmp_path, tiny_vlms):
    from PIL import Image

    from vlmaudit.rulebook.load import shipped_rules_dir

    text = (shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml").read_text()
    blank = tmp_path / "blank.yaml"
    blank.write_text(text.replace("  image: none", "  image: blank"))
    backend = judge(tiny_vlms("llava"), prompts=str(blank))
    preprocessor = backend.preprocessor
    assert preprocessor.blank_caption_image and preprocessor.draft_size == 32
    white = preprocessor.processor.image_processor(images=[Image.new("RGB", (32, 32), "white")],
                                                   return_tensors="pt")["pixel_values"]
    prepared = preprocessor.prepare([], ["a caption", "another"])["caption"]
    assert torch.equal(prepared["pixel_values"], torch.cat([white, white]))
    assert preprocessor.caption_head("x").startswith(backend.layout.image_head)
    _, caption, extras = backend.score(preprocessor.prepare([], ["a caption"]))
    assert caption.shape == (1, len(load_rules().taxonomy.concepts)) and 0 <= extras["caption_unsafe"][0] <= 1


def test_long_captions_are_cut_to_256_tokens(llava):
    preprocessor = llava.preprocessor

    def count(text):
        return len(llava.tokenizer(text, add_special_tokens=False)["input_ids"])

    long = " ".join(f"word{i}" for i in range(400))
    clipped = preprocessor._clip(long)
    assert long.startswith(clipped) and count(clipped) == 256
    head = preprocessor.caption_head(long)
    assert head == llava.layout.text_head + llava.prompts.caption_context.format(caption=clipped) + "\n"
    exact = "x" * 256
    assert count(exact) == 256 and preprocessor._clip(exact) == exact
    assert preprocessor._clip(exact + "y") == exact


def test_a_tokenizer_that_adds_bos_cuts_captions_without_it(tiny_vlms):
    gemma = judge(tiny_vlms("gemma3")).preprocessor
    gemma.processor.tokenizer.add_bos_token = True  # as the real Gemma tokenizer does
    assert gemma.processor.tokenizer("ab")["input_ids"][0] == gemma.processor.tokenizer.bos_token_id
    long = " ".join(f"word{i}" for i in range(400))
    clipped = gemma._clip(long)
    assert long.startswith(clipped)  # no "<bos>" text inside the caption
    assert len(gemma.processor.tokenizer(clipped, add_special_tokens=False)["input_ids"]) == 256


@pytest.mark.parametrize("size,expected", [({"shortest_edge": 336}, 336), ({"height": 384, "width": 384}, 384),
                                           ({"shortest_edge": 56 * 56}, 448), ({"shortest_edge": 0, "height": 384}, 384),
                                           (None, 336), ({}, 336), ({"shortest_edge": 2048}, 2048), ("absent", 336),
                                           ({"shortest_edge": 2049}, 448)])
def test_the_draft_size_is_the_processors_edge_or_448_for_pixel_counts(size, expected):
    from types import SimpleNamespace

    assert V._draft_size(SimpleNamespace() if size == "absent" else SimpleNamespace(size=size)) == expected


def test_auto_precision_on_cuda_prefers_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: True)
    assert V._vlm_precision("auto", "cuda") == "bf16" and V._vlm_precision("auto", "cuda:1") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: False)
    assert V._vlm_precision("auto", "cuda") == "fp16"
    assert V._vlm_precision("fp32", "cuda") == "fp32" and V._vlm_precision("fp16", "cpu") == "fp16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert V._vlm_precision("auto", "cpu") == "fp32"


def test_describe_from_its_own_judge_is_the_report_metadata(tiny_vlms):
    path = str(tiny_vlms("llava"))
    taxonomy = load_rules().taxonomy
    llava = judge(path, rationale=True)  # its own: checks what __init__ sets
    assert not llava.model.training and llava.model.dtype == torch.float32
    described = llava.describe()
    assert described == {
        "backend": "vlm", "model": path, "revision": fingerprint(path, llava.config), "family": "llava",
        "device": "cpu", "precision": "fp32", "prompts": "unsafeconcepts.yaml", "kv_cache_reuse": True,
        "rationale": True,
        "coverage": {"model": path, "level": "category", "categories": taxonomy.category_ids,
                     "concepts": taxonomy.concept_ids, "modalities": ["image", "caption"]}}
    described["model"] = "changed by a caller"
    assert llava.describe()["model"] == path
    assert (llava.name, llava.stage, llava.escalation) == ("vlm", "vlm", None)


def test_describe_records_the_family_and_rationale_off(tiny_vlms):
    plain = judge(tiny_vlms("gemma3"))
    described = plain.describe()
    assert (described["family"], described["kv_cache_reuse"], described["rationale"]) == ("gemma3", True, False)


def test_answer_words_shared_by_safe_and_unsafe_are_refused(tmp_path, tiny_vlms):
    from vlmaudit.errors import ModelError
    from vlmaudit.rulebook.load import shipped_rules_dir

    text = (shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml").read_text()
    bad = tmp_path / "shared.yaml"
    bad.write_text(text.replace('unsafe: ["No", "no"]', 'unsafe: ["No", "yes"]'))
    path = str(tiny_vlms("llava"))
    with pytest.raises(ModelError) as err:
        judge(path, prompts=str(bad))
    assert str(err.value) == f"{bad}: answers.safe and answers.unsafe share a token for {path!r}"


def test_every_question_of_both_modalities_is_asked_after_its_head(tiny_vlms):
    guard = judge(tiny_vlms("llava"), prompts="llavaguard")
    p, tok, tail = guard.prompts, guard.tokenizer, guard.layout.tail
    for modality, questions, category in (("image", p.image_questions, p.category_image),
                                          ("caption", p.caption_questions, p.category_caption)):
        suffixes = guard.suffixes[modality]
        assert len(suffixes) == len(questions) + 1
        assert [tok.decode(s) for s in suffixes[:-1]] == [q + tail + p.prefill for q in questions]
        asked = tok.decode(suffixes[-1])  # the category question: no prefill, the options listed
        assert asked.startswith(category.split("{options}")[0]) and asked.endswith("J. " + p.none_option + tail)
    assert tok.decode(guard.rationale_suffix) == p.rationale_question + tail
    assert [tok.decode(ids[0]).strip() for ids in guard.letter_ids] == list("ABCDEFGHIJ")
    assert tok.convert_ids_to_tokens(guard.safe_ids) and set(guard.safe_ids).isdisjoint(guard.unsafe_ids)


def test_the_unsafe_answers_are_the_no_tokens(llava):
    assert llava.tokenizer.convert_ids_to_tokens(llava.unsafe_ids) == ["No", "\u0120No", "no", "\u0120no"]
    assert llava.tokenizer.convert_ids_to_tokens(llava.safe_ids) == ["Yes", "\u0120Yes", "yes", "\u0120yes"]


def test_captions_alone_score_each_caption_as_it_would_alone(llava, monkeypatch):
    monkeypatch.setattr(llava, "rationale", False)
    captions = ["a red square", "noise, with a much longer caption than the first one has"]
    image, caption, extras = llava.score(llava.preprocessor.prepare([], captions))
    assert image is None and set(extras) == {"caption_unsafe"}
    for i, text in enumerate(captions):  # left padding: the shorter caption reads the same alone
        alone = llava.score(llava.preprocessor.prepare([], [text]))[2]["caption_unsafe"][0]
        assert extras["caption_unsafe"][i] == pytest.approx(alone, abs=2e-5)
    assert np.allclose(caption.max(axis=1), extras["caption_unsafe"], atol=1e-6)
    # the tiny random model's P(unsafe) hardly moves; its next-token distributions show padding errors
    with torch.inference_mode():
        batched = llava.next_token_logprobs(llava._to_device(llava.preprocessor.prepare([], captions)["caption"]),
                                            llava.suffixes["caption"])
        for i, text in enumerate(captions):
            alone = llava.next_token_logprobs(llava._to_device(llava.preprocessor.prepare([], [text])["caption"]),
                                              llava.suffixes["caption"])
            assert all(torch.allclose(b[i], a[0], atol=5e-5) for b, a in zip(batched, alone))


def test_rationales_come_per_modality_with_the_scores(llava):
    from vlmaudit.rulebook.thresholds import Thresholds

    llava.thresholds = Thresholds.uniform(load_rules().taxonomy, 0.0)  # everything is flagged
    try:
        image, caption, extras = llava.score(llava.preprocessor.prepare(images()[:1], ["a caption", "another"]))
    finally:
        llava.thresholds = None
    assert set(extras) == {"image_unsafe", "caption_unsafe", "image_rationale", "caption_rationale"}
    assert len(extras["image_rationale"]) == 1 and len(extras["caption_rationale"]) == 2
    assert all(isinstance(t, str) for t in extras["image_rationale"] + extras["caption_rationale"])


def test_a_model_that_is_no_chat_vlm_is_refused(tiny_clip):
    from vlmaudit.errors import ModelError

    with pytest.raises(ModelError) as err:
        judge(tiny_clip)
    assert str(err.value) == (f"model {str(tiny_clip)!r} is a 'clip' model, not an image-text-to-text (chat VLM) model; "
                              "the vlm backend needs one, e.g. llava-hf/llava-1.5-7b-hf")


def test_a_template_that_writes_bos_gets_no_second_one(tiny_vlms):
    backend = judge(tiny_vlms("gemma3"))
    tokenizer = backend.preprocessor.processor.tokenizer
    tokenizer.add_bos_token = True  # as the real Gemma tokenizer does; its chat template writes <bos> too
    prepared = backend.preprocessor.prepare(images()[:2], ["a caption"])
    for modality in ("image", "caption"):
        ids = prepared[modality]["input_ids"]
        assert ((ids == tokenizer.bos_token_id).sum(dim=1) == 1).all(), modality


def test_greyscale_and_transparent_images_are_read_as_rgb(llava):
    picture = images()[1]
    rgb = llava.preprocessor.prepare([picture], [])["image"]["pixel_values"]
    for mode in ("L", "RGBA", "P"):
        converted = picture.convert(mode)
        expected = llava.preprocessor.prepare([converted.convert("RGB")], [])["image"]["pixel_values"]
        got = llava.preprocessor.prepare([converted], [])["image"]["pixel_values"]
        assert got.shape == rgb.shape and torch.equal(got, expected), mode


@pytest.mark.parametrize("field,old,new", [("answers.safe", 'safe: ["Yes", "yes"]', 'safe: ["Absolutely", "Sure thing"]'),
                                          ("answers.unsafe", 'unsafe: ["No", "no"]', 'unsafe: ["Never", "Nope"]')])
def test_answer_words_that_are_no_single_token_name_the_file_and_field(tmp_path, tiny_vlms, field, old, new):
    from vlmaudit.errors import RulesError
    from vlmaudit.rulebook.load import shipped_rules_dir

    text = (shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml").read_text()
    bad = tmp_path / "words.yaml"
    bad.write_text(text.replace(old, new))
    path = str(tiny_vlms("llava"))
    words = new.split(": ", 1)[1].strip("[]").replace('"', "").split(", ")
    with pytest.raises(RulesError) as err:
        judge(path, prompts=str(bad))
    assert str(err.value) == (f"{bad}: {field}: none of {words} is a single token for the tokenizer of {path!r}; "
                              "list answer words the model starts its reply with")
