"""The HTML report (`report --format html`): inline SVG charts, a gallery grouped by category and
blurred until clicked, escaping of every piece of data; opened in a real headless Chromium over the
DevTools protocol (no console error, charts drawn at a non-zero size, nothing fetched from the
network, images blurred before a click and not after), with a screenshot for a person to look at."""

import json
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import draw_review, every_third, label_sheet, run_cli

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="module")
def reports(demo_scan, tmp_path_factory):
    """(the demo scan's reports, a review of them with every row labelled, every third one sexual)."""
    review = draw_review(demo_scan.reports, tmp_path_factory.mktemp("html") / "review")
    label_sheet(review, lambda r: "sexual" if every_third(r) else "safe")
    return demo_scan.reports, review


def summary_of(reports_dir, *args):
    result = run_cli("report", reports_dir, "--json", "--threshold", "0.5", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def hostile_summary(summary: dict) -> dict:
    """The real summary with data an attacker controls: captions, URLs, names."""
    summary = json.loads(json.dumps(summary))
    summary["categories"][0]["name"] = "</svg><script>document.title='pwned'</script>"
    summary["categories"][1].update(rate=None, flagged=None, scored=False)  # a category the model did not score
    summary["top_shards"][0]["shard"] = HOSTILE
    items = [i for v in summary["examples"].values() for i in v]
    kinds = {}
    for item in items:
        kinds.setdefault(item["fired"], item)
    kinds["caption"].update(caption=HOSTILE + " caption only", url="javascript:document.title='pwned'")
    kinds["image"].update(caption="an image flag", url="https://example.invalid/a.jpg?x=1&y='2'")
    kinds["both"].update(url="file:///etc/passwd")
    return summary


def test_concept_histograms_hold_every_score_and_the_thresholds(reports):
    out, _ = reports
    summary = summary_of(out, "--threshold", "sexual=0.7")
    rows = pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()
    meta_concepts = [c["id"] for c in summary["top_concepts"]]
    assert [h["id"] for h in summary["concept_histograms"]] == meta_concepts
    categories = {c["id"]: c["category"] for c in summary["top_concepts"]}
    for entry in summary["concept_histograms"]:
        assert entry["bins"] == 20 and len(entry["image"]) == len(entry["caption"]) == 20
        assert sum(entry["image"]) == sum(1 for r in rows if r["image_scores"])  # 60 rows: every row counts
        assert entry["threshold_image"] == entry["threshold_caption"] == (0.7 if categories[entry["id"]] == "sexual" else 0.5)


def test_page_escapes_data_and_links_only_http_urls(reports):
    from vlmaudit.report.html_page import to_html

    out, _ = reports
    summary = hostile_summary(summary_of(out))
    page = to_html(summary, {}, blur=True, redact=False)
    assert page.count("<script") == 1 and "document.title='pwned'</script>" not in page
    assert HOSTILE not in page and html_escaped(HOSTILE) in page
    hrefs = re.findall(r"href='([^']*)'", page)
    assert "https://example.invalid/a.jpg?x=1&amp;y=&#x27;2&#x27;" in hrefs
    assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs
    assert "javascript:document.title" in page and "file:///etc/passwd" in page  # shown as text, not links
    assert "n/a - not scored" in page
    caption_card = re.search(r"<figure class='card' data-fired='caption'>.*?</figure>", page).group(0)
    assert "<img" not in caption_card and "caption only" in caption_card and "class='shield blur'" in caption_card
    assert not re.search(r"\bsrc=['\"]?(https?:)?//", page) and "<link" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the browser itself refuses any network load


def test_redacted_page_shows_no_caption_or_url(reports):
    from vlmaudit.report.html_page import to_html

    out, _ = reports
    page = to_html(hostile_summary(summary_of(out)), {}, blur=False, redact=True)  # captions, URLs still there
    assert html_escaped(HOSTILE + " caption only") not in page and "an image flag" not in page and "example.invalid" not in page
    assert "href=" not in page and "(caption redacted)" in page
    assert "shield blur" not in page


def test_empty_report_still_renders_every_chart():
    from vlmaudit.report.html_page import to_html

    summary = {"overview": {"samples": 0, "failed": 0, "failed_rate": 0.0, "flagged": 0, "flagged_rate": 0.0,
                            "shards": 0, "model": None, "backend": None, "taxonomy_version": None,
                            "thresholds": {"source": "scan"}},
               "categories": [], "top_concepts": [], "modality": {"both": 0, "image_only": 0, "caption_only": 0,
                                                                  "agreement": 0.0},
               "top_shards": [], "shard_rates": [], "examples": {}}
    page = to_html(summary, {}, blur=True, redact=False)
    assert page.count("<svg") == 3 and "nothing flagged" in page and "no histogram" in page


def html_escaped(text):
    import html

    return html.escape(text, quote=True)


def artifact_dirs(tmp_path):
    dirs = [tmp_path]
    if os.environ.get("VLMAUDIT_TEST_ARTIFACTS"):
        dirs.append(os.environ["VLMAUDIT_TEST_ARTIFACTS"])
    return dirs


SIZES = "Array.from(document.querySelectorAll('svg')).map(s => {const r = s.getBoundingClientRect(); return [r.width, r.height]})"
FILTERS = "Array.from(document.querySelectorAll('.shield')).map(e => getComputedStyle(e).filter)"


def test_report_in_a_real_browser(reports, tmp_path):
    from pathlib import Path

    from cdp import Browser, chromium_or_skip

    from vlmaudit.report.html_page import to_html

    binary = chromium_or_skip()
    out, labels = reports
    page = tmp_path / "report.html"
    result = run_cli("report", out, "--threshold", "0.5", "--labels", labels, "--format", "html", "--output", page)
    assert result.exit_code == 0, result.output
    hostile = tmp_path / "hostile.html"
    hostile.write_text(to_html(hostile_summary(summary_of(out)), {}, blur=True, redact=False), encoding="utf-8")
    browser = Browser(binary, tmp_path / "profile")
    try:
        browser.open(page)
        sizes = browser.evaluate(SIZES)
        assert len(sizes) >= 5 and all(w > 0 and h > 0 for w, h in sizes), sizes  # + histograms, estimates
        assert browser.evaluate("document.querySelectorAll('svg .threshold').length") >= 2
        before = browser.evaluate(FILTERS)
        assert before and all(f.startswith("blur(") for f in before), before
        kinds = browser.evaluate("Array.from(document.querySelectorAll('.card')).map(c => c.dataset.fired)")
        assert set(kinds) == {"image", "caption", "both"}
        image = browser.evaluate("Array.from(document.querySelectorAll('.shield')).findIndex(e => e.tagName == 'IMG')")
        caption = browser.evaluate("Array.from(document.querySelectorAll('.shield')).findIndex(e => e.tagName == 'DIV')")
        browser.click(".shield", image)
        browser.click(".shield", caption)
        after = browser.evaluate(FILTERS)
        assert after[image] == after[caption] == "none" and sum(f == "none" for f in after) == 2, after
        assert browser.evaluate("document.querySelectorAll('svg circle').length") >= 1  # an estimate with its interval
        browser.click("#reveal")  # reveal all: whatever was still blurred
        assert set(browser.evaluate(FILTERS)) == {"none"}
        browser.click("#reveal")
        assert all(f.startswith("blur(") for f in browser.evaluate(FILTERS))
        browser.click(".shield", image)
        browser.evaluate("window.scrollTo(0, 0)")
        shot = browser.screenshot(tmp_path / "report.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for folder in artifact_dirs(tmp_path)[1:]:
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(folder) / "html-report.png")

        browser.open(hostile)
        assert browser.evaluate("document.title") == "vlmaudit report"  # no injected script or handler ran
        assert browser.evaluate("document.querySelectorAll('script').length") == 1
        protocols = browser.evaluate("Array.from(document.links).map(a => a.protocol)")
        assert protocols and set(protocols) <= {"https:", "http:"}, protocols
        assert HOSTILE in browser.evaluate("document.body.textContent")
        assert all(w > 0 and h > 0 for w, h in browser.evaluate(SIZES))
        assert browser.errors == [], browser.errors
        assert all(url.startswith(("file:", "data:")) for url in browser.requests), browser.requests
    finally:
        browser.close()


def test_a_missing_chromium_skips_only_when_not_required(monkeypatch, tmp_path):
    import cdp

    monkeypatch.setattr(cdp.shutil, "which", lambda name: None)
    monkeypatch.setattr(cdp, "DEBIAN_CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("VLMAUDIT_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        cdp.chromium_or_skip()
    monkeypatch.setenv("VLMAUDIT_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="VLMAUDIT_REQUIRE_CHROMIUM"):
        cdp.chromium_or_skip()
