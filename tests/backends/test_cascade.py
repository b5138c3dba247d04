"""The cascade: the first stage scores everything, exactly the expected samples go to the judge,
both stages' scores are kept, and report reads the rows."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args


def rows_by_sample(out):
    rows = pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()
    return {(r["shard"], r["sample_index"]): r for r in rows}


def top(row):
    values = [v for v in (row["image_top_score"], row["caption_top_score"]) if v is not None]
    return max(values) if values else None


@pytest.fixture
def clip_only(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "clip"
    assert run_cli(*scan_args(demo_shards, out, tiny_clip, "--batch-size", "3")).exit_code == 0
    return rows_by_sample(out)


def check_cascade(out, clip_rows, expected):
    rows = rows_by_sample(out)
    assert rows.keys() == clip_rows.keys()
    escalated = {k for k, r in rows.items() if r["decided_by"] == "vlm"}
    assert escalated == expected and escalated and len(escalated) < len(rows)
    for key, row in rows.items():
        first = clip_rows[key]
        if key in escalated:
            assert row["screen_image_scores"] == pytest.approx(first["image_scores"], abs=1e-5)
            assert row["screen_caption_scores"] == pytest.approx(first["caption_scores"], abs=1e-5)
            assert row["image_unsafe"] is not None and row["model"] != first["model"]
            assert row["image_top_score"] == pytest.approx(row["image_unsafe"], abs=1e-6)
        else:
            assert row["decided_by"] == "clip" and row["screen_image_scores"] is None
            assert row["image_scores"] == pytest.approx(first["image_scores"], abs=1e-5)
    return rows


def test_cascade_escalates_exactly_the_samples_above_the_threshold(tmp_path, tiny_clip, tiny_vlms, demo_shards, clip_only):
    threshold = float(np.median([top(r) for r in clip_only.values()]))
    expected = {k for k, r in clip_only.items() if top(r) >= threshold}
    out = tmp_path / "cascade"
    result = run_cli(*scan_args(demo_shards, out, tiny_clip, "--backend", "cascade", "--judge-model", tiny_vlms("llava"),
                                "--escalate-above", str(threshold), "--batch-size", "3"))
    assert result.exit_code == 0, result.output
    check_cascade(out, clip_only, expected)
    stats = json.loads((out / "00000.stats.json").read_text())
    assert stats["escalated"] == stats["judged"] == sum(1 for k in expected if k[0] == "00000")
    report = run_cli("report", out, "--json")
    assert report.exit_code == 0, report.output
    overview = json.loads(report.output)["overview"]
    assert overview["backend"] == "cascade" and overview["judged"] == len(expected)


def test_cascade_escalates_the_top_percent_of_each_shard(tmp_path, tiny_clip, tiny_vlms, demo_shards, clip_only):
    expected = set()
    for shard in ("00000", "00001", "00002"):
        ranked = sorted((k for k in clip_only if k[0] == shard), key=lambda k: (-top(clip_only[k]), k[1]))
        expected |= set(ranked[:math.ceil(0.3 * len(ranked))])
    out = tmp_path / "cascade"
    result = run_cli(*scan_args(demo_shards, out, tiny_clip, "--backend", "cascade", "--judge-model", tiny_vlms("gemma3"),
                                "--escalate-top", "30", "--batch-size", "3"))
    assert result.exit_code == 0, result.output
    check_cascade(out, clip_only, expected)


def test_cascade_needs_exactly_one_escalation_rule(tmp_path, tiny_clip, tiny_vlms, demo_shards):
    result = run_cli(*scan_args(demo_shards, tmp_path / "o", tiny_clip, "--backend", "cascade",
                                "--judge-model", tiny_vlms("llava")))
    assert result.exit_code == 2 and "exactly one of --escalate-above" in result.output
