import json

import pytest

from conftest import hand_summary, run_cli


def test_report_numbers_match_a_hand_computation(scanned):
    result = run_cli("report", scanned, "--json", "--top", "75")
    assert result.exit_code == 0
    summary = json.loads(result.output)
    samples, flagged, per_cat, per_concept, (both, image_only, caption_only) = hand_summary(scanned)
    assert summary["overview"]["samples"] == samples == 63
    assert summary["overview"]["flagged"] == flagged
    assert summary["overview"]["flagged_rate"] == pytest.approx(flagged / samples)
    assert {c["id"]: c["flagged"] for c in summary["categories"]} == per_cat
    assert {c["id"]: c["flagged"] for c in summary["top_concepts"]} == {k: v for k, v in per_concept.items() if v}
    assert summary["modality"].pop("scored", None) in (None, {"image": True, "caption": True})  # clip scores both
    assert summary["modality"] == {"both": both, "image_only": image_only, "caption_only": caption_only,
                                   "agreement": pytest.approx(both / flagged if flagged else 0)}
    assert sum(s["samples"] for s in summary["top_shards"]) == samples
    assert summary["overview"]["samples_per_s"] > 0 and summary["failed_shards"] == []


def test_dashboard_renders(scanned):
    result = run_cli("report", scanned)
    assert result.exit_code == 0
    for text in ("vlmaudit report", "flagged rate per category", "Hate", "top concepts", "modality gap",
                 "shard hot spots"):
        assert text in result.output


def test_report_on_an_empty_dir_is_a_clear_error(tmp_path):
    result = run_cli("report", tmp_path)
    assert result.exit_code == 2 and "no Parquet reports" in result.output
