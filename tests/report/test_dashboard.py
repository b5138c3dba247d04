import json
import os
import sys

import pytest

from conftest import hand_summary, run_cli, scan_args


def summary_json(*args):
    result = run_cli("report", *args, "--format", "json", "--top", "75")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("width", [80, 120])
def test_dashboard_fits_the_console_and_shows_every_panel(scanned, width):
    from rich.console import Console

    from vlmaudit.report.dashboard import render
    from vlmaudit.report.summary import summarize

    console = Console(record=True, width=width, force_terminal=True, color_system=None)
    render(summarize(scanned, top=5, hist_concept=None), console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    for expected in ("vlmaudit report", "flagged rate per category", "Public and personal health", "top concepts",
                     "mean img", "p95 img", "modality gap", "agreement", "shard hot spots", "rate across shards",
                     "examples", "thresholds scan (0.80-0.90"):
        assert expected in text, expected
    assert ("p95 cap" in text) == (width >= 110)


def test_rethreshold_matches_hand_computation(scanned):
    import pyarrow.parquet as pq

    from vlmaudit.schema import META_KEY

    summary = summary_json(scanned, "--threshold", "0.5", "--threshold", "hate=0.95")
    meta = json.loads(pq.read_schema(next(scanned.glob("*.parquet"))).metadata[META_KEY])
    thr = [0.95 if c == "hate" else 0.5 for c in meta["concept_categories"]]
    samples, flagged, per_cat, per_concept, _ = hand_summary(scanned, False, {"image": thr, "caption": thr})
    assert summary["overview"]["flagged"] == flagged and summary["overview"]["thresholds"]["source"].startswith("override")
    assert {c["id"]: c["flagged"] for c in summary["categories"]} == per_cat


def test_slicing_by_category_concept_and_shard(scanned):
    full = summary_json(scanned)
    hate = summary_json(scanned, "--category", "hate")
    assert all(c["category"] == "hate" for c in hate["top_concepts"])
    assert hate["overview"]["flagged"] == next(c["flagged"] for c in full["categories"] if c["id"] == "hate")
    one = summary_json(scanned, "--concept", "swastika")
    assert [c["id"] for c in one["top_concepts"]] in (["swastika"], [])
    assert one["histogram"]["concept"] == "swastika" and sum(one["histogram"]["image"]) == 61  # 63 less no image, broken
    assert summary_json(scanned, "--shard", "0000[01]")["overview"]["samples"] == 40


def test_policy_and_compare_and_fail_above(scanned, demo_scan, tmp_path, tiny_clip):
    from conftest import rules_with_threshold

    strict = summary_json(scanned, "--policy", "strict")
    assert strict["overview"]["thresholds"] == {"source": "policy:strict"}
    assert strict["overview"]["flagged"] >= summary_json(scanned)["overview"]["flagged"]
    other = tmp_path / "other"  # another run: one shard, every threshold 0, so every scored sample is flagged
    assert run_cli(*scan_args(demo_scan.shards[:1], other, tiny_clip, "--rules", rules_with_threshold(tmp_path, 0.0))).exit_code == 0
    rates = {c["id"]: c["rate"] for c in summary_json(scanned)["categories"]}
    other_rates = {c["id"]: c["rate"] for c in summary_json(other)["categories"]}
    assert rates != other_rates
    compared = summary_json(scanned, "--compare", other)
    assert {row["id"]: row["other_rate"] for row in compared["compare"]} == pytest.approx(other_rates)
    assert all(row["delta"] == pytest.approx(rates[row["id"]] - other_rates[row["id"]]) for row in compared["compare"])
    rate = next(c["rate"] for c in summary_json(scanned)["categories"] if c["id"] == "violence")
    assert run_cli("report", scanned, "--format", "json", "--fail-above", f"violence={rate / 2}").exit_code == 3
    assert run_cli("report", scanned, "--format", "json", "--fail-above", "violence=1").exit_code == 0
    assert run_cli("report", scanned, "--fail-above", "nope=0.1").exit_code == 2


def test_markdown_and_redaction(scanned):
    markdown = run_cli("report", scanned, "--format", "markdown").output
    assert markdown.startswith("# vlmaudit report") and "| Hate |" in markdown
    redacted = summary_json(scanned, "--redact")
    assert all(i["caption"] is None and i["url"] is None for items in redacted["examples"].values() for i in items)


def test_html_is_self_contained_with_a_blurred_gallery(scanned, tmp_path):
    import re

    out = tmp_path / "r.html"
    assert run_cli("report", scanned, "--format", "html", "--output", out).exit_code == 0
    page = out.read_text()
    assert "<h2>Examples</h2>" in page and page.count("data:image/jpeg;base64,") >= 1
    assert "class='shield blur'" in page and "classList.toggle('blur')" in page
    assert not re.search(r"src\s*=\s*['\"]?(https?:)?//", page) and "<link" not in page
    assert all(h.startswith(("http://", "https://")) for h in re.findall(r"href='([^']*)'", page))
    assert "@import" not in page and "url(" not in page
    unblurred = tmp_path / "n.html"
    run_cli("report", scanned, "--format", "html", "--output", unblurred, "--no-blur", "--redact")
    text = unblurred.read_text()
    assert "shield blur" not in text and "a cat sleeping" not in text and "href=" not in text


def test_dashboard_in_a_real_pseudo_terminal(scanned):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "COLUMNS": "100", "LINES": "60"}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "vlmaudit", "report", str(scanned)], env=env,
                          dimensions=(60, 100), encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    screen = child.before
    assert "vlmaudit report" in screen and "flagged rate per category" in screen
    assert "╭" in screen and "\x1b[" in screen  # rounded panel and colour codes on a real terminal
    assert "█" in screen or "·" in screen
    child.close()
    assert child.exitstatus == 0


def test_stored_flags_path_agrees_with_recomputing_from_scores(scanned):
    from vlmaudit.report.reading import read_report_meta, report_files
    from vlmaudit.report.summary import default_view, summarize

    meta = read_report_meta(report_files(scanned))
    fast = summarize(scanned, top=75)
    view = default_view(meta)
    view.source = "recompute"  # forces reading every score list
    slow = summarize(scanned, top=75, view=view)
    for key in ("categories", "top_concepts", "modality", "top_shards"):
        strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("mean", "p95"))} for r in rows]  # noqa: E731
        assert (strip(fast[key]) if isinstance(fast[key], list) else fast[key]) == (
            strip(slow[key]) if isinstance(slow[key], list) else slow[key])
    assert fast["overview"]["flagged"] == slow["overview"]["flagged"]
    assert fast["examples"] == slow["examples"]
