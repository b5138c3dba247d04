"""What a reader sees, rendered from one small hand-built summary dict with known numbers: every
column of every dashboard table (plain and rich), the HTML page's sections and charts, the
Markdown lines, the audit card's fields. Fast and exact: no scan, no report directory."""

import html
import io
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

LONG_SHARD = "shard-" + "x" * 60  # longer than the shard column's 40 characters
LONG_CATEGORY = "Category " + "y" * 70  # longer than the category column's 60 characters


def summary() -> dict:
    """Two shards, two categories (the second not scored by the model), two concepts."""
    return {
        "overview": {"samples": 40, "failed": 3, "failed_rate": 0.075, "flagged": 7, "flagged_rate": 0.175,
                     "shards": 2, "model": "tiny-clip", "backend": "clip", "taxonomy_version": "tax-1",
                     "thresholds": {"source": "scan", "min": 0.2, "max": 0.4, "median": 0.3},
                     "scan_seconds": 2.0, "samples_per_s": 20.0},
        "categories": [
            {"id": "violence", "name": "Violence", "flagged": 5, "rate": 0.125, "both": 2, "image_only": 2,
             "caption_only": 1, "agreement": 0.4},
            {"id": "hate", "name": LONG_CATEGORY, "flagged": None, "rate": None, "both": None, "image_only": None,
             "caption_only": None, "agreement": None, "scored": False, "na": "n/a - not scored by tiny-clip"},
        ],
        "top_concepts": [
            {"id": "gore", "name": "Gore", "category": "violence", "flagged": 4, "rate": 0.1, "image": 3,
             "caption": 2, "mean_image": 0.25, "p95_image": 0.5, "mean_caption": 0.125, "p95_caption": None},
        ],
        "modality": {"both": 2, "image_only": 4, "caption_only": 1, "agreement": 2 / 7},
        "top_shards": [{"shard": LONG_SHARD, "samples": 20, "flagged": 5, "rate": 0.25},
                       {"shard": "s<1>", "samples": 20, "flagged": 2, "rate": 0.1}],
        "shard_rates": [0.25, 0.1],
        "failed_shards": ["f1", "f<2>"],
        "truncated_shards": [f"t{k:02d}" for k in range(21)],
        "examples": {},
        "histogram": {"concept": "gore", "bins": 4, "image": [7, 1234, 0, 5], "caption": [3, 0, 12, 0]},
        "concept_histograms": [{"id": "gore", "name": "Gore", "category": "violence", "bins": 4,
                                "image": [7, 1234, 0, 5], "caption": [3, 0, 12, 0],
                                "threshold_image": 0.5, "threshold_caption": 0.75}],
        "highest_scores": [{"key": "k-1", "shard": LONG_SHARD, "concept": "Gore", "modality": "caption",
                            "score": 0.4321}],
        "compare": [{"name": "Violence", "rate": 0.125, "other_rate": 0.05, "delta": 0.075},
                    {"name": "Hate", "rate": None, "na": "n/a - not scored by tiny-clip", "other_rate": 0.5,
                     "delta": None}],
        "compare_dir": "other-run",
        "complete": False,
        "incomplete": {"planned_shards": 3, "finished_shards": 2, "missing_shards": ["s2"], "failed_shards": [],
                       "held_shards": [], "truncated": [], "failed_by_status": {"decode_error": 2, "no_image": 1}},
        "known_matches": {"banks": {"ncii": 1, "csam-hashes": 2}, "samples": 2, "withheld_examples": 0},
    }


def shown(item, plain: bool, width: int = 200) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), no_color=plain, color_system=None)
    console.print(item)
    return console.export_text()


def table(part, plain: bool, width: int = 200, data: dict | None = None) -> list[list[str]]:
    """A dashboard table as its title line and then one list of cells per line (plain: split at the
    ASCII box's bars; rich: at runs of 2+ spaces, so cells must hold no double spaces)."""
    text = shown(part(data or summary(), width, plain), plain, width)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    rows = []
    for line in lines[1:]:
        if set(line) <= set("+-| ━─╸╺"):
            continue  # a rule
        cells = line.strip("| ").split("|") if plain else re.split(r"\s{2,}", line.strip())
        rows.append([cell.strip() for cell in cells if cell.strip()])  # unnamed header cells left out
    return [[lines[0]]] + rows


@pytest.mark.parametrize("plain", [True, False])
def test_every_dashboard_table_shows_its_columns_and_values(plain):
    from vlmaudit.report import dashboard

    more = "..." if plain else "…"
    shard = LONG_SHARD[:40 - len(more)] + more
    assert table(dashboard.highest, plain) == [
        ["highest scores (nothing reached the thresholds)"],
        ["key", "shard", "concept", "modality", "score"],
        ["k-1", shard, "Gore", "caption", "0.432"]]
    assert table(dashboard.shards, plain)[:4] == [
        ["shard hot spots"], ["shard", "samples", "flagged", "rate"],
        [shard, "20", "5", "25.00%"], ["s<1>", "20", "2", "10.00%"]]
    assert table(dashboard.compare, plain) == [
        ["compared with other-run"], ["category", "this", "other", "delta"],
        ["Violence", "12.50%", "5.00%", "+7.50 pts"], ["Hate", "n/a - not scored by tiny-clip", "50.00%", "n/a"]]
    category = LONG_CATEGORY[:60 - len(more)] + more
    gap = table(dashboard.modality_gap, plain)
    assert gap[:5] == [["modality gap: image vs caption (overall agreement 28.57% of flagged)"],
                       ["category", "both", "image only", "caption only", "agreement"],
                       ["Violence", "2", "2", "1", "40.00%"], [category, "n/a", "n/a", "n/a", "n/a"],
                       ["all", "2", "4", "1", "28.57%"]]
    rates = table(dashboard.categories, plain)  # bar 40 characters wide
    assert rates[:2] == [["flagged rate per category"], ["category", "rate", "samples"]]
    assert rates[2] == ["Violence", ("#" if plain else "█") * 40, "12.50%", "5"]
    assert rates[3] == [category, "n/a - not scored", "n/a", "n/a"]
    wide = table(dashboard.concepts, plain)
    assert wide == [["top concepts"], ["concept", "category", "samples", "rate", "img", "cap", "mean img", "p95 img",
                                       "mean cap", "p95 cap"],
                    ["Gore", "violence", "4", "10.00%", "3", "2", "0.250", "0.500", "0.125", "-"]]
    narrow = table(dashboard.concepts, plain, width=100)  # no category, no caption means
    assert narrow[1:] == [["concept", "samples", "rate", "img", "cap", "mean img", "p95 img"],
                          ["Gore", "4", "10.00%", "3", "2", "0.250", "0.500"]]


@pytest.mark.parametrize("plain", [True, False])
def test_dashboard_histogram_bars_scale_with_the_console(plain):
    from vlmaudit.report import dashboard

    full, empty = ("#", ".") if plain else ("█", "·")
    for width, bar in ((200, 20), (60, 10), (50, 6)):
        rows = table(dashboard.histogram, plain, width=width)
        assert rows[0] == ["score histogram: gore"] and rows[1] == ["score", "image", "caption"]
        assert rows[3] == ["0.25-0.50", "1,234", full * bar, "0", empty * bar]
        assert rows[2][0] == "0.00-0.25" and rows[4][-1] == full * round(bar * 12 / 1234) + empty * (bar - round(bar * 12 / 1234))
    text = shown(dashboard.histogram(summary(), 200, plain), plain)
    counts = [line for line in text.splitlines() if line.lstrip("| ").startswith("0.")]
    assert len({line.index("1,234") + 5 for line in counts if "1,234" in line}
               | {line.index(" 7 ") + 2 for line in counts if " 7 " in line}) == 1  # image counts right-aligned


def test_plain_dashboard_is_ascii_and_the_rich_one_draws_boxes():
    from rich.console import Console

    from vlmaudit.report.dashboard import render

    def rendered(plain):
        console = Console(width=120, record=True, file=io.StringIO(), force_terminal=not plain,
                          no_color=plain, color_system=None if plain else "standard")
        render(summary(), console)
        return console.export_text()

    plain, rich = rendered(True), rendered(False)
    assert plain.isascii(), sorted({c for c in plain if not c.isascii()})
    assert "━" in rich and "…" in rich and "+--" not in rich
    for text in (plain, rich):
        for title in ("highest scores", "shard hot spots", "compared with other-run", "top concepts",
                      "score histogram: gore", "flagged rate per category", "modality gap"):
            assert re.search(rf"^{re.escape(title)}", text, re.M), title  # titles flush left
        assert "known-content matches: 2 samples (csam-hashes: 2, ncii: 1)" in text
        assert "failed samples by status: decode_error 2, no_image 1" in text


def test_known_content_lines_in_every_medium():
    from vlmaudit.report import known_content
    from vlmaudit.report.safetext import markdown_text

    data = summary()
    line = "known-content matches: 2 samples (csam-hashes: 2, ncii: 1); matched images are never shown"
    assert known_content.lines(data) == [line]
    assert known_content.dashboard_item(data, 80, True).plain == line
    assert known_content.markdown_lines(data) == [f"- {markdown_text(line)}", ""]
    data["known_matches"] = {"banks": {}, "samples": 0, "withheld_examples": 0}
    assert known_content.lines(data) == ["known-content matches: 0 samples (none); matched images are never shown"]
    data["known_matches"] = None  # not checked: nothing said
    assert known_content.lines(data) == known_content.markdown_lines(data) == []
    assert known_content.dashboard_item(data, 80, True) is None


def test_completeness_lines_name_failed_samples_by_status_escaped():
    from vlmaudit.report import completeness

    data = summary()
    data["incomplete"]["failed_by_status"] = {"decode_error": 2, "bad<status>": 1_000}
    assert completeness.lines(data) == [
        "INCOMPLETE run: 1 of 3 planned shard(s) have no finished report, 0 truncated; the figures cover the "
        "finished shards only", "not scanned (not started or interrupted): s2",
        "failed samples by status: decode_error 2, bad<status> 1,000"]
    assert completeness.lines(data, html.escape)[-1] == "failed samples by status: decode_error 2, bad&lt;status&gt; 1,000"
    data["incomplete"]["failed_by_status"] = {}
    assert not any(line.startswith("failed samples") for line in completeness.lines(data))


def page_of(data: dict) -> str:
    from vlmaudit.report.html_page import to_html

    return to_html(data, {}, blur=True, redact=False)


def svgs(page: str) -> dict[str, ET.Element]:
    """Every inline SVG chart of the page by its title."""
    found = [ET.fromstring(s) for s in re.findall(r"<svg class='chart'.*?</svg>", page, re.S)]
    return {svg.find("{*}title").text: svg for svg in found}


def test_html_overview_lists_broken_shards_escaped_and_cut_at_20():
    page = page_of(summary())
    assert "<p>failed shards (2): f1, f&lt;2&gt;</p>" in page
    shown_names = ", ".join(f"t{k:02d}" for k in range(20))
    assert f"<p>truncated shards (21): {shown_names} &hellip;</p>" in page
    assert "known-content matches: 2 samples" in page and "decode_error 2, no_image 1" in page


def test_html_shard_table_and_rate_chart():
    page = page_of(summary())
    assert ("<h3>Hot spots</h3><table><tr><th>shard</th><th>samples</th><th>flagged</th><th>rate</th></tr>"
            f"<tr><td>{LONG_SHARD}</td><td>20</td><td>5</td><td>25.00%</td></tr>"
            "<tr><td>s&lt;1&gt;</td><td>20</td><td>2</td><td>10.00%</td></tr></table>") in page
    chart = svgs(page)["flagged rate across shards"]
    axis_x = int(chart.find("{*}line").get("x1"))
    bars = chart.findall("{*}rect")
    assert [b.find("{*}title").text for b in bars] == ["bucket 1 of 2: 25.00%", "bucket 2 of 2: 10.00%"]
    spans = [(float(b.get("x")), float(b.get("x")) + float(b.get("width"))) for b in bars]
    assert axis_x < spans[0][0] < spans[0][1] < spans[1][0] < spans[1][1] <= float(chart.get("width"))
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] / heights[0] == pytest.approx(0.4)
    labels = [t.text for t in chart.findall("{*}text")]
    assert labels == ["25.00%", "0", "2 shards in name order"]


def test_html_category_chart_and_table_say_na_for_an_unscored_category():
    data = summary()
    data["categories"].append({"id": "drugs", "name": "Drugs", "flagged": 0, "rate": None, "both": 0,
                               "image_only": 0, "caption_only": 0, "agreement": None})  # scored flag absent
    page = page_of(data)
    chart = svgs(page)["flagged rate per category"]
    labels = [(t.text, t.get("fill")) for t in chart.findall("{*}text")]
    assert labels == [("Violence", "#222"), ("12.50% (5)", "#222"), (LONG_CATEGORY[:27] + "\u2026", "#222"),
                      ("n/a - not scored by tiny-clip", "#777"), ("Drugs", "#222"), ("n/a - not scored", "#777")]
    tips = [r.find("{*}title").text for r in chart.findall("{*}rect")]
    assert tips == ["Violence: both 2", "Violence: image only 2", "Violence: caption only 1"]
    assert "<tr><td>Violence</td><td>5</td><td>12.50%</td><td>2</td><td>2</td><td>1</td></tr>" in page
    assert (f"<tr><td>{LONG_CATEGORY}</td><td>n/a</td><td>n/a - not scored by tiny-clip</td><td>n/a</td>"
            "<td>n/a</td><td>n/a</td></tr>") in page


def test_html_split_bar_with_and_without_flags():
    page = page_of(summary())
    bar = svgs(page)["flagged samples by modality"]
    assert [r.find("{*}title").text for r in bar.findall("{*}rect")] == [
        "image and caption: 2", "image only: 4", "caption only: 1"]
    data = summary()
    data["modality"] = {"both": 0, "image_only": 0, "caption_only": 0, "agreement": None}
    empty = svgs(page_of(data))["flagged samples by modality"]
    text = empty.find("{*}text")
    assert (text.text, text.get("text-anchor"), text.get("fill")) == ("nothing flagged", "middle", "#777")


def test_html_concept_histogram_has_both_series_with_tooltips_and_thresholds():
    chart = svgs(page_of(summary()))["score histogram of Gore"]
    tips = [r.find("{*}title").text for r in chart.findall("{*}rect")]
    assert tips == ["image scores 0.00-0.25: 7", "caption scores 0.00-0.25: 3",
                    "image scores 0.25-0.50: 1,234", "caption scores 0.25-0.50: 0",
                    "image scores 0.50-0.75: 0", "caption scores 0.50-0.75: 12",
                    "image scores 0.75-1.00: 5", "caption scores 0.75-1.00: 0"]
    fills = {r.find("{*}title").text.split()[0]: r.get("fill") for r in chart.findall("{*}rect")}
    assert fills == {"image": "#2e6fb7", "caption": "#e08a1e"}
    texts = [(t.text, t.get("text-anchor")) for t in chart.findall("{*}text")]
    assert texts == [("0", "middle"), ("1", "middle"), ("1,234", "end")]
    lines = [(line.find("{*}title").text, line.get("stroke-dasharray")) for line in chart.findall("{*}line[@class='threshold']")]
    assert lines == [("image threshold 0.500", ""), ("caption threshold 0.750", "4 3")]
    data = summary()
    data["concept_histograms"][0]["caption"] = None  # caption not scored: no caption bars, no caption line
    chart = svgs(page_of(data))["score histogram of Gore"]
    assert all(r.find("{*}title").text.startswith("image") for r in chart.findall("{*}rect"))
    assert len(chart.findall("{*}line[@class='threshold']")) == 1


def estimates() -> dict:
    ok = {"status": "ok", "estimate": 0.12, "low": 0.05, "high": 0.2, "positives": 3, "labels": 25}
    few = {"status": "too_few_labels", "estimate": None, "low": None, "high": None, "positives": 0, "labels": 0}
    return {"categories": [{"id": "violence", "name": "Vio<lence>", "prevalence": ok, "precision": few, "recall": ok}],
            "overall": {"id": "any", "name": "any", "prevalence": few, "precision": ok, "recall": few},
            "labelled": 25, "drawn": 30, "population": 40, "unscored": 2, "method": "stratified",
            "strata": [{"id": "s1", "rows": 40, "drawn": 30, "labelled": 25}]}


def test_estimates_table_shows_intervals_and_too_few_labels():
    from html.parser import HTMLParser

    from vlmaudit.report.estimates_html import interval, to_html_section

    assert interval(estimates()["categories"][0]["prevalence"]) == "12.00% [5.00%, 20.00%]"
    assert interval(estimates()["overall"]["prevalence"]) == "too few labels"

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Cells()
    parser.feed(to_html_section(estimates()))
    assert parser.rows[1:3] == [
        ["Vio<lence>", "12.00% [5.00%, 20.00%]", "3/25", "too few labels", "0/0", "12.00% [5.00%, 20.00%]", "3/25"],
        ["any", "too few labels", "0/0", "12.00% [5.00%, 20.00%]", "3/25", "too few labels", "0/0"]]
    assert parser.rows[-1] == ["s1", "40", "30", "25"]


def test_card_paths_default_to_audit_card_here():
    from pathlib import Path

    from vlmaudit.report.card import card_paths

    assert card_paths(None) == (Path("audit-card.md"), Path("audit-card.json"))
    assert card_paths(Path("out/my.card.json")) == (Path("out/my.card.md"), Path("out/my.card.json"))
    assert card_paths(Path("out/card")) == (Path("out/card.md"), Path("out/card.json"))


@pytest.mark.parametrize("info, expected", [
    ({"weights_sha256": "aa", "weights_digest": "bb", "revision": "local-cc"}, "aa"),
    ({"weights_digest": "bb", "revision": "local-cc"}, "bb"),
    ({"revision": "local-cc"}, "local-cc"), ({"revision": "head-dd"}, "head-dd"), ({"revision": "main"}, None)])
def test_card_model_weights_digest(info, expected):
    from vlmaudit.report.card import _model

    model = _model({"model": {"backend": "clip", "model": "m", "revision": "old"}}, {"model_info": info})
    assert model == {"backend": "clip", "model": "m", "revision": info["revision"], "weights_digest": expected}


def test_card_scores_only_the_categories_the_model_covers():
    from vlmaudit.report.card import category_scored

    def cover(*categories, modalities=("image", "caption")):
        return {"model": "m", "level": "category", "categories": list(categories), "concepts": [],
                "modalities": list(modalities)}

    run = {"coverage": cover("violence")}
    assert category_scored(run, {}, "violence") and not category_scored(run, {}, "hate")
    assert category_scored({}, {"coverage": cover("hate", modalities=["caption"])}, "hate")  # the footer's, one modality
    assert category_scored({}, {"coverage": cover("hate", modalities=["image"])}, "hate")
    assert not category_scored({}, {"coverage": cover("hate")}, "violence")
    assert not category_scored({}, {"coverage": cover("hate", modalities=[])}, "hate")
    assert category_scored({}, {}, "anything")  # no coverage recorded: everything scored


def card() -> dict:
    return {"written_at": "2026-01-01T00:00:00Z", "written_by": "vlmaudit 9", "vlmaudit_version": "9",
            "audited": {"shards": 2, "shard_list_sha256": "ab" * 32, "planned_shards": 3, "samples": 40,
                        "failed_samples": 3, "complete": False, "incomplete": summary()["incomplete"]},
            "model": {"backend": "clip", "model": "tiny_clip", "revision": "r1", "weights_digest": None},
            "taxonomy": {"version": "tax_1", "fingerprint": "fp`1"},
            "thresholds": {"source": "scan", "sha256": "cd" * 32},
            "policy": {"name": "strict_one", "fingerprint": "pf1"}, "options": {"category": None},
            "results": [{"id": "any", "name": "any category", "scored": True, "flagged": 7, "rate": 0.175,
                         "estimate": None}],
            "estimate": None, "known_matches": None, "files": {}}


def test_card_markdown_names_taxonomy_and_policy():
    from vlmaudit.report.card import to_markdown

    lines = to_markdown(card(), "c.json").splitlines()
    assert "- taxonomy tax\\_1, fingerprint `fp'1`" in lines
    assert "- policy strict\\_one, fingerprint `pf1`" in lines
    assert "- model tiny\\_clip (clip), revision `r1`, weights digest not recorded" in lines
    no_policy = card()
    no_policy["policy"] = None
    assert not any(line.startswith("- policy") for line in to_markdown(no_policy, "c.json").splitlines())


def test_card_records_the_policy_it_counted_with(scanned, tmp_path):
    import json

    from conftest import run_cli

    import hashlib

    from vlmaudit.rulebook.load import find_rule_file

    result = run_cli("report", scanned, "--format", "card", "--out", tmp_path / "card", "--policy", "strict")
    assert result.exit_code == 0, result.output
    card_json = json.loads((tmp_path / "card.json").read_text())
    fingerprint = hashlib.sha256(find_rule_file("policies", "strict").read_bytes()).hexdigest()[:16]
    assert card_json["policy"] == {"name": "strict", "fingerprint": fingerprint}
    assert f"- policy strict, fingerprint `{fingerprint}`" in (tmp_path / "card.md").read_text()
    without = run_cli("report", scanned, "--format", "card", "--out", tmp_path / "plain")
    assert without.exit_code == 0 and json.loads((tmp_path / "plain.json").read_text())["policy"] is None


def with_example(data: dict) -> dict:
    data["examples"] = {"gore": [{"shard": "s<1>", "key": "key-" + "k" * 30, "url": "http://e.invalid/a",
                                  "caption": "a  red\tcar", "score": 0.91234, "modality": "image", "fired": "both"}]}
    return data


PLAIN_DASHBOARD = """
+------------------------------------------------------- vlmaudit report --------------------------------------------------------+
| samples 40  failed 3 (7.50%)  flagged 7 (17.50%)                                                                               |
| model tiny-clip (clip)                                                                                                         |
| taxonomy tax-1  shards 2                                                                                                       |
| thresholds scan (0.20-0.40, median 0.30)                                                                                       |
| scan time 2.0 s  throughput 20.0 samples/s                                                                                     |
| FAILED shards: f1, f<2>                                                                                                        |
| truncated shards: t00, t01, t02, t03, t04, t05, t06, t07, t08, t09                                                             |
+--------------------------------------------------------------------------------------------------------------------------------+
+---------------------------------------------------------- INCOMPLETE ----------------------------------------------------------+
| INCOMPLETE run: 1 of 3 planned shard(s) have no finished report, 0 truncated; the figures cover the finished shards only       |
| not scanned (not started or interrupted): s2                                                                                   |
| failed samples by status: decode_error 2, no_image 1                                                                           |
+--------------------------------------------------------------------------------------------------------------------------------+
known-content matches: 2 samples (csam-hashes: 2, ncii: 1); matched images are never shown
flagged rate per category
+--------------------------------------------------------------------------------------------------------------------------+
|category                                                     |                                          |   rate | samples|
|-------------------------------------------------------------+------------------------------------------+--------+--------|
|Violence                                                     | ######################################## | 12.50% |       5|
|Category yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy... | n/a - not scored                         |    n/a |     n/a|
+--------------------------------------------------------------------------------------------------------------------------+
top concepts
+-------------------------------------------------------------------------------------------+
|concept | category | samples |   rate | img | cap | mean img | p95 img | mean cap | p95 cap|
|--------+----------+---------+--------+-----+-----+----------+---------+----------+--------|
|Gore    | violence |       4 | 10.00% |   3 |   2 |    0.250 |   0.500 |    0.125 |       -|
+-------------------------------------------------------------------------------------------+
highest scores (nothing reached the thresholds)
+---------------------------------------------------------------------------+
|key | shard                                    | concept | modality | score|
|----+------------------------------------------+---------+----------+------|
|k-1 | shard-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... | Gore    | caption  | 0.432|
+---------------------------------------------------------------------------+
modality gap: image vs caption (overall agreement 28.57% of flagged)
+-----------------------------------------------------------------------------------------------------------+
|category                                                     | both | image only | caption only | agreement|
|-------------------------------------------------------------+------+------------+--------------+----------|
|Violence                                                     |    2 |          2 |            1 |    40.00%|
|Category yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy... |  n/a |        n/a |          n/a |       n/a|
|all                                                          |    2 |          4 |            1 |    28.57%|
+-----------------------------------------------------------------------------------------------------------+
shard hot spots
+---------------------------------------------------------------------+
|shard                                    | samples | flagged |   rate|
|-----------------------------------------+---------+---------+-------|
|shard-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... |      20 |       5 | 25.00%|
|s<1>                                     |      20 |       2 | 10.00%|
+---------------------------------------------------------------------+
                  rate across shards (name order): #:
score histogram: gore
+-------------------------------------------------------------------------+
|score     | image |                      | caption |                     |
|----------+-------+----------------------+---------+---------------------|
|0.00-0.25 |     7 | .................... |       3 | ....................|
|0.25-0.50 | 1,234 | #################### |       0 | ....................|
|0.50-0.75 |     0 | .................... |      12 | ....................|
|0.75-1.00 |     5 | .................... |       0 | ....................|
+-------------------------------------------------------------------------+
compared with other-run
+-------------------------------------------------------------+
|category |                          this |  other |     delta|
|---------+-------------------------------+--------+----------|
|Violence |                        12.50% |  5.00% | +7.50 pts|
|Hate     | n/a - not scored by tiny-clip | 50.00% |       n/a|
+-------------------------------------------------------------+
examples
+------------------------------------------------------------+
|concept | fired | score | key / shard: caption url          |
|--------+-------+-------+-----------------------------------|
|gore    | both  | 0.912 | key-kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk|
|        |       |       | s<1>: a red car http://e.invalid/a|
+------------------------------------------------------------+
"""


def test_plain_dashboard_as_the_reader_sees_it():
    """The whole dashboard of the hand-built summary, off a terminal (ASCII boxes, 130 columns): every
    panel and table, their order, titles flush left, numbers right-aligned, long names shortened."""
    from rich.console import Console

    from vlmaudit.report.dashboard import render

    console = Console(width=130, record=True, file=io.StringIO(), no_color=True, color_system=None)
    render(with_example(summary()), console)
    assert [line.rstrip() for line in console.export_text().splitlines()] == PLAIN_DASHBOARD.strip("\n").splitlines()


@pytest.mark.parametrize("width", [40, 60])
def test_narrow_plain_dashboard_folds_and_stays_ascii(width):
    from rich.console import Console

    from vlmaudit.report.dashboard import render

    console = Console(width=width, record=True, file=io.StringIO(), no_color=True, color_system=None)
    render(with_example(summary()), console)
    text = console.export_text()
    assert text.isascii() and max(len(line) for line in text.splitlines()) <= width
    assert "0.912" in text and "k" * 10 in text  # the example's key folds, never cut


def test_dashboard_without_flags_or_shards():
    from vlmaudit.report import dashboard

    data = summary()
    data["top_shards"], data["top_concepts"] = [], []
    assert dashboard.shards(data, 80, True).plain == "shard hot spots: nothing reached the thresholds"
    assert dashboard.concepts(data, 80, True).plain == "top concepts: nothing reached the thresholds"
    data["overview"]["shards"] = 0
    assert dashboard.shards(data, 80, True).plain == "shard hot spots: no shards"
    for part in (dashboard.highest, dashboard.histogram, dashboard.compare):
        data.pop({"highest": "highest_scores"}.get(part.__name__, part.__name__))
        assert part(data, 80, True) is None
    assert dashboard.sparkline([0.0, 0.5, 1.0], plain=True) == "_:#" and dashboard.sparkline([0, 0]) == "▁▁"


def test_completeness_lines_for_every_state():
    from vlmaudit.report import completeness

    names = [f"n{k:02d}" for k in range(12)]
    state = {"complete": False, "incomplete": {
        "planned_shards": 0, "missing_shards": names, "held_shards": ["h<1>"], "failed_shards": ["f1"],
        "truncated": [{"shard": "t<1>", "samples_read": 1234}], "failed_by_status": {}}}
    shown_names = ", ".join(names[:10])
    assert completeness.lines(state, html.escape) == [
        "INCOMPLETE run: 14 shard(s) have no finished report, 1 truncated; the figures cover the finished shards only",
        f"not scanned (not started or interrupted): {shown_names} and 2 more",
        "held by another writer (a scan still running?): h&lt;1&gt;", "failed (no samples read): f1",
        "truncated (samples after the cut are lost): t&lt;1&gt; (1,234 samples read)"]
    assert completeness.html_section(state).startswith("<h2>Completeness</h2><ul class='incomplete'><li>INCOMPLETE run")
    assert completeness.dashboard_item(state, 80, True).title == "INCOMPLETE"
    done = {"complete": True, "incomplete": {"planned_shards": 1200, "missing_shards": [], "held_shards": [],
                                             "failed_shards": [], "truncated": [], "failed_by_status": {}}}
    assert completeness.lines(done) == ["complete: all 1,200 planned shards have a finished report"]
    assert completeness.dashboard_item(done, 80, True).title == "complete"
    assert completeness.html_section(done) == ("<h2>Completeness</h2><ul class='complete'><li>complete: all 1,200 "
                                               "planned shards have a finished report</li></ul>")
    del done["incomplete"]["planned_shards"]
    assert completeness.lines(done) == ["complete: every shard with a report finished (no plan recorded in run.json)"]
    assert completeness.markdown_lines(done) == ["## Completeness", "", "- " + completeness.lines(done)[0], ""]
    assert completeness.lines({}) == completeness.markdown_lines({}) == [] and completeness.html_section({}) == ""
    assert completeness.dashboard_item({}, 80, True) is None


def inside(svg: ET.Element) -> bool:
    """Every rect and text of the chart lies inside its view box."""
    width, height = float(svg.get("width")), float(svg.get("height"))
    rects = all(0 <= float(r.get("x")) and float(r.get("x")) + float(r.get("width")) <= width + 0.05
                and 0 <= float(r.get("y")) and float(r.get("y")) + float(r.get("height")) <= height
                for r in svg.findall("{*}rect"))
    return rects and all(0 <= float(t.get("x")) <= width and 0 < float(t.get("y")) <= height for t in svg.findall("{*}text"))


def test_every_chart_is_labelled_and_drawn_inside_its_box():
    data = with_example(summary())
    data["estimates"] = estimates()
    data["concept_histograms"][0]["name"] = "Gore's <b>"
    page = page_of(data)
    charts = svgs(page)
    assert set(charts) == {"flagged rate per category", "flagged samples by modality", "flagged rate across shards",
                           "score histogram of Gore's <b>", "prevalence with 95 % intervals"}
    for title, svg in charts.items():
        assert svg.get("aria-label") == title and svg.get("role") == "img"
        assert svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"
        assert inside(svg), title
        assert all(t.get("text-anchor") in ("start", "middle", "end") for t in svg.findall("{*}text"))
        assert all(r.find("{*}title") is None or r.find("{*}title").text for r in svg.findall("{*}rect"))


def test_category_chart_rows_and_bar_lengths():
    from vlmaudit.report.html_charts import category_bars

    cats = [{"id": "a", "name": "A", "flagged": 4, "rate": 0.2, "both": 1, "image_only": 3, "caption_only": 0},
            {"id": "b", "name": "B", "flagged": 2, "rate": 0.1, "both": 0, "image_only": 0, "caption_only": 2}]
    svg = ET.fromstring(category_bars(cats))
    names = [t for t in svg.findall("{*}text") if t.text in ("A", "B")]
    assert [t.get("text-anchor") for t in names] == ["end", "end"] and float(names[0].get("y")) < float(names[1].get("y"))
    values = [t for t in svg.findall("{*}text") if t.text.endswith(")")]
    assert [(t.text, t.get("text-anchor")) for t in values] == [("20.00% (4)", "start"), ("10.00% (2)", "start")]
    widths = {r.find("{*}title").text: float(r.get("width")) for r in svg.findall("{*}rect")}
    full = widths["A: both 1"] + widths["A: image only 3"] + widths["A: caption only 0"]
    assert widths["A: image only 3"] == pytest.approx(3 * widths["A: both 1"], abs=0.15)
    assert widths["B: caption only 2"] == pytest.approx(full / 2, abs=0.15) and widths["B: both 0"] == 0
    assert int(svg.get("height")) >= float(names[1].get("y")) and inside(svg)
    empty = ET.fromstring(category_bars([]))
    assert [t.text for t in empty.findall("{*}text")] == ["no categories in this report"] and inside(empty)


def test_shard_chart_without_shards_and_small_rates():
    from vlmaudit.report.html_charts import shard_rates

    empty = ET.fromstring(shard_rates([], 0))
    assert [(t.text, t.get("text-anchor"), t.get("fill")) for t in empty.findall("{*}text")] == [
        ("0.00%", "end", "#222"), ("0", "end", "#222"), ("no shards", "middle", "#555")]
    tiny = ET.fromstring(shard_rates([0.0005, 0.0002], 5))
    assert [t.text for t in tiny.findall("{*}text")] == ["0.050%", "0", "5 shards in name order, 2 buckets"]
    assert [r.find("{*}title").text for r in tiny.findall("{*}rect")] == ["bucket 1 of 2: 0.050%", "bucket 2 of 2: 0.020%"]
    assert inside(tiny)


def test_estimate_chart_marks_each_interval_and_says_too_few_labels():
    from vlmaudit.report.html_charts import estimate_intervals

    svg = ET.fromstring(estimate_intervals(estimates()))
    texts = [(t.text, t.get("text-anchor"), t.get("fill")) for t in svg.findall("{*}text")]
    assert texts == [("Vio<lence>", "end", "#222"), ("12.00% [5.00%, 20.00%]", "start", "#222"),
                     ("any", "end", "#222"), ("too few labels", "start", "#777")]
    (dot,) = svg.findall("{*}circle")
    assert dot.find("{*}title").text == "Vio<lence>: 12.00% [5.00%, 20.00%]"
    lines = svg.findall("{*}line")
    lo, hi = float(lines[0].get("x1")), float(lines[0].get("x2"))
    assert lo < float(dot.get("cx")) < hi <= float(svg.get("width"))
    assert (float(dot.get("cx")) - lo) / (hi - lo) == pytest.approx(0.07 / 0.15, abs=0.01)
    assert inside(svg)


def test_html_page_sections_in_order_with_escaped_values():
    data = with_example(summary())
    data["estimates"] = estimates()
    data["overview"]["model"] = "m<x>"
    data["modality"]["scored"] = {"image": True, "caption": False}
    data["modality"]["na"] = "n/a - not scored by m<x>"
    data["categories"][0]["scored"] = False  # a figure present but marked unscored: n/a all the same
    data["categories"][0]["na"] = "n/a"
    page = page_of(data)
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == ["Completeness", "Flagged rate per category", "Image, caption or both", "Flagged rate across shards",
                        "Score histograms", "Top concepts", "Prevalence estimates", "Prevalence from the labelled review sample",
                        "Examples"]
    assert "<p>model m&lt;x&gt; (clip) &middot; taxonomy tax-1 &middot; thresholds scan</p>" in page
    assert "<tr><td>Violence</td><td>5</td><td>n/a</td>" in page
    assert "(agreement 28.57%). caption: n/a - not scored by m&lt;x&gt;.</p>" in page
    assert ("<tr><td>Gore</td><td>violence</td><td>4</td><td>10.00%</td><td>3</td><td>2</td></tr>") in page
    assert "<b>Gore</b> (violence) &middot; thresholds image 0.500, caption 0.750</figcaption>" in page
    assert "<h3>Violence</h3>\n<h4>Gore</h4><div class='gallery'><figure class='card' data-fired='both'>" in page
    assert "Click an example to reveal / hide it." in page and "<img class='shield blur'" not in page
    assert "s&lt;1&gt;</span><br>a  red\tcar<br><a href='http://e.invalid/a'" in page
    redacted = page_of_with(data, blur=False, redact=True)
    assert "Click an example to blur it." in redacted and "e.invalid" not in redacted and "red\tcar" not in redacted
    data["modality"]["agreement"] = None
    assert "(agreement n/a - not scored by m&lt;x&gt;)" in page_of(data)
    data["examples"] = {}
    assert "<h2>Examples</h2>" not in page_of(data) and page_of(data).endswith("</script></body></html>")


def page_of_with(data: dict, blur: bool, redact: bool) -> str:
    from vlmaudit.report.html_page import to_html

    return to_html(data, {}, blur=blur, redact=redact)


def test_markdown_export_lines():
    from vlmaudit.report.exports import to_markdown

    lines = to_markdown(summary()).splitlines()
    assert lines[:4] == ["# vlmaudit report", "", "- samples: 40; failed: 3 (7.50%); flagged: 7 (17.50%)",
                         "- model: tiny-clip (clip); taxonomy: tax-1; thresholds: scan"]
    assert "| Violence | 5 | 12.50% | 2 | 2 | 1 |" in lines
    assert "| Gore | violence | 4 | 10.00% | 3 | 2 |" in lines
    assert "| s<1> | 20 | 2 | 10.00% |".replace("<", "\\<").replace(">", "\\>") in lines


def test_card_markdown_results_limits_and_matches():
    from vlmaudit.report.card import to_markdown

    c = card()
    ok = {"status": "ok", "estimate": 0.12, "low": 0.05, "high": 0.2, "labels": 25, "positives": 3}
    c["results"] = [{"id": "v", "name": "Violence", "scored": True, "flagged": 1234, "rate": 0.5, "estimate": ok},
                    {"id": "h", "name": "Hate", "scored": False, "flagged": None, "rate": None, "estimate": None},
                    {"id": "s", "name": "Sex", "scored": True, "flagged": 0, "rate": 0.0,
                     "estimate": {**ok, "status": "too_few_labels", "labels": 2}},
                    {"id": "any", "name": "any category", "scored": True, "flagged": 7, "rate": 0.175, "estimate": None}]
    c["options"] = {"category": "violence", "concept": "gore", "shard": "0000*", "threshold": ["0.5"], "policy": "strict"}
    c["estimate"] = {"method": "stratified", "labelled": 1000, "population": 40}
    c["known_matches"] = {"ncii": {"matches": 3, "samples": 2}}
    c["files"] = {"a_b.parquet": "ef" * 32}
    text = to_markdown(c, "c.json")
    assert "\n## With what\n\n- vlmaudit 9 (scan)\n" in text
    assert "- counted with --category violence, --concept gore, --shard 0000\\* only (other categories, concepts or shards not counted)" in text
    assert ("| category | flagged | flagged rate | estimated prevalence (95 % interval) |\n| --- | ---: | ---: | --- |\n"
            "| Violence | 1,234 | 50.00% | 12.00% (5.00% - 20.00%; 25 labels) |\n"
            "| Hate | n/a - not scored by tiny\\_clip | n/a - not scored by tiny\\_clip | n/a - not scored by tiny\\_clip |\n"
            "| Sex | 0 | 0.00% | too_few_labels (2 labels) |\n| any category | 7 | 17.50% | - (no labels) |\n\n"
            "Estimates from 1,000 labelled samples; method: stratified.\n\n## Known-content matches\n\n"
            "- ncii: 3 matches, 2 samples\n\n## Report files (SHA-256)\n\n| file | SHA-256 |\n| --- | --- |\n"
            f"| a\\_b.parquet | `{'ef' * 32}` |\n") in text
    c["known_matches"], c["options"] = {}, {}
    text = to_markdown(c, "c.json")
    assert "## Known-content matches\n\n- none\n" in text and "counted with" not in text


CARD_MARKDOWN = """# Audit card (vlmaudit)

Written 2026-01-01T00:00:00Z by vlmaudit 9. Numbers and digests are in `c.json`; check them with `vlmaudit verify-card c.json REPORT_DIR`.

## What was audited

- 2 shard reports, shard list SHA-256 `{ab}`; 3 shards planned
- samples: 40; failed samples: 3
- INCOMPLETE run: 1 of 3 planned shard(s) have no finished report, 0 truncated; the figures cover the finished shards only
- not scanned (not started or interrupted): s2
- failed samples by status: decode\\_error 2, no\\_image 1

## With what

- vlmaudit 9 (scan)
- model tiny\\_clip (clip), revision `r1`, weights digest `local-0123`
- taxonomy tax\\_1, fingerprint `fp'1`
- thresholds: scan, SHA-256 `{cd}`
- policy strict\\_one, fingerprint `pf1`

## Results

| category | flagged | flagged rate | estimated prevalence (95 % interval) |
| --- | ---: | ---: | --- |
| any category | 7 | 17.50% | - (no labels) |

## Known-content matches

- not checked (no `matches/` in the report directory)

## Report files (SHA-256)

| file | SHA-256 |
| --- | --- |
"""


def test_card_markdown_as_written():
    from vlmaudit.report.card import to_markdown

    c = card()
    c["model"]["weights_digest"] = "local-0123"
    assert to_markdown(c, "c.json") == CARD_MARKDOWN.format(ab="ab" * 32, cd="cd" * 32)
    c["audited"]["planned_shards"] = None
    assert "- 2 shard reports, shard list SHA-256 `" + "ab" * 32 + "`\n" in to_markdown(c, "c.json")


ESTIMATES_HTML = """<h2>Prevalence from the labelled review sample</h2>
<p>25 of 30 drawn samples labelled; population 40 scored samples in 1 strata (2 unscored rows not counted)</p>
<table><tr><th>category</th><th>prevalence (95 % CI)</th><th>positive / labelled</th><th>precision (95 % CI)</th>\
<th>true / flagged</th><th>recall (95 % CI)</th><th>flagged / positive</th></tr>
<tr><td>Vio&lt;lence&gt;</td><td>12.00% [5.00%, 20.00%]</td><td>3/25</td><td>too few labels</td><td>0/0</td>\
<td>12.00% [5.00%, 20.00%]</td><td>3/25</td></tr>
<tr><td>any</td><td>too few labels</td><td>0/0</td><td>12.00% [5.00%, 20.00%]</td><td>3/25</td><td>too few labels</td>\
<td>0/0</td></tr>
</table>
<p>Prevalence: share of the scored samples that show the category, from the labelled review sample. Precision and \
recall: of the current thresholds&#x27; flags, against the labels. &quot;too few labels&quot;: a stratum has no labelled \
row, or there are not enough labels for an interval.</p>
<p>Method: stratified.</p>
<table><tr><th>stratum</th><th>rows</th><th>drawn</th><th>labelled</th></tr>
<tr><td>s1</td><td>40</td><td>30</td><td>25</td></tr>
</table>"""


def test_estimates_section_as_written():
    from vlmaudit.report.estimates_html import to_html_section

    assert to_html_section(estimates()) == ESTIMATES_HTML


def test_gallery_cards_show_what_fired_with_thumbnails_and_captions():
    from vlmaudit.report.html_page import to_html

    data = summary()
    long_caption = "c" * 500
    data["examples"] = {"gore": [
        {"shard": "s1", "key": "k'1", "url": "javascript:alert(1)", "caption": long_caption, "score": 0.5, "modality": "image"},
        {"shard": "s1", "key": "k2", "url": None, "caption": long_caption, "score": 0.4, "fired": "caption"},
        {"shard": "s1", "key": "k3", "url": None, "caption": None, "score": 0.3}]}
    page = to_html(data, {("s1", "k'1"): "QUJD"}, blur=True, redact=False)
    cards = re.findall(r"<figure class='card'.*?</figure>", page)
    assert cards[0] == ("<figure class='card' data-fired='image'><img class='shield blur' alt='k&#x27;1' "
                        "src='data:image/jpeg;base64,QUJD'><figcaption><span class='tag image' title='flagged on the image'>"
                        f"image</span> 0.500<br>k&#x27;1<br><span class='muted'>s1</span><br>{'c' * 120}<br>"
                        "<span class='muted'>javascript:alert(1)</span></figcaption></figure>")
    assert cards[1] == ("<figure class='card' data-fired='caption'><div class='shield blur' title='caption'>"
                        f"{'c' * 400}</div><figcaption><span class='tag caption' title='flagged on the caption alone'>"
                        "caption</span> 0.400<br>k2<br><span class='muted'>s1</span></figcaption></figure>")
    assert cards[2].startswith("<figure class='card' data-fired='image'><div class='muted'>(no image)</div>")
    assert cards[2].endswith("0.300<br>k3<br><span class='muted'>s1</span></figcaption></figure>")
    assert ("Each card says what fired: <span class='tag image'>image</span> flagged on the image, <span class='tag caption'>"
            "caption</span> flagged on the caption alone, <span class='tag both'>both</span> flagged on the image and the "
            "caption. Click an example to reveal / hide it.") in page
    unblurred = to_html(data, {("s1", "k'1"): "QUJD"}, blur=False, redact=True)
    assert "<img class='shield' alt=" in unblurred and "(caption redacted)" in unblurred and "c" * 100 not in unblurred


def test_html_legends_and_split_bar_widths():
    from vlmaudit.report.html_charts import split_bar

    page = page_of(summary())
    assert page.count("<p class='legend'><span><i style='background:#8e3fae'></i>image and caption</span> <span><i "
                      "style='background:#2e6fb7'></i>image only</span> <span><i style='background:#e08a1e'></i>caption only"
                      "</span></p>") == 2
    assert ("<p class='legend'><span><i style='background:#2e6fb7'></i>image</span> <span><i style='background:#e08a1e'>"
            "</i>caption</span></p><div class='hists'>") in page
    assert "\n<h2>Flagged rate per category</h2><svg" in page
    bar = ET.fromstring(split_bar({"both": 2, "image_only": 4, "caption_only": 1}, width=700))
    assert [float(r.get("width")) for r in bar.findall("{*}rect")] == [200.0, 400.0, 100.0]
    assert [t.text for t in bar.findall("{*}text")] == ["image and caption 29%", "image only 57%", "caption only 14%"]
    empty = ET.fromstring(split_bar({"both": 0, "image_only": 0, "caption_only": None}))
    *parts, rect = empty.findall("{*}rect")
    assert [(r.find("{*}title").text, r.get("width")) for r in parts] == [("image and caption: 0", "0.0"), ("image only: 0", "0.0")]
    assert rect.get("width") == "720.0" and len(rect) == 0 and not rect.text  # no tooltip on the grey bar
    rates = svgs(page)["flagged rate across shards"].find("{*}line")
    assert rates.get("y1") == rates.get("y2")


def test_category_chart_honours_the_scored_flag():
    from vlmaudit.report.html_charts import category_bars

    cats = [{"id": "a", "name": "A", "flagged": 4, "rate": 0.2, "both": 1, "image_only": 3, "caption_only": 0,
             "scored": True},
            {"id": "b", "name": "B", "flagged": 0, "rate": 0.0, "both": 0, "image_only": 0, "caption_only": 0,
             "scored": False, "na": "n/a - not scored by m"}]
    texts = [t.text for t in ET.fromstring(category_bars(cats)).findall("{*}text")]
    assert texts == ["A", "20.00% (4)", "B", "n/a - not scored by m"]


def test_dashboard_details_a_reader_relies_on():
    from vlmaudit.report import dashboard

    data = summary()
    for c in data["categories"]:
        c["rate"], c["flagged"] = 0.0, 0  # nothing flagged anywhere: empty bars, no division by zero
    rows = table(dashboard.categories, True, data=data)
    assert rows[2] == ["Violence", "." * 40, "0.00%", "0"]
    data = summary()
    data["modality"]["scored"] = {"image": True, "caption": False}
    text = shown(dashboard.modality_gap(data, 200, True), True)
    assert "caption: n/a - not scored" in text
    data["modality"]["scored"] = {"image": False, "caption": False}
    assert "image and caption: n/a - not scored" in shown(dashboard.modality_gap(data, 200, True), True)
    data["compare"][0]["name"] = "Long " + "z" * 70
    data["top_concepts"][0]["category"] = "Long " + "w" * 70
    data["highest_scores"][0]["key"] = "Q" * 80
    for part in (dashboard.compare, dashboard.concepts, dashboard.highest):
        for width in (200, 60):
            text = shown(part(data, width, True), True, width)
            assert text.isascii(), part.__name__
    assert shown(dashboard.highest(data, 60, True), True, 60).count("Q") == 80  # a key folds, never cut
    data = with_example(summary())
    data["top_concepts"][0]["level"] = "category"  # a category-level model: examples under the category's name
    text = shown(dashboard.examples(data, 100, True, redact=True), True, 100)
    assert text.startswith("examples (captions and URLs redacted)") and "|Gore    | both  | 0.912 |" in text
    assert "[redacted]" in text and "red car" not in text


def test_more_dashboard_and_page_details():
    from vlmaudit.report import dashboard

    data = summary()
    data["categories"][0]["name"] = "Long " + "v" * 70  # a scored category's long name: shortened in ASCII too
    data["failed_shards"] = [f"f{k:02d}" for k in range(12)]
    data["compare"][0].update(other_rate=None, other_na="n/a - not scored by the other model", delta=None)
    assert table(dashboard.categories, True, data=data)[2][0] == "Long " + "v" * 52 + "..."
    assert table(dashboard.compare, True, data=data)[2] == ["Violence", "12.50%", "n/a - not scored by the other model", "n/a"]
    overview = shown(dashboard.overview(data, 200, True), True)
    assert "FAILED shards: " + ", ".join(f"f{k:02d}" for k in range(10)) + " " in overview and "f10" not in overview
    data = summary()
    data["examples"] = {"orphan": [{"shard": "s1", "key": "k1", "url": None, "caption": None, "score": 0.5}]}
    page = page_of(data)  # an example whose concept is not among the top concepts: listed under its own id
    assert "<h3></h3>\n<h4>orphan</h4><div class='gallery'>" in page
    data["examples"] = {}
    assert "</table>\n<script>" in page_of(data)  # no examples: no gallery, nothing in its place


def test_markdown_export_says_what_the_model_covers():
    from vlmaudit.report.exports import to_markdown

    data = summary()
    data["coverage"] = {"model": "nsfw_net", "level": "category", "categories": ["sexual"], "concepts": [],
                        "modalities": ["image"], "everything": False, "na": "n/a - not scored by nsfw_net"}
    lines = to_markdown(data).splitlines()
    assert ("- coverage: nsfw\\_net scores sexual (one score per category), image; everything else: "
            "n/a - not scored by nsfw\\_net") in lines
    data["coverage"].update(level="concept", categories=[], modalities=[])
    assert "- coverage: nsfw\\_net scores nothing, no modality; everything else: n/a - not scored by nsfw\\_net" in (
        to_markdown(data).splitlines())
    data["coverage"]["everything"] = True
    assert not any(line.startswith("- coverage") for line in to_markdown(data).splitlines())
    lines = to_markdown(data).splitlines()
    at = lines.index("## Shard hot spots")
    assert lines[at:at + 4] == ["## Shard hot spots", "", "| shard | samples | flagged | rate |", "| --- | ---: | ---: | ---: |"]


def test_gate_message_and_filter_entries_name_every_unfinished_shard():
    from vlmaudit.report import completeness

    state = {"incomplete": {"missing_shards": ["m1"], "held_shards": ["h1"], "failed_shards": ["f1"],
                            "truncated": [{"shard": "t1", "samples_read": 5}]}}
    assert completeness.gate_message(state) == (
        "--fail-above on an incomplete run: 3 shard(s) without a finished report (m1, h1, f1); 1 truncated shard(s) (t1); "
        "finish the scan, or pass --allow-incomplete to gate on the finished shards")
    assert completeness.filter_entries(state) == ["m1 (not scanned)", "h1 (held by another writer)", "f1 (failed)",
                                                  "t1 (truncated: 5 samples read)"]
    state["incomplete"].update(missing_shards=[], held_shards=[], failed_shards=[])
    assert completeness.gate_message(state) == (
        "--fail-above on an incomplete run: 1 truncated shard(s) (t1); finish the scan, or pass --allow-incomplete to "
        "gate on the finished shards")
    state["incomplete"].update(truncated=[], missing_shards=[f"m{k}" for k in range(11)])
    assert completeness.gate_message(state).startswith(
        "--fail-above on an incomplete run: 11 shard(s) without a finished report (m0, m1, m2, m3, m4, m5, m6, m7, m8, m9 "
        "and 1 more); finish")


def test_dashboard_edges_a_reader_sees():
    from vlmaudit.report import completeness, dashboard

    data = summary()
    data["incomplete"]["missing_shards"] = ["s\x1b[31m2"]  # a control character in a shard name: shown as a placeholder
    assert "\x1b" not in shown(completeness.dashboard_item(data, 200, True), True)
    assert table(dashboard.categories, True, width=70)[2][1] == "#" * 14  # the bar shrinks with the console
    data = summary()
    data["top_concepts"][0].update(name="c" * 50, p95_caption=0.75)
    wide = table(dashboard.concepts, True, width=110, data=data)  # 110 columns: category and caption columns too
    assert wide[2] == ["c" * 24, "violence", "4", "10.00%", "3", "2", "0.250", "0.500", "0.125", "0.750"]
    assert wide[3] == ["c" * 13 + "..."]  # shortened to 40, folded
    assert table(dashboard.concepts, True, width=109, data=data)[2] == ["c" * 21 + "...", "4", "10.00%", "3", "2", "0.250",
                                                                        "0.500"]
    data["modality"]["agreement"] = None
    assert table(dashboard.modality_gap, True, data=data)[0] == ["modality gap: image vs caption (overall agreement "
                                                                 "n/a - not scored)"]
    data = with_example(summary())
    data["examples"]["Concept " + "q" * 40] = data["examples"].pop("gore")
    data["examples"]["Concept " + "q" * 40][0]["caption"] = None
    text = shown(dashboard.examples(data, 100, True, redact=False), True, 100)
    assert text.isascii() and "|Concept qqqqqqqqqqqqq... |" in text and "| s<1>: http://e.invalid/a" in text
    redacted = shown(dashboard.examples(data, 100, True, redact=True), True, 100)
    assert re.search(r"\| s<1>: \[redacted\] +\|", redacted)


def test_charts_of_empty_or_unscored_data_still_render():
    from vlmaudit.report.html_charts import category_bars, estimate_intervals, histogram, split_bar

    none_ok = estimates()
    none_ok["categories"][0]["prevalence"] = none_ok["overall"]["prevalence"]
    svg = ET.fromstring(estimate_intervals(none_ok))
    assert [t.text for t in svg.findall("{*}text")] == ["Vio<lence>", "too few labels", "any", "too few labels"]
    svg = ET.fromstring(estimate_intervals(estimates()))
    assert all(line.get("y1") == line.get("y2") for line in svg.findall("{*}line")[:1])
    entry = {"name": "Gore", "bins": 2, "image": None, "caption": None, "threshold_image": None, "threshold_caption": None}
    svg = ET.fromstring(histogram(entry))
    assert [t.text for t in svg.findall("{*}text")] == ["0", "1", "0"] and not svg.findall("{*}rect")
    bar = ET.fromstring(split_bar({"both": 1, "image_only": 1, "caption_only": 2}, width=800))
    for rect, text in zip(bar.findall("{*}rect"), bar.findall("{*}text")):
        assert float(text.get("x")) == pytest.approx(float(rect.get("x")) + float(rect.get("width")) / 2, abs=0.1)
    assert ET.fromstring(split_bar({"both": 0, "image_only": 0, "caption_only": 0})).findall("{*}rect")[-1].get("fill") == "#eee"
    cats = [{"id": "a", "name": "A", "flagged": 4, "rate": 0.2, "both": 1, "image_only": 3, "caption_only": 0}]
    widths = [float(r.get("width")) for r in ET.fromstring(category_bars(cats)).findall("{*}rect")]
    assert sum(widths) == pytest.approx(720 - 190 - 150, abs=0.2)  # the highest rate spans the scale


def test_html_overview_split_and_histogram_captions_as_written():
    data = summary()
    data["modality"]["scored"] = {"image": False, "caption": False}
    data["modality"]["na"] = "n/a - not scored by m"
    data["concept_histograms"][0]["threshold_caption"] = None
    page = page_of(data)
    assert ("<h1>vlmaudit report</h1>\n<p>samples 40 &middot; failed 3 (7.50%) &middot; flagged <b>7</b> (17.50%) "
            "&middot; shards 2</p>\n<p>model tiny-clip (clip) &middot; taxonomy tax-1 &middot; thresholds scan</p>\n"
            "<p>failed shards (2):") in page
    assert "(agreement 28.57%). image and caption: n/a - not scored by m.</p>" in page
    assert "thresholds image 0.500, caption n/a (not scored)</figcaption>" in page
    assert "<p class='known'>known-content matches: 2 samples (csam-hashes: 2, ncii: 1); matched images are never shown</p>\n" in page


def test_markdown_export_tables_as_written():
    from vlmaudit.report.exports import to_markdown

    text = to_markdown(summary())
    assert ("## Flagged rate per category\n\n| category | flagged | rate | both | image only | caption only |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |\n| Violence | 5 | 12.50% | 2 | 2 | 1 |\n") in text
    assert ("## Top concepts\n\n| concept | category | samples | rate | image | caption |\n"
            "| --- | --- | ---: | ---: | ---: | ---: |\n| Gore | violence | 4 | 10.00% | 3 | 2 |\n") in text


def test_chart_geometry_a_reader_can_see():
    from vlmaudit.report.html_charts import category_bars, estimate_intervals, histogram, split_bar

    entry = {"name": "Gore", "bins": 4, "image": [7, 0, 2, 5], "caption": [3, 0, 12, 0],
             "threshold_image": 0.5, "threshold_caption": 0.75}
    svg = ET.fromstring(histogram(entry))
    axis, *marks = svg.findall("{*}line")
    left, right = float(axis.get("x1")), float(axis.get("x2"))
    assert axis.get("y1") == axis.get("y2")
    for line, thr in zip(marks, (0.5, 0.75)):
        assert line.get("x1") == line.get("x2") and float(line.get("y1")) < float(line.get("y2")) <= float(axis.get("y1"))
        assert (float(line.get("x1")) - left) / (right - left) == pytest.approx(thr, abs=0.01)
    rects = svg.findall("{*}rect")
    spans = [(float(r.get("x")), float(r.get("x")) + float(r.get("width"))) for r in rects]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and left <= spans[0][0] and spans[-1][1] <= right
    assert [float(r.get("height")) == 0 for r in rects] == [n == 0 for pair in zip(entry["image"], entry["caption"]) for n in pair]
    cats = [{"id": "a", "name": "A", "flagged": 4, "rate": 0.2, "both": 1, "image_only": 3, "caption_only": 0},
            {"id": "b", "name": "B", "flagged": 0, "rate": 0.0, "both": 0, "image_only": 0, "caption_only": 0}]
    svg = ET.fromstring(category_bars(cats))
    bars = [r for r in svg.findall("{*}rect") if r.find("{*}title").text.startswith("A:")]
    assert sum(float(r.get("width")) for r in bars) == pytest.approx(720 - 190 - 150, abs=0.2)
    label = next(t for t in svg.findall("{*}text") if t.text == "A")
    assert float(label.get("x")) < float(bars[0].get("x"))  # the name ends left of its bar
    from_zero = estimates()
    from_zero["categories"][0]["prevalence"] = {**from_zero["categories"][0]["prevalence"], "low": 0.0}
    svg = ET.fromstring(estimate_intervals(from_zero))
    interval = svg.findall("{*}line")[0]
    lo, hi = float(interval.get("x1")), float(interval.get("x2"))
    assert hi == pytest.approx(720 - 170, abs=0.1)  # the widest interval reaches the end of the scale
    name, value = svg.findall("{*}text")[:2]
    assert lo == pytest.approx(190) and float(name.get("x")) < lo and float(value.get("x")) > hi  # an interval from 0
    bar = ET.fromstring(split_bar({"both": 1, "image_only": 1, "caption_only": 2}, width=800))
    assert {t.get("fill") for t in bar.findall("{*}text")} == {"#fff"}


def test_html_split_note_and_long_urls():
    from vlmaudit.report.html_page import link

    page = page_of(summary())
    assert "<p>Which modality reached the thresholds, over the flagged samples (agreement 28.57%).</p>" in page
    data = summary()
    data["modality"]["agreement"] = None
    assert "(agreement n/a).</p>" in page_of(data)
    assert link("javascript:" + "x" * 100) == f"<span class='muted'>javascript:{'x' * 69}</span>"
    url = "https://e.invalid/" + "p" * 100
    assert link(url) == (f"<a href='{url}' rel='noopener noreferrer nofollow' target='_blank'>{url[:80]}</a>")


def test_dashboard_with_no_categories():
    from vlmaudit.report import dashboard

    data = summary()
    data["categories"] = []
    assert table(dashboard.categories, True, data=data) == [["flagged rate per category"], ["category", "rate", "samples"]]


# ---- golden files: the exact text a reader gets, for every renderer and its branches ----
# tests/report/golden/NAME holds the expected output; VLMAUDIT_UPDATE_GOLDEN=1 rewrites them (review the diff).
# Read relative to this file, so they travel with the tests when CI copies tests/ away from the checkout.

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VLMAUDIT_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path}: no golden file (run the test with VLMAUDIT_UPDATE_GOLDEN=1 and review it)"
    assert text == path.read_text(encoding="utf-8"), name


def sections(named: dict[str, str]) -> str:
    """Several outputs in one golden file, each under a '=== label' line."""
    return "".join(f"=== {label}\n{text.rstrip(chr(10))}\n" for label, text in named.items())


def bare() -> dict:
    """A complete run where nothing was flagged: empty lists, no examples, no matches checked, no compare."""
    data = summary()
    data["overview"].update(flagged=0, flagged_rate=0.0, shards=0, thresholds={"source": "calibrated"})
    data["categories"] = []
    data["top_concepts"], data["top_shards"], data["shard_rates"] = [], [], []
    data["failed_shards"], data["truncated_shards"] = [], []
    data["modality"] = {"both": 0, "image_only": 0, "caption_only": 0, "agreement": None}
    data["concept_histograms"], data["highest_scores"], data["compare"] = [], [], []
    data["histogram"] = None
    data["complete"] = True
    data["incomplete"] = {"planned_shards": 0, "finished_shards": 0, "missing_shards": [], "failed_shards": [],
                          "held_shards": [], "truncated": [], "failed_by_status": {}}
    data["known_matches"] = None
    return data


def partial_coverage() -> dict:
    """A model that scores the image only, at category level (what coverage_view leaves in a summary)."""
    data = with_example(summary())
    data["coverage"] = {"model": "nsfw_net", "level": "category", "categories": ["violence"], "concepts": [],
                        "modalities": ["image"], "everything": False, "na": "n/a - not scored by nsfw_net"}
    data["modality"].update(scored={"image": True, "caption": False}, na="n/a - not scored by nsfw_net",
                            caption_only=None, agreement=None)
    data["categories"][0].update(caption_only=None, agreement=None, scored=True)
    data["top_concepts"][0].update(name="Violence (whole category)", level="category", caption=None,
                                   mean_caption=None, p95_caption=None)
    data["concept_histograms"][0].update(caption=None, threshold_caption=None)
    data["compare"][0].update(other_rate=None, other_na="n/a - not in the other report", delta=None)
    data["known_matches"] = {"banks": {}, "samples": 0, "withheld_examples": 0}
    data["incomplete"] = {"planned_shards": 0, "finished_shards": 2, "missing_shards": [f"m<{k}>_x" for k in range(10)],
                          "held_shards": ["h|1\x1b"], "failed_shards": ["f`1"], "truncated": [{"shard": "t<1>", "samples_read": 1234}],
                          "failed_by_status": {"bad|st<x>": 3}}  # names each medium escapes its own way
    return data


def test_svg_charts_as_written():
    from vlmaudit.report.html_charts import category_bars, estimate_intervals, histogram, shard_rates, split_bar

    cats = summary()["categories"] + [
        {"id": "drugs", "name": "Dr<ugs>", "flagged": 0, "rate": 0.0, "both": 0, "image_only": 0, "caption_only": 0},
        {"id": "tiny", "name": "Tiny", "flagged": 1, "rate": 0.0004, "both": None, "image_only": 1, "caption_only": None}]
    golden("category_bars.svg.txt", sections({
        "two categories, one not scored, a zero and a tiny rate": category_bars(cats),
        "none": category_bars([]), "narrow": category_bars(cats[:1], width=400),
        "a name of 28 characters, one of 29, a rate of 0.1 %": category_bars([
            {**cats[0], "name": "n" * 28, "rate": 0.001}, {**cats[0], "name": "m" * 29, "rate": 0.00099}])}))
    golden("split_bar.svg.txt", sections({
        "2/4/1": split_bar(summary()["modality"]), "caption not scored": split_bar({"both": 3, "image_only": 9,
                                                                                   "caption_only": None}, width=500),
        "nothing flagged": split_bar(bare()["modality"]), "empty dict": split_bar({}),
        "a part of exactly 90 px (no label) and one of 90.5 px (labelled)": split_bar(
            {"both": 1, "image_only": 7, "caption_only": 0}) + split_bar({"both": 1, "image_only": 7, "caption_only": 0},
                                                                         width=724)}))
    golden("shard_rates.svg.txt", sections({
        "two shards": shard_rates([0.25, 0.1], 2), "buckets": shard_rates([0.0005, 0.0, 0.02], 7, width=300, height=90),
        "no shards": shard_rates([], 0), "one shard": shard_rates([0.5], 1), "all zero": shard_rates([0.0, 0.0], 2),
        "more buckets than pixels": shard_rates([0.1] * 30, 30, width=100)}))
    entry = summary()["concept_histograms"][0]
    golden("histogram.svg.txt", sections({
        "both series": histogram(entry),
        "caption not scored": histogram({**entry, "caption": None, "threshold_caption": 0.2}),
        "thresholds off the scale, no caption threshold": histogram(
            {**entry, "name": "G<o>re", "threshold_image": 1.5, "threshold_caption": None}, width=200, height=100),
        "thresholds below 0": histogram({**entry, "threshold_image": -0.5, "threshold_caption": 0.0}),
        "nothing scored": histogram({**entry, "bins": 2, "image": None, "caption": None}),
        "image not scored": histogram({**entry, "image": None, "threshold_image": None}),
        "no image threshold": histogram({**entry, "threshold_image": None})}))
    none_ok = estimates()
    none_ok["categories"][0]["prevalence"] = none_ok["overall"]["prevalence"]
    zero = estimates()  # an interval at 0 beside one at 0.2: the scale is the widest interval's
    zero["overall"]["prevalence"] = {"status": "ok", "estimate": 0.0, "low": 0.0, "high": 0.0, "positives": 0, "labels": 9}
    golden("estimate_intervals.svg.txt", sections({
        "an interval at 0": estimate_intervals(zero),
        "one interval": estimate_intervals(estimates()), "too few labels everywhere": estimate_intervals(none_ok),
        "narrow": estimate_intervals(estimates(), width=500)}))


def test_html_pages_as_written():
    from vlmaudit.report import exports
    from vlmaudit.report.html_page import to_html

    full = with_example(summary())
    full["estimates"] = estimates()
    full["examples"]["gore"] += [
        {"shard": "s1", "key": "k2", "url": "https://e.invalid/" + "p" * 90, "caption": "c<b>" * 40, "score": 0.5,
         "fired": "caption"},
        {"shard": "s1", "key": "k3", "url": "file:///etc/passwd", "caption": None, "score": 0.25, "modality": "image"},
        {"shard": "s1", "key": "k4", "url": "http://e.invalid/a b", "caption": "x", "score": 0.125, "modality": "both"},
        {"shard": "s1", "key": "k5", "url": "ftp://e.invalid/x", "caption": "y", "score": 0.0625, "fired": "od<d>"}]
    thumbs = {("s<1>", "key-" + "k" * 30): "QUJD"}
    golden("page-full.html", exports.to_html(full, thumbs, blur=True, redact=False))  # what `report --html` calls
    golden("page-redacted.html", exports.to_html(full, thumbs, blur=False, redact=True))
    golden("page-bare.html", to_html(bare(), {}, blur=True, redact=False))
    golden("page-partial-coverage.html", to_html(partial_coverage(), {}, blur=True, redact=False))
    sparse = summary()  # the optional keys left out: the page still renders, with zeros and n/a
    for key in ("shards", "thresholds"):
        del sparse["overview"][key]
    for key in ("top_shards", "shard_rates", "modality", "concept_histograms", "known_matches", "complete"):
        del sparse[key]
    sparse["failed_shards"] = [f"f{k}" for k in range(20)]  # exactly 20: all named, no ellipsis
    sparse["categories"].append({"id": "d", "name": "D", "flagged": None, "rate": None, "both": None,
                                 "image_only": None, "caption_only": None, "agreement": None})  # no label: "n/a"
    sparse["top_concepts"].append({**sparse["top_concepts"][0], "name": "Blood", "image": None})
    golden("page-sparse.html", to_html(sparse, {}, blur=True, redact=False))
    two = summary()
    two["concept_histograms"].append({**two["concept_histograms"][0], "name": "Blood"})
    assert to_html(two, {}, blur=True, redact=False).count("</figure><figure>") == 1


def test_markdown_exports_as_written():
    from vlmaudit.report.exports import to_markdown

    two = bare()
    two["coverage"] = {"model": "m", "level": "concept", "categories": ["a", "b_c"], "concepts": [],
                       "modalities": ["image", "caption"], "everything": False, "na": None}
    golden("report.md", sections({"incomplete, two categories": to_markdown(summary()),
                                  "bare": to_markdown(bare()), "partial coverage": to_markdown(partial_coverage()),
                                  "coverage of two categories, both modalities": to_markdown(two)}))


def squeezed(text: str) -> str:
    """Rich's output with what rich decides left out: trailing spaces, and runs of spaces and of rule
    characters collapsed to one (padding and column widths may change between rich versions). Every
    word, number, bar, box character, line and order stays."""
    return "\n".join(re.sub(r"([ \-━─=])\1+", r"\1", line.rstrip()) for line in text.splitlines()).strip("\n")


def alignment(text: str) -> str:
    """Per line of an ASCII table: L, R or = (fills its cell) for each non-empty cell, from where the text
    sits between the bars: pins every column's justification in the un-squeezed output."""
    out = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-+"):
            continue
        cells = line.rstrip().strip("|").split("|")
        marks = []
        for cell in cells:
            if cell.strip():
                lead, trail = len(cell) - len(cell.lstrip()), len(cell) - len(cell.rstrip())
                marks.append("=" if lead <= 1 and trail <= 1 else "L" if lead <= 1 else "R" if trail <= 1 else "C")
            else:
                marks.append(".")
        out.append("".join(marks))
    return "\n".join(out)


def dashboard_views(part, data: dict, widths=(120, 60)) -> str:
    views = {}
    for width in widths:
        for plain in (True, False):
            item = part(data, width, plain)
            text = "None" if item is None else shown(item, plain, width)
            views[f"{part.__name__} width {width} {'plain' if plain else 'rich'}"] = squeezed(text)
            if plain and item is not None and alignment(text):
                views[f"{part.__name__} width {width} plain: justification"] = alignment(text)
    return sections(views)


def dashboard_parts():
    from vlmaudit.report import completeness, dashboard, known_content

    return [dashboard.overview, completeness.dashboard_item, known_content.dashboard_item, dashboard.categories,
            dashboard.concepts, dashboard.highest, dashboard.modality_gap, dashboard.shards, dashboard.histogram,
            dashboard.compare]


@pytest.mark.parametrize("case", ["summary", "bare", "partial_coverage"])
def test_dashboard_tables_as_written(case):
    from vlmaudit.report import dashboard

    data = {"summary": lambda: with_example(summary()), "bare": bare, "partial_coverage": partial_coverage}[case]()
    text = "".join(dashboard_views(part, data) for part in dashboard_parts())
    if data["examples"]:
        for redact in (False, True):
            views = {f"examples width {w} {'plain' if plain else 'rich'} redact={redact}":
                     squeezed(shown(dashboard.examples(data, w, plain, redact), plain, w))
                     for w in (120, 60) for plain in (True, False)}
            text += sections(views)
    golden(f"dashboard-{case}.txt", text)


@pytest.mark.parametrize("case", ["summary", "bare"])
def test_whole_dashboard_on_a_terminal_and_off_it(case):
    """render() picks plain output off a terminal and for NO_COLOR consoles, boxes and colour on one."""
    from rich.console import Console

    from vlmaudit.report.dashboard import render

    data = {"summary": lambda: with_example(summary()), "bare": bare}[case]()
    views = {}
    for label, options in (("terminal", {"force_terminal": True, "color_system": "standard"}),
                           ("terminal NO_COLOR", {"force_terminal": True, "no_color": True}),
                           ("file", {"force_terminal": False})):
        for redact in (False, True):
            console = Console(width=100, record=True, file=io.StringIO(), **options)
            render(data, console, redact=redact)
            views[f"{label} redact={redact}"] = squeezed(console.export_text())
    golden(f"render-{case}.txt", sections(views))


def covered_summary() -> dict:
    """Three categories with every figure measured, before coverage is applied (what summarize builds)."""
    def cat(cid, name, n):
        return {"id": cid, "name": name, "flagged": n, "rate": n / 40, "both": 1, "image_only": n - 2,
                "caption_only": 1, "agreement": 1 / n}

    def concept(cid, category, n):
        return {"id": cid, "name": cid.title(), "category": category, "flagged": n, "rate": n / 40, "image": n - 1,
                "caption": 2, "mean_image": 0.5, "p95_image": 0.75, "mean_caption": 0.25, "p95_caption": 0.5}

    def item(key):
        return {"shard": "s1", "key": key, "url": None, "caption": "c", "score": 0.5, "modality": "image"}

    return {"categories": [cat("violence", "Violence", 6), cat("hate", "Hate", 4), cat("sexual", "Sexual", 3)],
            "modality": {"both": 3, "image_only": 7, "caption_only": 3, "agreement": 3 / 13},
            "top_concepts": [concept("gore", "violence", 5), concept("blood", "violence", 4),
                             concept("slur", "hate", 4), concept("nude", "sexual", 3),
                             concept("odd", "misc", 2)],  # a category the summary does not list: named by its id
            "concept_histograms": [{"id": c, "name": c.title(), "category": cat_id, "bins": 2, "image": [1, 2],
                                    "caption": [3, 4], "threshold_image": 0.5, "threshold_caption": 0.6}
                                   for c, cat_id in (("gore", "violence"), ("slur", "hate"), ("nude", "sexual"),
                                                     ("odd", "misc"))],
            "examples": {"gore": [item("k1"), item("k2")], "blood": [item("k2"), item("k3")], "slur": [item("k4")],
                         "nude": [item("k5")]}}


def test_coverage_marks_what_the_model_never_scored():
    import copy
    import json

    from vlmaudit.report.coverage_view import apply_coverage, compare_rows, coverage_block, na
    from vlmaudit.rulebook.coverage import Coverage

    both = ("image", "caption")
    covers = {
        "everything (no record)": Coverage.full("m"),
        "every category, both modalities, per concept": Coverage("m", "concept", ("violence", "hate", "sexual"),
                                                                   ("gore", "blood", "slur", "nude"), both),
        "violence and hate, image only, whole categories": Coverage("nsfw", "category", ("violence", "hate"),
                                                                     ("gore", "blood", "slur", "odd"), ("image",)),
        "hate, caption only, one concept": Coverage("cap", "concept", ("hate",), ("slur",), ("caption",)),
        "no modality at all": Coverage("none", "concept", ("violence",), ("gore",), ()),
    }
    views = {}
    for label, cover in covers.items():
        data = apply_coverage(covered_summary(), cover)
        other = apply_coverage(covered_summary(), Coverage("other", "concept", ("violence",), ("gore",), both))
        other["categories"] = other["categories"][:2]  # sexual is not in the other report
        views[label] = json.dumps({"summary": data, "na": na(data), "compare": compare_rows(data, other),
                                   "compare, other way": compare_rows(other, data),
                                   "coverage_block": coverage_block(cover, ["violence", "sexual"])}, indent=1, sort_keys=True)
    golden("coverage.json.txt", sections(views))
    lean = covered_summary()  # no concept rows or histograms at all
    del lean["top_concepts"], lean["concept_histograms"], lean["examples"]
    marked = apply_coverage(lean, covers["hate, caption only, one concept"])
    assert (marked["top_concepts"], marked["concept_histograms"], "examples" in marked) == ([], [], False)
    untouched = covered_summary()
    assert {k: v for k, v in apply_coverage(copy.deepcopy(untouched), Coverage.full("m")).items() if k != "coverage"} == untouched
    assert na({}) == na({"coverage": None}) == na({"coverage": {"na": None}}) == "n/a - not scored"


def hand_report_dir(root: Path, planned: list[str] | None = None, matches: bool = True) -> Path:
    """A report directory built by hand: the card and the completeness check read names, stats, run.json,
    claims and matches/ (the Parquet files' bytes are only digested, so any bytes do)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmaudit.storage.localfiles import host

    root.mkdir()
    stats = {"a": {"status": "complete", "rows": 10, "status_counts": {"ok": 8, "decode_error": 2}},
             "b": {"status": "truncated", "rows": 1234, "status_counts": {"ok": 3, "no_image": 1, "x": True, "y": 1.5,
                                                                           "decode_error": 1}},
             "c": {"status": "failed", "rows": 0, "status_counts": "damaged"},
             "d": {"status": "complete", "rows": 4},  # d's Parquet file is missing: not finished
             "t": {"status": "truncated"}}  # no rows recorded: 0 samples read
    for name, s in stats.items():
        (root / f"{name}.stats.json").write_text(json.dumps(s))
    for name in ("a", "b", "t"):
        (root / f"{name}.parquet").write_bytes(name.encode() * 3)
    (root / "run.json").write_text(json.dumps({"planned_shards": planned or [], "packages": {"vlmaudit": "7.1"},
                                               "model_info": {"weights_sha256": "w" * 8}, "taxonomy_fingerprint": "tf",
                                               "thresholds_fingerprint": "thf"}))
    (root / ".e.lock").write_text(json.dumps({"host": host(), "pid": os.getpid(), "since": 0}))  # a live writer
    (root / ".f.lock").write_text("not json")  # unreadable and new: held all the same
    (root / ".g.lock").write_text(json.dumps({"host": host(), "pid": os.getpid(), "since": 0}))
    os.utime(root / ".g.lock", (0, 0))  # not refreshed for decades: stale, so g is not held but missing
    (root / ".hidden").write_text("left out")
    (root / "link.parquet").symlink_to(root / "a.parquet")
    (root / "notes").mkdir()
    (root / "notes" / "n.txt").write_text("n")
    (root / "notes" / ".h").write_text("h")
    (root / "notes" / ".sub").mkdir()
    (root / "notes" / ".sub" / "x").write_text("x")
    (root / "notes" / "l").symlink_to(root / "run.json")
    (root / "notes" / "ldir").symlink_to(root / "notes" / ".sub", target_is_directory=True)  # never followed
    if matches:
        (root / "matches").mkdir()
        pq.write_table(pa.table({"bank": ["ncii", "ncii", "csam", "ncii"], "shard": ["a", "a", "b", "a"],
                                 "key": ["k1", "k1", "k9", "k2"], "distance": [0, 1, 2, 3]}),
                       root / "matches" / "matches.parquet")
    return root


def test_completeness_of_a_hand_made_report_dir(tmp_path):
    from vlmaudit.report.completeness import assess
    from vlmaudit.report.reading import ReportDir

    root = hand_report_dir(tmp_path / "r", planned=["a", "b", "c", "d", "e", "f", "g"])

    def state(missing=(), held=(), failed=(), truncated=(), by_status=None, finished=0, planned=7):
        return {"complete": not (missing or held or failed or truncated), "incomplete": {
            "planned_shards": planned, "finished_shards": finished, "missing_shards": list(missing),
            "failed_shards": list(failed), "held_shards": list(held), "truncated": list(truncated),
            "failed_by_status": by_status or {}}}

    cut = [{"shard": "b", "samples_read": 1234}, {"shard": "t", "samples_read": 0}]  # t: planned or not, it has stats
    assert assess(root) == state(["d", "g"], ["e", "f"], ["c"], cut, {"decode_error": 3, "no_image": 1}, finished=3)
    assert assess(ReportDir(root), shard_glob="[ab]", status_counts={"ok": 5, "scored_late": 0, "bad": 3}) == state(
        truncated=cut[:1], by_status={"bad": 3}, finished=2)
    assert assess(root, shard_glob="a") == state(by_status={"decode_error": 2}, finished=1)
    for glob, alone in (("d", state(missing=["d"])), ("e", state(held=["e"])), ("c", state(failed=["c"])),
                        ("t", state(truncated=cut[1:], finished=1))):
        assert assess(root, shard_glob=glob) == alone, glob  # any one kind of unfinished shard: incomplete
    assert assess(tmp_path / "nowhere") == state(planned=0)
    unplanned = hand_report_dir(tmp_path / "u")  # no plan: the stats name the shards
    assert assess(unplanned)["incomplete"]["missing_shards"] == ["d"]


@pytest.fixture
def tokyo(monkeypatch):
    """Local time 9 hours ahead of UTC for the test."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_audit_card_of_a_hand_made_report_dir(tmp_path, tokyo):
    import datetime
    import hashlib
    import json
    import re as regex
    from types import SimpleNamespace

    from vlmaudit import __version__
    from vlmaudit.report.card import build_card, card_paths, file_digests, known_match_counts, sha256_file, write_card
    from vlmaudit.report.reportset import listing_of

    root = hand_report_dir(tmp_path / "r", planned=["b", "a", "d"])
    data = summary()
    data["categories"][1]["scored"] = True  # marked unscored by the coverage below instead
    data["categories"][1]["id"] = "hate"
    data["categories"].append({"id": "drugs", "name": "Drugs", "flagged": 2, "rate": 0.05, "scored": False})
    data["estimates"] = estimates()
    data["estimates"]["categories"].append({**estimates()["categories"][0], "id": "hate"})  # not scored: no estimate
    meta = {"model": {"backend": "clip", "model": "tiny", "revision": "r"}, "taxonomy_version": "tax-1",
            "coverage": {"model": "tiny", "level": "concept", "categories": ["violence", "drugs"], "concepts": [],
                         "modalities": ["image"]}}
    view = SimpleNamespace(policy=SimpleNamespace(name="strict", fingerprint="pf"), thr_image=[0.5, 0.25],
                           thr_caption=[0.75, 1.0])
    options = {"category": None, "labels_sha256": "ls"}
    skipped = root / "b.parquet"
    card = build_card(root, data, meta, view, options, skip=(skipped,))
    assert card["written_by"] == f"vlmaudit {__version__}"
    written = datetime.datetime.strptime(card["written_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs(written - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(hours=1)  # UTC, not Tokyo
    assert regex.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", card["written_at"])
    golden("card.json.txt", json.dumps({k: v for k, v in card.items() if not k.startswith("written_")}, indent=1,
                                       sort_keys=True) + "\n")
    assert sorted(card["files"]) == ["a.parquet", "a.stats.json", "b.stats.json", "c.stats.json", "d.stats.json",
                                     "matches/matches.parquet", "notes/n.txt", "run.json", "t.parquet", "t.stats.json"]
    assert card["files"]["a.parquet"] == sha256_file(root / "a.parquet") == hashlib.sha256(b"aaa").hexdigest()
    assert file_digests(listing_of(root)) == file_digests(root) != card["files"]
    assert known_match_counts(root) == {"csam": {"matches": 1, "samples": 1}, "ncii": {"matches": 3, "samples": 2}}
    assert known_match_counts(hand_report_dir(tmp_path / "none", matches=False)) is None
    card["policy"] = None
    no_policy = build_card(root, data, meta, SimpleNamespace(policy=None, thr_image=[], thr_caption=[]), {}, ())
    assert no_policy["policy"] is None and no_policy["estimate"]["labels_sha256"] is None
    unplanned = build_card(hand_report_dir(tmp_path / "u"), data, meta, view, options)
    assert (unplanned["audited"]["planned_shards"], unplanned["audited"]["planned_list_sha256"]) == (None, None)
    md_path, json_path = card_paths(tmp_path / "out" / "c.md")
    json_path.parent.mkdir()
    write_card(card, md_path, json_path)
    assert json.loads(json_path.read_text()) == card and json_path.read_text().endswith("}\n")
    assert md_path.read_text().startswith("# Audit card (vlmaudit)\n\nWritten ") and "`c.json`" in md_path.read_text()


def test_dashboard_edge_rows_as_written():
    """Rows the hand-built summary lacks: a concept name over 30 characters in the highest scores, counts of
    at most 1 in the histogram, examples without a URL or a fired field, an examples list emptied (every
    sample withheld as known content)."""
    from vlmaudit.report import dashboard

    data = summary()
    data["highest_scores"].append({"key": "k-2", "shard": "s", "concept": "c" * 31, "modality": "image", "score": 1.0})
    data["histogram"] = {"concept": "gore", "bins": 2, "image": [1, 0], "caption": [0, 1]}
    data["examples"] = {"gore": [{"shard": "s1", "key": "k1", "url": None, "caption": "cap", "score": 0.5,
                                  "modality": "caption"}]}
    data["top_concepts"].append({**data["top_concepts"][0], "name": "n" * 41, "category": "k" * 41})
    data["compare"].append({"name": "v" * 61, "rate": 0.5, "other_rate": 0.25, "delta": 0.25})
    data["categories"].reverse()  # the unscored category first: the scored one after it still shown
    text = "".join(dashboard_views(part, data, widths=(120,)) for part in (
        dashboard.highest, dashboard.histogram, dashboard.concepts, dashboard.compare, dashboard.categories))
    for plain in (True, False):
        text += sections({f"examples {'plain' if plain else 'rich'}": squeezed(shown(dashboard.examples(data, 120, plain, False),
                                                                                     plain, 120))})
    data["examples"] = {"gore": []}
    for plain in (True, False):
        text += sections({f"no examples left {'plain' if plain else 'rich'}": squeezed(shown(
            dashboard.examples(data, 120, plain, False), plain, 120))})
    golden("dashboard-edges.txt", text)
    assert dashboard.sparkline([]) == "" and dashboard.sparkline([], plain=True) == ""
    assert dashboard.bar(0.5, 1.0, 4) == "██··" and dashboard.bar(0.5, 0.0, 3, plain=True) == "..."
    assert dashboard.clip("abcdef", 2, plain=True).plain == "..." and dashboard.clip("abcdef", 0).plain == "…"


def test_audit_card_refusals_are_one_line(tmp_path, monkeypatch):
    from vlmaudit.errors import UserError
    from vlmaudit.report import card as module
    from vlmaudit.report.reading import ReportDir

    root = hand_report_dir(tmp_path / "r")
    with pytest.raises(UserError, match=r"^.*missing: cannot read \(No such file or directory\)$"):
        module.sha256_file(tmp_path / "missing")
    monkeypatch.setattr(module, "MAX_FILES", 11)
    assert len(module.file_digests(root)) == 11
    monkeypatch.setattr(module, "MAX_FILES", 10)
    with pytest.raises(UserError, match=r"r: over 10 files$"):
        module.file_digests(root)
    remote = ReportDir.__new__(ReportDir)
    remote.where = type("Remote", (), {"remote": True, "__str__": lambda self: "s3://b/r"})()
    with pytest.raises(UserError, match=r"^s3://b/r: the audit card digests local report directories only \(copy them here first\)$"):
        module.file_digests(remote)
    with pytest.raises(UserError) as refused:
        module.write_card(card(), tmp_path / "no" / "c.md", tmp_path / "no" / "c.json")
    assert str(refused.value) == f"{tmp_path / 'no' / 'c.json'}: cannot write the card (No such file or directory)"
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "c.md").mkdir()  # the Markdown's name taken by a directory
    with pytest.raises(UserError) as refused:
        module.write_card(card(), tmp_path / "md" / "c.md", tmp_path / "md" / "c.json")
    assert str(refused.value) == f"{tmp_path / 'md' / 'c.md'}: cannot write the card (Is a directory)"
