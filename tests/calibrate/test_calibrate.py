"""calibrate: on planted score distributions the written thresholds reach the target precision on
HELD-OUT labels; the file loads in scan and report; unreachable targets are said, not written."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from conftest import write_planted_report as write_report


def planted(n, rng, taxonomy, category, positive_rate=0.3):
    """Scores where `category`'s concepts score Beta(5,2) on positives and Beta(2,5) on negatives."""
    members = np.array([c.category == category for c in taxonomy.concepts])
    truth = rng.random(n) < positive_rate
    image = (rng.random((n, len(members))) * 0.2).astype(np.float32)
    strong = np.where(truth, rng.beta(5, 2, n), rng.beta(2, 5, n)).astype(np.float32)
    image[:, np.flatnonzero(members)[0]] = strong
    caption = (rng.random((n, len(members))) * 0.2).astype(np.float32)
    return image, caption, truth, members


def write_labels(path, keys, category, truth):
    path.write_text("key,category,label\n" + "".join(f"{k},{category},{int(t)}\n" for k, t in zip(keys, truth)))
    return path


@pytest.mark.parametrize("target", [0.8, 0.9])
def test_thresholds_reach_the_target_precision_on_held_out_labels(tmp_path, target):
    from vlmaudit.rulebook.load import load_rules

    rng = np.random.default_rng(1)
    taxonomy = load_rules().taxonomy
    image, caption, truth, members = planted(8000, rng, taxonomy, "violence")
    _, keys = write_report(tmp_path / "rep", image, caption)
    half = len(keys) // 2
    labels = write_labels(tmp_path / "labels.csv", keys[:half], "Violence", truth[:half])  # by name
    out = tmp_path / "thr.yaml"
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", target, "--out", out,
                     "--modality", "image", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    (group,) = summary["groups"]
    assert group["id"] == "violence" and group["precision"] >= target and group["positives"] == truth[:half].sum()
    threshold = load_rules().thresholds
    from vlmaudit.rulebook.thresholds import load_thresholds

    loaded = load_thresholds(out, taxonomy, base=threshold)
    assert loaded.image[members] == pytest.approx(group["threshold"]) and (loaded.caption == threshold.caption).all()
    assert (loaded.image[~members] == threshold.image[~members]).all()
    flagged = image[half:, members].max(axis=1) >= loaded.image[members][0]
    held_out = truth[half:][flagged].mean()
    error = 3 * math.sqrt(target * (1 - target) / flagged.sum())
    assert abs(held_out - target) < error, (held_out, target, error)


def test_unreachable_target_is_reported_and_not_written(tmp_path):
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.rulebook.thresholds import load_thresholds

    rng = np.random.default_rng(2)
    taxonomy = load_rules().taxonomy
    image, caption, truth, _ = planted(400, rng, taxonomy, "sexual")
    truth = rng.random(400) < 0.3  # labels unrelated to the scores
    _, keys = write_report(tmp_path / "rep", image, caption)
    labels = write_labels(tmp_path / "labels.csv", keys, "sexual", truth)
    out = tmp_path / "thr.yaml"
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", "0.99", "--out", out,
                     "--min-flagged", "20")
    assert result.exit_code == 0, result.output
    assert "cannot be reached" in result.output and "sexual" in result.output
    base = load_rules().thresholds
    loaded = load_thresholds(out, taxonomy, base=base)
    assert (loaded.image == base.image).all() and (loaded.caption == base.caption).all()


def test_report_and_scan_accept_the_written_thresholds(tmp_path, tiny_clip, demo_shards):
    from conftest import scan_args

    rng = np.random.default_rng(3)
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    image, caption, truth, members = planted(600, rng, taxonomy, "hate")
    _, keys = write_report(tmp_path / "rep", image, caption)
    labels = write_labels(tmp_path / "labels.csv", keys, "hate", truth)
    out = tmp_path / "thr.yaml"
    assert run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", "0.9", "--out", out,
                   "--modality", "both").exit_code == 0
    from vlmaudit.rulebook.thresholds import load_thresholds

    t = float(load_thresholds(out, taxonomy).image[members][0])
    report = run_cli("report", tmp_path / "rep", "--json", "--thresholds", out)
    assert report.exit_code == 0, report.output
    hate = next(c for c in json.loads(report.output)["categories"] if c["id"] == "hate")
    expected = int((np.fmax(image[:, members].max(1), caption[:, members].max(1)) >= t).sum())
    assert hate["flagged"] == expected and expected > 0
    scan_out = tmp_path / "scan"
    result = run_cli(*scan_args(demo_shards[:1], scan_out, tiny_clip, "--thresholds", out))
    assert result.exit_code == 0, result.output
    meta = json.loads(pq.read_schema(scan_out / "00000.parquet").metadata[b"vlmaudit"])
    assert np.array(meta["thresholds"]["image"])[members] == pytest.approx(t)


def test_bad_labels_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(4)
    from vlmaudit.rulebook.load import load_rules

    image, caption, _, _ = planted(10, rng, load_rules().taxonomy, "hate")
    write_report(tmp_path / "rep", image, caption)
    bad = tmp_path / "labels.csv"
    bad.write_text("key,category,label\nk000001,not-a-category,1\n")
    result = run_cli("calibrate", tmp_path / "rep", "--labels", bad, "--target-precision", "0.9", "--out",
                     tmp_path / "t.yaml")
    assert result.exit_code == 2 and "unknown category 'not-a-category'" in result.output
    bad.write_text("key,category,label\nk000001,hate,maybe\n")
    result = run_cli("calibrate", tmp_path / "rep", "--labels", bad, "--target-precision", "0.9", "--out",
                     tmp_path / "t.yaml")
    assert result.exit_code == 2 and "maybe" in result.output and "Traceback" not in result.output
