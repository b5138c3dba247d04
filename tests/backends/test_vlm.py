"""The VLM judge: prompt construction per family, probability reading, batching/KV reuse vs a
naive per-sample forward, scans through the CLI, and bad input."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import run_cli, scan_args
from vlmaudit.backends import BackendOptions, build_backend
from vlmaudit.backends.verdicts import concept_scores, option_probabilities, yes_no_unsafe
from vlmaudit.backends.modelref import ModelOptions
from vlmaudit.rulebook.load import load_rules

FAMILIES = ["llava", "llava_next", "gemma3"]
EXPECTED_HEADS = {
    "llava": ("USER: <image>\n", "USER: ", " ASSISTANT:"),
    "llava_next": ("USER: <image>\n", "USER: ", " ASSISTANT:"),
    "gemma3": ("<bos><start_of_turn>user\n<start_of_image>", "<bos><start_of_turn>user\n",
               "<end_of_turn>\n<start_of_turn>model\n"),
}


def judge(model_dir, rules=None, precision="fp32", **extra):
    """fp32 unless asked: on CPUs with native bf16, auto would pick bf16 autocast."""
    options = ModelOptions(str(model_dir), "cpu", precision=precision)
    return build_backend("vlm", rules or load_rules(), options, BackendOptions(**extra))


def images():
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8))
    return [Image.new("RGB", (40, 30), "red"), noise, Image.new("RGB", (70, 20), "white")]


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_construction_follows_each_family_chat_template(tiny_vlms, family):
    backend = judge(tiny_vlms(family))
    layout, tok = backend.layout, backend.tokenizer
    assert (layout.image_head, layout.text_head, layout.tail) == EXPECTED_HEADS[family]
    assert layout.add_special_tokens == (family != "gemma3")  # Gemma's template writes <bos> itself
    question = backend.prompts.image_questions[0]
    assert tok.decode(backend.suffixes["image"][0]) == question + layout.tail
    assert len(backend.suffixes["image"]) == 6  # five alignment questions + the category question
    category = tok.decode(backend.suffixes["image"][-1])
    assert "A. Hate" in category and "J. None of these" in category
    # prefix + suffix is exactly the model's own chat template for the whole question
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    full = backend.preprocessor.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert full == layout.image_head + question + layout.tail
    assert tok.convert_ids_to_tokens(backend.safe_ids[:2]) == ["Yes", "\u0120Yes"]
    assert len(backend.letter_ids) == 10 and all(ids for ids in backend.letter_ids)


def test_probability_extraction_from_known_logits():
    vocab = 10
    logits = torch.full((2, vocab), -1e4)
    logits[0, [1, 2, 3]] = torch.log(torch.tensor([0.6, 0.1, 0.3]))  # Yes, yes, No
    logits[1, [1, 3, 4]] = torch.log(torch.tensor([0.2, 0.5, 0.3]))  # Yes, No, no
    logprobs = torch.log_softmax(logits, -1)
    p_unsafe = yes_no_unsafe(logprobs, safe_ids=[1, 2], unsafe_ids=[3, 4])
    assert p_unsafe.tolist() == pytest.approx([0.3 / 1.0, 0.8 / 1.0], abs=1e-6)
    options = option_probabilities(logprobs, [[1], [2, 3], [4]])
    assert options[1].tolist() == pytest.approx([0.2, 0.5, 0.3], abs=1e-6)
    # concepts 0,1 in category 0, concept 2 in category 1; within-category ranking optional
    scores = concept_scores(np.array([0.9]), np.array([[0.2, 0.6]]), [0, 0, 1])
    assert scores[0].tolist() == pytest.approx([0.3, 0.3, 0.9])
    scores = concept_scores(np.array([0.9]), np.array([[0.6, 0.2]]), [0, 0, 1], within=np.array([[0.1, 0.4, 1.0]]))
    assert scores[0].tolist() == pytest.approx([0.9 * 0.25, 0.9, 0.3])


def naive_p_unsafe(backend, image, question):
    """One sample, one question, the model's own chat template, no batching, no cache."""
    processor = backend.preprocessor.processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[[image]], return_tensors="pt", add_special_tokens=backend.layout.add_special_tokens)
    with torch.inference_mode():
        probs = torch.softmax(backend.model(**enc).logits[0, -1].float(), -1)
    safe, unsafe = probs[backend.safe_ids].sum(), probs[backend.unsafe_ids].sum()
    return float(unsafe / (safe + unsafe))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kv_reuse", [True, False])
def test_batched_scores_equal_a_naive_per_sample_forward(tiny_vlms, family, kv_reuse):
    backend = judge(tiny_vlms(family))
    backend.kv_reuse = kv_reuse
    batch = images()
    inputs = backend.preprocessor.prepare(batch, ["a red square", "noise, with a longer caption than the others"])
    image, caption, extras = backend.score(inputs)
    expected = [np.mean([naive_p_unsafe(backend, im, q) for q in backend.prompts.image_questions]) for im in batch]
    assert extras["image_unsafe"].tolist() == pytest.approx(expected, abs=2e-5)
    assert image.shape == (3, 75) and caption.shape == (2, 75)
    assert np.allclose(image.max(axis=1), extras["image_unsafe"], atol=1e-6)  # top concept carries P(unsafe)
    assert extras["caption_unsafe"].shape == (2,) and np.all((caption >= 0) & (caption <= 1))


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_bf16_autocast_stays_within_bf16_tolerance_of_fp32(tiny_vlms, family):
    """Runs on every CPU: bf16 is forced, not left to auto (which picks fp32 on AVX2-only CPUs)."""
    fp32, bf16 = judge(tiny_vlms(family)), judge(tiny_vlms(family), precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    batch = images()
    captions = ["a red square", "noise"]
    _, _, exact = fp32.score(fp32.preprocessor.prepare(batch, captions))
    _, _, approx = bf16.score(bf16.preprocessor.prepare(batch, captions))
    for key in ("image_unsafe", "caption_unsafe"):
        assert np.allclose(approx[key], exact[key], atol=3e-2), key  # bf16 keeps ~3 significant digits


def test_scan_with_the_vlm_backend_writes_rows_report_reads(tmp_path, tiny_vlms, demo_shards):
    out = tmp_path / "reports"
    result = run_cli(*scan_args(demo_shards, out, tiny_vlms("llava"), "--backend", "vlm", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    rows = pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()
    assert len(rows) == 21 and {r["decided_by"] for r in rows} == {"vlm"}
    assert all(0 <= r["image_unsafe"] <= 1 and 0 <= r["caption_unsafe"] <= 1 for r in rows)
    assert all(r["modalities_disagree"] == (r["image_flagged"] != r["caption_flagged"]) for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "vlm" and run["model_info"]["family"] == "llava"
    report = run_cli("report", out, "--json")
    assert report.exit_code == 0, report.output
    overview = json.loads(report.output)["overview"]
    assert overview["samples"] == 21 and overview["backend"] == "vlm"


def test_rationale_is_generated_for_flagged_samples_only(tiny_vlms):
    from vlmaudit.rulebook.thresholds import Thresholds

    backend = judge(tiny_vlms("llava"), rationale=True)
    inputs = backend.preprocessor.prepare(images(), [])
    top = backend.score(inputs)[0].max(axis=1)
    assert top.min() < top.max(), "the tiny model scores these images differently"
    backend.thresholds = Thresholds.uniform(load_rules().taxonomy, float(np.median(top)))  # flags 2 of 3
    image, _, extras = backend.score(inputs)
    flagged = (image >= float(np.median(top))).any(axis=1)
    assert flagged.sum() == 2
    assert [r is not None for r in extras["image_rationale"]] == flagged.tolist()
    assert all(isinstance(r, str) for r in extras["image_rationale"] if r is not None)


def test_not_an_image_text_to_text_model_fails_before_reading_shards(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "reports"
    result = run_cli(*scan_args(demo_shards, out, tiny_clip, "--backend", "vlm"))
    assert result.exit_code == 2
    assert "not an image-text-to-text" in result.output and "Traceback" not in result.output
    assert not list(out.glob("*.parquet")) and not list(out.glob("*.stats.json"))


def test_prompt_file_without_known_answer_tokens_is_one_clear_line(tmp_path, tiny_vlms, demo_shards):
    from vlmaudit.rulebook.load import shipped_rules_dir

    text = (shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace('safe: ["Yes", "yes"]', 'safe: ["Absolutely certainly"]'))
    out = tmp_path / "reports"
    result = run_cli(*scan_args(demo_shards, out, tiny_vlms("llava"), "--backend", "vlm", "--prompts", bad))
    assert result.exit_code == 2
    assert "answers.safe" in result.output and "single token" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(out.glob("*.parquet"))


def test_shipped_prompt_files_load(tiny_vlms):
    from vlmaudit.rulebook.prompts import load_prompts
    from vlmaudit.rulebook.load import shipped_rules_dir

    for path in sorted((shipped_rules_dir() / "prompts").glob("*.yaml")):
        prompts = load_prompts(path)
        assert prompts.image_questions and prompts.caption_questions
    unsafeconcepts = load_prompts(shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml")
    assert len(unsafeconcepts.image_questions) == 5 and len(unsafeconcepts.caption_questions) == 5
    guard = judge(tiny_vlms("llava_next"), prompts="llavaguard")
    assert guard.tokenizer.decode(guard.suffixes["image"][0]).endswith(' ASSISTANT:{"rating": "')
