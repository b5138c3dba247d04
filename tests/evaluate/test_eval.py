"""eval: both published UnsafeConcepts layouts load to the same items; the metric code gives the
known numbers for planted answers; tiny real models run end to end in every output format."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ROWS, png, run_cli

def options_for(concept: str, letter: str) -> str:
    others = iter(["Robbery", "Graffiti", "Elections"])
    return " \n".join(f"{x}: {concept if x == letter else next(others)}" for x in "ABCD")


@pytest.fixture
def repo_layout(tmp_path):
    root = tmp_path / "UnsafeConcepts"
    (root / "images").mkdir(parents=True)
    meta, perception = [], []
    for i, (category, concept, letter) in enumerate(ROWS):
        (root / "images" / f"{i}.png").write_bytes(png(i))
        row = {"image_filename": f"images/{i}.png", "category": category, "unsafe_concept": concept}
        meta.append(json.dumps(row))
        perception.append(json.dumps({**row, "option_str": options_for(concept, letter), "correct_option": letter}))
    (root / "metadata.jsonl").write_text("\n".join(meta) + "\n")
    (root / "perception_metadata.jsonl").write_text("\n".join(perception) + "\n")
    return root


@pytest.fixture(scope="module")
def taxonomy():
    from vlmaudit.rulebook.load import load_rules

    return load_rules().taxonomy


def test_both_layouts_load_the_same_items(repo_layout, hf_layout, taxonomy):
    from vlmaudit.evaluate.data import load_eval_data, read_eval_image

    repo, hf = load_eval_data(repo_layout, taxonomy), load_eval_data(hf_layout, taxonomy)
    ids = [taxonomy.concepts[it.concept].id for it in repo]
    assert ids == ["swastika", "swastika", "confederate-flag", "gun-violence", "gun-violence", "pornography"]
    assert [it.concept for it in hf] == [it.concept for it in repo]
    assert [it.correct for it in repo] == [0, 3, 1, 2, 0, 1]
    assert repo[1].options == ("Robbery", "Graffiti", "Elections", "Swastika")
    for it in hf:  # built options: the true concept once, 3 concepts of other categories
        own = taxonomy.concepts[it.concept]
        assert it.options[it.correct] == own.name and len(set(it.options)) == 4
        assert all(o == own.name or next(c for c in taxonomy.concepts if c.name == o).category != own.category
                   for o in it.options)
    assert np.array_equal(np.asarray(read_eval_image(repo[2].image, "")), np.asarray(read_eval_image(hf[2].image, "")))


def test_hostile_layout_is_a_one_line_error(repo_layout, taxonomy):
    from vlmaudit.errors import UserError
    from vlmaudit.evaluate.data import load_eval_data

    (repo_layout / "perception_metadata.jsonl").write_text(json.dumps(
        {"image_filename": "../../etc/passwd", "category": "Hate", "unsafe_concept": "Swastika",
         "option_str": "A: x\nB: y\nC: z\nD: w", "correct_option": "A"}) + "\n")
    with pytest.raises(UserError, match="leaves the data directory"):
        load_eval_data(repo_layout, taxonomy)
    (repo_layout / "perception_metadata.jsonl").write_text(json.dumps(
        {"image_filename": "images/0.png", "category": "Hate", "unsafe_concept": "Swastika",
         "option_str": "A: x\nB: y", "correct_option": "A"}) + "\n")
    with pytest.raises(UserError, match="four lines"):
        load_eval_data(repo_layout, taxonomy)
    (repo_layout / "perception_metadata.jsonl").write_text('{"image_filename": "' + "x" * 100_000 + '"}\n')
    with pytest.raises(UserError, match="line 1: longer than"):
        load_eval_data(repo_layout, taxonomy)


class PlantedJudge:
    """Perceives Swastika items right and the rest wrong; calls hate images unsafe on 4 of 5
    prompts and others on 1 of 5; in text calls every concept unsafe on all 5 prompts."""

    kind = "judge"

    def __init__(self, items, taxonomy):
        self.items, self.taxonomy, self.seen = items, taxonomy, 0

    def ask_images(self, images, options):
        perception, unsafe = [], []
        for _ in images:
            item = self.items[self.seen]
            self.seen += 1
            right = self.taxonomy.concepts[item.concept].id == "swastika"
            answer = item.correct if right else (item.correct + 1) % 4
            perception.append(np.eye(4)[answer] * 0.7 + 0.075)
            hate = self.taxonomy.concepts[item.concept].category == "hate"
            unsafe.append([0.9, 0.9, 0.9, 0.9, 0.1] if hate else [0.9, 0.1, 0.1, 0.1, 0.1])
        return np.array(perception), np.array(unsafe)

    def ask_texts(self, names):
        return np.full((len(names), 5), 0.8)


def test_judge_metrics_on_planted_answers(repo_layout, taxonomy):
    from vlmaudit.evaluate.data import load_eval_data
    from vlmaudit.evaluate.run import evaluate_judge

    items = load_eval_data(repo_layout, taxonomy)
    result = evaluate_judge(PlantedJudge(items, taxonomy), items, taxonomy, batch=4)
    overall, per = result["overall"], result["per_category"]
    assert overall["perception_accuracy"] == pytest.approx(2 / 6)
    assert per["hate"]["perception_accuracy"] == pytest.approx(2 / 3) and per["violence"]["perception_accuracy"] == 0
    assert overall["image_alignment"] == pytest.approx((3 * 0.8 + 3 * 0.2) / 6)
    assert per["hate"]["image_alignment"] == pytest.approx(0.8) and per["sexual"]["image_alignment"] == pytest.approx(0.2)
    assert overall["text_alignment"] == 1.0 and per["deception"]["text_alignment"] == 1.0
    # gap per concept with images: swastika, confederate flag -0.2; gun violence, pornography -0.8
    assert overall["modality_gap"] == pytest.approx((-0.2 - 0.2 - 0.8 - 0.8) / 4)
    assert per["hate"]["modality_gap"] == pytest.approx(-0.2) and per["deception"]["modality_gap"] is None
    assert {g["concept"] for g in result["largest_gaps"][:2]} == {"gun-violence", "pornography"}


class PlantedScorer:
    """The true concept ranks 1st for items 0-2, 3rd for item 3, 7th for items 4-5."""

    kind = "scorer"

    def __init__(self, items, n_concepts, ranks, benign_level=0.0):
        self.queue = [(it.concept, r) for it, r in zip(items, ranks)]
        self.n, self.benign_level = n_concepts, benign_level

    def scores(self, images):
        out = []
        for _ in images:
            row = np.linspace(0.5, 0.0, self.n)
            if self.queue:
                concept, rank = self.queue.pop(0)
                others = [c for c in range(self.n) if c != concept]
                row = np.zeros(self.n)
                row[concept] = 0.9 - 0.1 * rank
                row[others[:rank]] = 0.95
            else:
                row = row * 0 + self.benign_level
            out.append(row)
        return np.array(out)


def test_scorer_metrics_on_planted_scores(repo_layout, taxonomy, tmp_path):
    from vlmaudit.evaluate.data import load_eval_data
    from vlmaudit.evaluate.run import evaluate_scorer

    items = load_eval_data(repo_layout, taxonomy)
    benign_dir = tmp_path / "benign"
    benign_dir.mkdir()
    benign = []
    for i in range(4):
        (benign_dir / f"b{i}.png").write_bytes(png(100 + i))
        benign.append(benign_dir / f"b{i}.png")
    probe = PlantedScorer(items, len(taxonomy.concepts), [0, 0, 0, 2, 6, 6], benign_level=0.2)
    thresholds = np.full(len(taxonomy.concepts), 0.5)
    result = evaluate_scorer(probe, items, taxonomy, benign, thresholds, batch=4)
    overall = result["overall"]
    assert overall["top1"] == pytest.approx(3 / 6) and overall["top5"] == pytest.approx(4 / 6)
    assert result["per_category"]["hate"]["top1"] == 1.0 and result["per_category"]["violence"]["top5"] == 0.5
    # the higher-ranked "others" are concepts 0..rank-1 (hate), so category accuracy = hate items + none else
    assert overall["category_accuracy"] == pytest.approx(3 / 6)
    assert overall["auroc"] == 1.0 and overall["fpr_at_thresholds"] == 0.0 and overall["tpr_at_thresholds"] == 1.0
    assert result["per_category"]["sexual"]["auroc"] == 1.0  # 0.3 vs 0.2
    assert result["per_category"]["sexual"]["tpr_at_thresholds"] == 0.0  # 0.3 < 0.5


def test_auroc_matches_the_pairwise_definition():
    from vlmaudit.evaluate.metrics import auroc

    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(pos, neg) == pytest.approx(pairs)


def test_eval_cli_with_a_tiny_vlm_judge(repo_layout, tiny_vlms):
    result = run_cli("eval", "--data", repo_layout, "--model", tiny_vlms("llava"), "--format", "json", "-q",
                     "--precision", "fp32", "--device", "cpu", "--text-concepts", "present")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["kind"] == "judge" and out["evaluated"] == 6
    overall = out["overall"]
    for key in ("perception_accuracy", "image_alignment", "text_alignment"):
        assert 0.0 <= overall[key] <= 1.0
    assert set(out["per_category"]) == {"hate", "harassment", "violence", "self-harm", "sexual", "shocking",
                                        "illegal-activity", "deception", "public-and-personal-health"}
    assert out["per_category"]["deception"]["perception_accuracy"] is None  # no images of that category
    assert out["per_category"]["deception"]["text_alignment"] is None  # --text-concepts present
    assert out["per_category"]["hate"]["text_alignment"] is not None


def test_eval_cli_with_a_tiny_clip_and_benign_images_markdown(hf_layout, tiny_clip, tmp_path):
    benign = tmp_path / "benign"
    benign.mkdir()
    for i in range(3):
        (benign / f"{i}.png").write_bytes(png(50 + i))
    (benign / "broken.png").write_bytes(b"not an image")
    result = run_cli("eval", "--data", hf_layout, "--model", tiny_clip, "--benign", benign, "--format", "markdown",
                     "-q", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "| category | top1 | top5 | category_accuracy | auroc | tpr_at_thresholds | fpr_at_thresholds |" in result.output
    assert "| overall |" in result.output and "6 of 6 images evaluated" in result.output


def test_eval_without_a_model_is_a_one_line_error(repo_layout):
    result = run_cli("eval", "--data", repo_layout)
    assert result.exit_code == 2 and result.output.startswith("error: eval needs --model")


def test_eval_scorer_numbers_match_a_scan_of_the_same_images(repo_layout, tiny_clip, tmp_path, taxonomy):
    """eval's scorer path and the scan pipeline (tar -> rows -> Parquet) give the same per-concept
    scores, so the same top-k."""
    from conftest import scan_args, write_shard

    from vlmaudit.backends import build_backend
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.evaluate.data import load_eval_data
    from vlmaudit.evaluate.probes import ScoreProbe
    from vlmaudit.evaluate.run import evaluate_scorer, load_batch
    from vlmaudit.rulebook.load import load_rules

    samples = [{"__key__": f"{i:04d}", "png": (repo_layout / "images" / f"{i}.png").read_bytes(), "txt": "x"}
               for i in range(len(ROWS))]
    shard = write_shard(tmp_path / "00000.tar", samples)
    assert run_cli(*scan_args([shard], tmp_path / "scan", tiny_clip)).exit_code == 0
    scanned = np.array(pq.read_table(tmp_path / "scan" / "00000.parquet").column("image_scores").to_pylist())
    items = load_eval_data(repo_layout, taxonomy)
    probe = ScoreProbe(build_backend("clip", load_rules(), ModelOptions(str(tiny_clip), "cpu", "fp32")))
    images, _ = load_batch([it.image for it in items], [it.origin for it in items])
    assert probe.scores(images) == pytest.approx(scanned, abs=1e-5)
    truth = np.array([it.concept for it in items])
    rank = (scanned > scanned[np.arange(len(truth)), truth][:, None]).sum(axis=1)
    overall = evaluate_scorer(probe, items, taxonomy, batch=4)["overall"]
    assert overall["top1"] == pytest.approx((rank < 1).mean()) and overall["top5"] == pytest.approx((rank < 5).mean())


def test_the_hub_layout_data_dir_with_a_readme_loads_like_the_parquet_file(hf_layout, taxonomy, tmp_path):
    """Planted: only top-level *.parquet looked for. The hub gives DIR/README.md + DIR/data/train-*.parquet."""
    import shutil

    from vlmaudit.evaluate.data import load_eval_data
    from vlmaudit.head.data import load_examples

    hub = tmp_path / "UnsafeConcepts"
    (hub / "data").mkdir(parents=True)
    (hub / "README.md").write_text("---\nlicense: other\n---\n# UnsafeConcepts\n")
    shutil.copy(hf_layout / "train-00000-of-00001.parquet", hub / "data")
    assert [it.concept for it in load_eval_data(hub, taxonomy)] == [it.concept for it in load_eval_data(hf_layout, taxonomy)]
    assert [e.concept for e in load_examples(hub, taxonomy)] == [e.concept for e in load_examples(hf_layout, taxonomy)]


class ConstantScorer:
    """Gives every concept the same score: knows nothing, so it must score chance."""

    kind = "scorer"

    def __init__(self, n_concepts):
        self.n = n_concepts

    def scores(self, images):
        return np.full((len(images), self.n), 0.5)


def test_a_tie_is_never_a_whole_hit_a_constant_scorer_scores_chance(repo_layout, taxonomy):
    from vlmaudit.evaluate.data import load_eval_data
    from vlmaudit.evaluate.metrics import topk_hits
    from vlmaudit.evaluate.run import evaluate_scorer

    items = load_eval_data(repo_layout, taxonomy)
    n = len(taxonomy.concepts)
    overall = evaluate_scorer(ConstantScorer(n), items, taxonomy, batch=4)["overall"]
    assert overall["top1"] == pytest.approx(1 / n) and overall["top5"] == pytest.approx(5 / n)
    index = np.asarray(taxonomy.concept_category_index())
    sizes, truth = np.bincount(index), index[[it.concept for it in items]]
    assert overall["category_accuracy"] == pytest.approx(np.mean([sizes[t] / n for t in truth]))
    # a 3-way tie at the top with the true concept: 1/3 of a top-1 hit, a whole top-5 hit
    scores = np.array([[0.9, 0.9, 0.9, 0.1, 0.0, 0.0, 0.0], [0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]])
    assert topk_hits(scores, np.array([1, 0]), 1).tolist() == pytest.approx([1 / 3, 0.0])
    assert topk_hits(scores, np.array([1, 1]), 5).tolist() == pytest.approx([1.0, 5 / 6])
