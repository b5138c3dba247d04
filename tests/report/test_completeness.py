"""Every output says whether the run is complete: planned shards without a report (not started,
interrupted, held by a live writer, failed), truncated shards with the samples read, failed
samples by status; --fail-above refuses to gate an incomplete run unless asked."""

import json
import os
import shutil
import socket

import pyarrow.parquet as pq
import pytest
from conftest import interrupt_after_two_shards, run_cli, scan_args

PER_SHARD = 7


@pytest.fixture(scope="module")
def partial(tmp_path_factory, tiny_clip):
    """3 planned shards: 00000 scanned, 00001 never started (the state Ctrl-C leaves), 00002 a tar
    cut in the middle (truncated)."""
    from vlmaudit.demo.build import build_demo_shards

    root = tmp_path_factory.mktemp("partial")
    shards = build_demo_shards(root / "shards", shards=3, per_shard=PER_SHARD)
    cut = shards[2]
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 300])
    out = root / "reports"
    for index in ("0", "2"):
        run_cli(*scan_args(shards, out, tiny_clip, "--num-shards", "3", "--shard-index", index))
    return out


def samples_read(reports):
    return pq.read_metadata(reports / "00002.parquet").num_rows


def report_json(reports, *extra):
    result = run_cli("report", reports, "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_partial_run_is_reported_incomplete_with_the_samples_read(partial):
    stats = json.loads((partial / "00002.stats.json").read_text())
    assert stats["status"] == "truncated"
    read = samples_read(partial)
    assert 0 < read < PER_SHARD
    data = report_json(partial)
    assert data["complete"] is False
    inc = data["incomplete"]
    assert inc["missing_shards"] == ["00001"] and inc["held_shards"] == [] and inc["failed_shards"] == []
    assert inc["truncated"] == [{"shard": "00002", "samples_read": read}]
    assert inc["planned_shards"] == 3 and inc["finished_shards"] == 2
    assert inc["failed_by_status"] == {k: v for k, v in data["overview"]["status"].items() if k != "ok"}


@pytest.mark.parametrize("fmt", ["table", "markdown", "html", "json"])
def test_every_format_says_the_run_is_incomplete(partial, tmp_path, fmt):
    out = tmp_path / f"report.{fmt}"
    result = run_cli("report", partial, "--format", fmt, "--output", out, "--examples", "0")
    assert result.exit_code == 0, result.output
    text = out.read_text() if out.exists() else result.output
    assert "00001" in text and "00002" in text
    if fmt == "json":
        assert json.loads(text)["complete"] is False
    else:
        assert "INCOMPLETE run" in text and f"{samples_read(partial)} samples read" in text
        assert "not scanned" in text


def test_fail_above_refuses_an_incomplete_run_unless_allowed(partial):
    refused = run_cli("report", partial, "--fail-above", "sexual=1.0")
    assert refused.exit_code == 2
    assert "error: --fail-above on an incomplete run" in refused.output and "00001" in refused.output
    assert "--allow-incomplete" in refused.output
    allowed = run_cli("report", partial, "--fail-above", "sexual=1.0", "--allow-incomplete")
    assert allowed.exit_code == 0, allowed.output
    assert run_cli("report", partial).exit_code == 0  # no gate asked: the report is shown, exit 0


def test_a_live_claim_is_held_and_a_dead_writers_claim_is_missing(partial, tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(partial, reports)
    lock = reports / ".00001.lock"
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in socket.gethostname())[:64] or "host"
    lock.write_text(json.dumps({"host": host, "pid": os.getpid(), "since": 0, "token": "t"}))
    inc = report_json(reports)["incomplete"]
    assert inc["held_shards"] == ["00001"] and inc["missing_shards"] == []
    result = run_cli("report", reports, "--format", "markdown")
    assert "held by another writer" in result.output
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    lock.write_text(json.dumps({"host": host, "pid": dead, "since": 0, "token": "t"}))
    inc = report_json(reports)["incomplete"]
    assert inc["held_shards"] == [] and inc["missing_shards"] == ["00001"]


def test_failed_shard_is_listed_as_failed(partial, tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(partial, reports)
    (reports / "00001.stats.json").write_text(json.dumps({"shard": "00001", "status": "failed", "rows": 0,
                                                          "status_counts": {}, "error": "unreadable"}))
    data = report_json(reports)
    assert data["incomplete"]["failed_shards"] == ["00001"] and data["incomplete"]["missing_shards"] == []
    assert data["complete"] is False


def test_shard_glob_limits_the_assessment(partial):
    data = report_json(partial, "--shard", "00000")
    assert data["complete"] is True and data["incomplete"]["missing_shards"] == []
    cut = report_json(partial, "--shard", "0000[02]")  # a truncated shard alone: samples were lost
    assert cut["complete"] is False and cut["incomplete"]["missing_shards"] == []
    assert [t["shard"] for t in cut["incomplete"]["truncated"]] == ["00002"]
    refused = run_cli("report", partial, "--shard", "0000[02]", "--fail-above", "sexual=1.0")
    assert refused.exit_code == 2 and "1 truncated shard(s) (00002)" in refused.output


def test_filter_summary_lists_incomplete_shards(partial, tmp_path):
    refused = run_cli("filter", partial, "--out", tmp_path / "f")
    assert refused.exit_code == 2 and "00001 (not scanned)" in refused.output
    assert "00002" not in refused.output  # a truncated shard is finished: listed, not refused
    result = run_cli("filter", partial, "--out", tmp_path / "f", "--allow-partial")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["incomplete_shards"] == ["00001 (not scanned)",
                                            f"00002 (truncated: {samples_read(partial)} samples read)"]
    assert summary["complete"] is False and summary["incomplete"]["missing_shards"] == ["00001"]


def test_complete_run_says_so_everywhere(tmp_path, scanned):
    reports = scanned
    data = report_json(reports)
    assert data["complete"] is True and data["incomplete"]["truncated"] == []
    markdown = run_cli("report", reports, "--format", "markdown").output
    assert "complete: all 3 planned shards have a finished report" in markdown and "INCOMPLETE" not in markdown
    assert run_cli("report", reports, "--fail-above", "sexual=1.0").exit_code == 0
    assert run_cli("filter", reports, "--out", tmp_path / "f").exit_code == 0
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["incomplete_shards"] == [] and summary["complete"] is True


def test_ctrl_c_leaves_a_run_that_reports_incomplete(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "out"
    assert interrupt_after_two_shards(demo_shards, out, tiny_clip, tmp_path / "block")[0] == 130
    data = report_json(out)
    assert data["complete"] is False and data["overview"]["shards"] == 2
    assert data["incomplete"]["missing_shards"] == ["block", "00002"]
    assert data["incomplete"]["planned_shards"] == 4 and data["incomplete"]["finished_shards"] == 2
    assert "INCOMPLETE run: 2 of 4 planned shard(s)" in run_cli("report", out).output
    assert run_cli("report", out, "--fail-above", "sexual=1.0").exit_code == 2
