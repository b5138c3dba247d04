"""One test per class of bug that once slipped through the suite (issue 12, "Why").

Each test was checked by planting its bug in vlmaudit/ and seeing it fail; the planted bug is
named in the test's docstring. Keep them black-box where the code is being rewritten (report).
"""

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import planted_logprobs, rules_with_threshold, run_cli, scan_args, write_tar
from vlmaudit.demo.build import synthetic_image
from vlmaudit.rulebook.load import load_rules

RULES = load_rules()
TAX = RULES.taxonomy


def jpg(seed: int) -> bytes:
    import random

    return synthetic_image(random.Random(seed), (48, 40))


def rows_of(out) -> list[dict]:
    return pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()


def stats_of(out) -> dict:
    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in out.glob("*.stats.json")}


def report_json(report_dir, *args) -> dict:
    result = run_cli("report", report_dir, "--format", "json", "--top", "75", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def exact(value) -> str:
    """A float32 value written so that YAML / float() read back exactly the same float32."""
    return repr(float(np.float32(value)))


@pytest.fixture(scope="module")
def scanned_all_flagged(tmp_path_factory, tiny_clip, demo_scan):
    """The demo scan's shards scanned again with every threshold at 0: every scored sample is flagged."""
    root = tmp_path_factory.mktemp("reg0")
    out = root / "reports"
    result = run_cli(*scan_args(demo_scan.shards, out, tiny_clip, "--rules", rules_with_threshold(root, 0.0)))
    assert result.exit_code == 0, result.output
    return out


# ---- 1. a threshold compared with > instead of >= ------------------------------------------------

def test_a_score_exactly_at_the_threshold_is_flagged_in_rows():
    """Planted: flags.concept_flags uses > (rows' flags, flagged concepts and categories)."""
    from vlmaudit.rulebook.thresholds import Thresholds
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.schema import report_meta, report_schema

    thresholds = Thresholds.uniform(TAX, 0.5)
    schema = report_schema(TAX, report_meta(TAX, thresholds, {"backend": "clip", "model": "m", "revision": "r"}))
    builder = RowBuilder(TAX, thresholds, schema, "m@r")
    concept = TAX.concepts[7]
    scores = np.zeros((2, len(TAX.concepts)), np.float32)
    scores[0, 7] = 0.5
    scores[1, 7] = np.nextafter(np.float32(0.5), np.float32(0))
    metas = [RowMeta(f"k{i}", i, None, None, "ok", image_row=i) for i in range(2)]
    rows = builder.build("s", metas, scores, None).to_pylist()
    assert [r["image_flagged"] for r in rows] == [True, False]
    assert [r["flagged"] for r in rows] == [True, False]
    assert rows[0]["image_flagged_concepts"] == [concept.id] and rows[1]["image_flagged_concepts"] == []
    assert rows[0]["flagged_categories"] == [concept.category] and rows[1]["flagged_categories"] == []
    assert rows[0]["caption_flagged"] is None  # not scored is not "not flagged"


def test_a_score_exactly_at_a_policy_threshold_fires(tmp_path):
    """Planted: > instead of >= in the policy SQL that filter and report --policy run."""
    from conftest import decide_by_policy

    from vlmaudit.rulebook.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("default: {threshold: 0.25, modality: any, action: drop}\n")
    policy = load_policy(path, TAX.concept_ids, [c.category for c in TAX.concepts])
    image = np.zeros((2, len(TAX.concepts)), np.float32)
    image[0, 3], image[1, 3] = 0.25, np.nextafter(np.float32(0.25), np.float32(0))
    assert decide_by_policy(policy, image, np.full_like(image, np.nan), tmp_path) == [([3], 2), ([], 0)]


def test_scan_and_report_flag_the_sample_whose_score_equals_the_threshold(tmp_path, tiny_clip, scanned, demo_scan):
    """Planted: > in flags.py (scan) or in the report's re-thresholding; thresholds.yaml read
    through float32 must keep an exactly representable value exact."""
    rows = rows_of(scanned)
    top = max(max(r["image_scores"] or [0]) for r in rows)
    at = sum(1 for r in rows if r["image_scores"] and max(r["image_scores"]) == top)
    above = exact(np.nextafter(np.float32(top), np.float32(1)))
    # the report re-thresholds the stored scores; --threshold sets both modalities, so captions count too
    assert report_json(scanned, "--threshold", exact(top))["overview"]["flagged"] >= at >= 1
    assert report_json(scanned, "--threshold", above)["overview"]["flagged"] == sum(
        1 for r in rows if r["caption_scores"] and max(r["caption_scores"]) >= float(above))
    # the scan itself, with the image threshold in thresholds.yaml (captions out of the way at 1.0)
    rules = rules_with_threshold(tmp_path, 0.0)
    (rules / "thresholds.yaml").write_text(
        f"default: {{image: {exact(top)}, caption: 1.0}}\n")
    out = tmp_path / "at"
    assert run_cli(*scan_args(demo_scan.shards, out, tiny_clip, "--rules", rules)).exit_code == 0
    flagged = [r for r in rows_of(out) if r["image_flagged"]]
    assert len(flagged) == at and all(max(r["image_scores"]) == top for r in flagged)
    assert sum(s["flagged"]["image"] for s in stats_of(out).values()) == at


# ---- 2. a failed shard counted as done -----------------------------------------------------------

def test_shard_is_done_only_for_complete_or_truncated_with_a_parquet(tmp_path):
    """Planted: writer.shard_is_done accepts status 'failed' (or ignores a missing Parquet)."""
    from vlmaudit.scan.writer import shard_is_done

    for status, parquet, done in (("complete", True, True), ("truncated", True, True), ("failed", True, False),
                                  ("failed", False, False), ("complete", False, False)):
        out = tmp_path / f"{status}-{parquet}"
        out.mkdir()
        (out / "s.stats.json").write_text(json.dumps({"status": status}))
        if parquet:
            (out / "s.parquet").write_bytes(b"x")
        assert shard_is_done(out, "s") is done, (status, parquet)
    (tmp_path / "junk.stats.json").write_text("{not json")
    (tmp_path / "junk.parquet").write_bytes(b"x")
    assert shard_is_done(tmp_path, "junk") is False


def test_a_failed_shard_is_retried_by_the_next_run_and_done_ones_are_not(tmp_path, tiny_clip):
    """Planted: the resume plan (runinfo.split_done / shard_is_done) counts a failed shard as done,
    so re-running the same command never retries it."""
    good = write_tar(tmp_path / "good.tar", [("a.jpg", jpg(1)), ("a.txt", b"x")])
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    out = tmp_path / "out"
    args = scan_args([good, junk], out, tiny_clip, "--retries", "0")
    first = run_cli(*args)
    assert first.exit_code == 1 and "1 shard(s) failed: junk" in first.output
    assert stats_of(out)["junk"]["status"] == "failed"
    assert report_json(out)["failed_shards"] == ["junk"]
    write_tar(junk, [("b.jpg", jpg(2)), ("b.txt", b"y"), ("c.jpg", jpg(3))])  # the shard is fixed
    good_stats = (out / "good.stats.json").read_text()
    second = run_cli(*args)
    assert second.exit_code == 0, second.output
    assert "1 of 2 shards already done" in second.output
    assert (out / "good.stats.json").read_text() == good_stats  # not rescanned
    assert stats_of(out)["junk"]["status"] == "complete" and stats_of(out)["junk"]["rows"] == 2
    assert sorted(r["key"] for r in rows_of(out)) == ["a", "b", "c"]


# ---- 3. an inference failure recorded as ok ------------------------------------------------------

def test_a_batch_whose_model_call_fails_becomes_inference_error_rows(tmp_path, tiny_clip, monkeypatch):
    """Planted: scanner.score_batch leaves status 'ok' (or keeps the rows' score indices) when the
    model raises."""
    from vlmaudit.backends.clip import ClipScorer

    real, calls = ClipScorer.score, []

    def second_call_fails(self, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("planted out of memory")
        return real(self, inputs)

    monkeypatch.setattr(ClipScorer, "score", second_call_fails)
    shard = write_tar(tmp_path / "s.tar", [m for i in range(6) for m in ((f"{i}.jpg", jpg(i)), (f"{i}.txt", b"cap"))])
    out = tmp_path / "out"
    assert run_cli(*scan_args([shard], out, tiny_clip, "--batch-size", "3", "--rules",
                              rules_with_threshold(tmp_path, 0.0))).exit_code == 0
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["ok"] * 3 + ["inference_error"] * 3
    for row in rows[3:]:
        assert "RuntimeError: planted out of memory" in row["error"]
        assert row["image_scores"] is None and row["caption_scores"] is None and row["flagged"] is False
        assert row["decided_by"] is None
    assert all(r["flagged"] and r["image_scores"] and r["error"] is None for r in rows[:3])
    stats = stats_of(out)["s"]
    assert stats["status"] == "complete" and stats["status_counts"] == {"ok": 3, "inference_error": 3}
    assert stats["flagged"]["any"] == 3


# ---- 4. a duplicate-key row scored ---------------------------------------------------------------

def test_a_duplicate_key_row_is_never_scored_or_flagged(tmp_path, tiny_clip):
    """Planted: worker.prepare_batch gives a duplicate_key sample a caption row (or an image row)."""
    shard = write_tar(tmp_path / "s.tar", [
        ("a.jpg", jpg(1)), ("a.txt", b"first"), ("b.jpg", jpg(2)), ("b.txt", b"second"),
        ("a.jpg", jpg(3)), ("a.txt", b"again"),
    ])
    out = tmp_path / "out"
    # threshold 0: anything scored is flagged, so "not flagged" below means "not scored"
    assert run_cli(*scan_args([shard], out, tiny_clip, "--rules", rules_with_threshold(tmp_path, 0.0))).exit_code == 0
    first, second, dup = rows_of(out)
    assert first["flagged"] and second["flagged"] and first["caption_scores"] and first["image_scores"]
    assert (dup["key"], dup["status"], dup["caption"]) == ("a", "duplicate_key", "again")
    assert dup["image_scores"] is None and dup["caption_scores"] is None
    assert dup["flagged"] is False and dup["image_flagged"] is None and dup["caption_flagged"] is None
    assert dup["image_top_concept"] is None and dup["decided_by"] is None
    assert stats_of(out)["s"]["flagged"]["any"] == 2


# ---- 5. filter --write-shards copying only the first member of each sample -----------------------

def tar_members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def test_write_shards_copies_every_member_of_every_kept_sample(tmp_path, tiny_clip):
    """Planted: reshard.write_shard copies only members[0] of each kept sample (or skips the
    members vlmaudit itself ignores, such as .cls)."""
    members = []
    for i in range(4):
        meta = json.dumps({"url": f"http://x/{i}", "caption": f"c{i}"}).encode()
        members += [(f"{i:03d}.jpg", jpg(i)), (f"{i:03d}.txt", f"caption {i}".encode()),
                    (f"{i:03d}.json", meta), (f"{i:03d}.cls", str(i).encode())]
    shard = write_tar(tmp_path / "s.tar", members)
    reports, filtered, kept = tmp_path / "r", tmp_path / "f", tmp_path / "kept"
    assert run_cli(*scan_args([shard], reports, tiny_clip)).exit_code == 0
    policy = tmp_path / "keep_all.yaml"
    policy.write_text("default: {threshold: 0.0, modality: any, action: keep}\n")
    result = run_cli("filter", reports, "--policy", policy, "--out", filtered, "--write-shards", kept)
    assert result.exit_code == 0, result.output
    assert len(pq.read_table(filtered / "keep.parquet")) == 4
    assert tar_members(kept / "s.tar") == members  # every member, same order, same bytes


# ---- 6. report --compare comparing a run with itself ---------------------------------------------

def test_compare_reads_the_other_run(scanned, scanned_all_flagged):
    """Planted: commands/report._add_comparison summarises request.report_dir twice."""
    this, other = report_json(scanned), report_json(scanned_all_flagged)
    rates = {c["id"]: c["rate"] for c in this["categories"]}
    other_rates = {c["id"]: c["rate"] for c in other["categories"]}
    assert rates != other_rates and all(r > 0 for r in other_rates.values())  # the two runs differ
    compared = report_json(scanned, "--compare", scanned_all_flagged)
    assert compared["compare_dir"] == str(scanned_all_flagged)
    for row in compared["compare"]:
        assert row["rate"] == pytest.approx(rates[row["id"]]) and row["other_rate"] == pytest.approx(other_rates[row["id"]])
        assert row["delta"] == pytest.approx(rates[row["id"]] - other_rates[row["id"]])
    reverse = report_json(scanned_all_flagged, "--compare", scanned)
    assert [r["delta"] for r in reverse["compare"]] == pytest.approx([-r["delta"] for r in compared["compare"]])


# ---- 7. the VLM judge's answer letters mapped to the wrong categories -----------------------------

@pytest.fixture(scope="module")
def llava_judge(tiny_vlms):
    from vlmaudit.backends import BackendOptions, build_backend
    from vlmaudit.backends.modelref import ModelOptions

    return build_backend("vlm", RULES, ModelOptions(str(tiny_vlms("llava")), "cpu", precision="fp32"),
                         BackendOptions())


@pytest.mark.parametrize("letter", [0, 4, 8])
def test_each_answer_letter_scores_its_own_category(llava_judge, letter):
    """Planted: the options lose the wrong column (options[:, 1:]), the letters are built in
    another order than the category list the prompt shows, or the letter ids are shifted."""
    from vlmaudit.rulebook.prompts import category_options

    backend = llava_judge
    category = TAX.categories[letter]
    text, letters = category_options([c.name for c in TAX.categories], backend.prompts.none_option)
    assert f"{letters[letter]}. {category.name}" in backend.tokenizer.decode(backend.suffixes["image"][-1])
    assert backend.tokenizer.decode(backend.letter_ids[letter]).strip() == letters[letter]
    backend.next_token_logprobs = lambda prefix, suffixes: planted_logprobs(backend, 2, letter, 0.75)
    scores, p_unsafe = backend._judge({}, backend.suffixes["image"])
    assert p_unsafe.tolist() == pytest.approx([0.75, 0.75], abs=1e-5)
    ids = TAX.category_ids
    mine = np.array([ids[k] == category.id for k in TAX.concept_category_index()])
    assert np.allclose(scores[:, mine], 0.75, atol=1e-5) and np.allclose(scores[:, ~mine], 0.0, atol=1e-5)


def test_the_none_option_scores_no_category(llava_judge):
    """Planted: the none option (last letter) is kept as a category and another one dropped."""
    backend = llava_judge
    none = len(TAX.categories)
    assert backend.tokenizer.decode(backend.letter_ids[none]).strip() == "ABCDEFGHIJ"[none]
    logprobs = planted_logprobs(backend, 1, none, 0.5)
    logprobs[-1][:, backend.letter_ids[0][0]] = float(np.log(0.1))  # a little mass on the first category
    backend.next_token_logprobs = lambda prefix, suffixes: logprobs
    scores, _ = backend._judge({}, backend.suffixes["image"])
    first = np.array([k == 0 for k in TAX.concept_category_index()])
    assert np.allclose(scores[0, first], 0.5, atol=1e-4) and np.allclose(scores[0, ~first], 0.0, atol=1e-4)


# ---- 8. the head's P(unsafe) inverted -----------------------------------------------------------

def biased_head(tmp_path, tiny_clip, name: str, category: int | None, concept: int | None):
    """A real SafetyHead saved like train-head does, whose logits are its biases: all mass on
    CATEGORY / CONCEPT (None = the safe class)."""
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.vision import VisionTower
    from vlmaudit.head.model import SafetyHead, save_head

    tower = VisionTower(ModelOptions(str(tiny_clip), "cpu", precision="fp32"))
    n_concepts, n_categories = len(TAX.concepts), len(TAX.categories)
    head = SafetyHead(tower.width, n_concepts, n_categories, dim=32, tokens=4, heads=4)
    with torch.no_grad():
        for layer, index, size in ((head.category_logits, category, n_categories),
                                   (head.concept_logits, concept, n_concepts)):
            layer.weight.zero_()
            layer.bias.fill_(-10.0)
            layer.bias[size if index is None else index] = 10.0
    config = {"vision_model": str(tiny_clip), "vision_revision": tower.revision, "vision_dim": tower.width,
              "dim": 32, "tokens": 4, "heads": 4, "concepts": TAX.concept_ids, "categories": TAX.category_ids,
              "taxonomy_version": TAX.tag}
    save_head(head, tmp_path / name, config)
    return tmp_path / name


def test_the_head_reads_p_unsafe_as_one_minus_p_safe(tmp_path, tiny_clip):
    """Planted: backends/head.py uses category[:, -1] (P(safe)) as P(unsafe)."""
    from PIL import Image

    from vlmaudit.backends.head import HeadScorer
    from vlmaudit.backends.modelref import ModelOptions

    concept = 20
    category = TAX.concept_category_index()[concept]
    images = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 50), "blue")]
    options = ModelOptions(None, "cpu", precision="fp32")
    safe = HeadScorer(TAX, options, biased_head(tmp_path, tiny_clip, "safe", None, None))
    unsafe = HeadScorer(TAX, options, biased_head(tmp_path, tiny_clip, "unsafe", category, concept))
    safe_scores, _, safe_extra = safe.score(safe.preprocessor.prepare(images, []))
    unsafe_scores, _, unsafe_extra = unsafe.score(unsafe.preprocessor.prepare(images, []))
    assert np.all(safe_extra["image_unsafe"] < 1e-3) and np.all(safe_scores < 1e-3)
    assert np.all(unsafe_extra["image_unsafe"] > 0.999)
    assert unsafe_scores.argmax(axis=1).tolist() == [concept, concept]
    assert unsafe_scores[:, concept] == pytest.approx(unsafe_extra["image_unsafe"], abs=1e-6)


# ---- 9. report --policy counting keep rules -----------------------------------------------------

def test_report_policy_counts_review_and_drop_rules_but_never_keep_rules(tmp_path, scanned):
    """Planted: report's policy flags ignore the action (keep rules counted as flags)."""
    rows = rows_of(scanned)
    scored = sum(1 for r in rows if r["image_scores"] or r["caption_scores"])
    keep_all = tmp_path / "keep_all.yaml"
    keep_all.write_text("default: {threshold: 0.0, modality: any, action: keep}\n")
    summary = report_json(scanned, "--policy", keep_all)
    assert summary["overview"]["flagged"] == 0
    assert all(c["flagged"] == 0 for c in summary["categories"])
    one = tmp_path / "review_violence.yaml"
    one.write_text("default: {threshold: 0.0, modality: any, action: keep}\n"
                   "categories: {violence: {action: review}, hate: {action: drop}}\n"
                   "concepts: {swastika: {action: keep}}\n")
    summary = report_json(scanned, "--policy", one)
    flagged = {c["id"]: c["flagged"] for c in summary["categories"]}
    assert summary["overview"]["flagged"] == scored >= 1
    assert flagged == {cid: scored if cid in ("violence", "hate") else 0 for cid in TAX.category_ids}
    assert all(c["id"] != "swastika" for c in summary["top_concepts"])
