"""`vlmaudit sample` -> fill labels -> `vlmaudit estimate` / `report --labels`, through the CLI on
scanned demo shards, and the errors a label file can cause."""

import json

import pyarrow.parquet as pq
import pytest
from conftest import draw_review, every_third, label_sheet, read_sheet, run_cli, write_sheet


def test_sample_writes_the_sheet_design_and_blurred_page(scanned, tmp_path):
    reports = scanned
    out = draw_review(reports, tmp_path / "review-a")
    rows = read_sheet(out)
    design = json.loads((out / "design.json").read_text())
    assert len(rows) == design["drawn"] == 24 and design["population"] == 63
    assert sum(s["drawn"] for s in design["strata"]) == 24 and sum(s["rows"] for s in design["strata"]) == 63
    by_id = {s["id"]: s for s in design["strata"]}
    for row in rows:
        stratum = by_id[row["stratum"]]
        assert float(row["inclusion_probability"]) == pytest.approx(stratum["drawn"] / stratum["rows"])
        assert float(row["weight"]) == pytest.approx(stratum["rows"] / stratum["drawn"])
        assert row["labels"] == "" and "score_sexual" in row
    assert len({(r["shard"], r["key"]) for r in rows}) == 24
    table = pq.read_table(out / "review.parquet")
    assert table.num_rows == 24 and "labels" in table.column_names
    page = (out / "review.html").read_text()
    no_image = page.count("(no image)")  # the demo's sample without an image and its broken JPEG, if drawn
    assert page.count("class='blur'") == 24 - no_image and no_image <= 2 and "data:image/jpeg;base64," in page
    again = draw_review(reports, tmp_path / "review-b")
    assert [(r["shard"], r["key"]) for r in read_sheet(again)] == [(r["shard"], r["key"]) for r in rows]
    other = draw_review(reports, tmp_path / "review-c", "--seed", 8)
    assert {(r["shard"], r["key"]) for r in read_sheet(other)} != {(r["shard"], r["key"]) for r in rows}


def test_sample_refuses_to_overwrite_a_sheet(scanned, tmp_path):
    reports = scanned
    out = draw_review(reports, tmp_path / "review-keep")
    result = run_cli("sample", reports, "--size", 10, "--out", out)
    assert result.exit_code == 2 and "already holds a review sheet" in result.output
    assert run_cli("sample", reports, "--size", 10, "--out", out, "--overwrite").exit_code == 0


def test_sample_then_label_then_estimate_end_to_end(scanned, tmp_path):
    reports = scanned
    out = draw_review(reports, tmp_path / "review-e2e")
    rows = label_sheet(out, lambda r: "sexual, Hate" if every_third(r) else "safe")
    result = run_cli("estimate", reports, "--labels", out, "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.output)
    sexual = next(c for c in est["categories"] if c["id"] == "sexual")
    hate = next(c for c in est["categories"] if c["id"] == "hate")
    positives = sum(map(every_third, rows))
    assert est["labelled"] == 24 and sexual["prevalence"]["positives"] == positives
    assert sexual["prevalence"]["labels"] == 24 and hate["prevalence"] == sexual["prevalence"]
    p = sexual["prevalence"]
    assert p["status"] == "ok" and 0 <= p["low"] <= p["estimate"] <= p["high"] <= 1
    violence = next(c for c in est["categories"] if c["id"] == "violence")
    assert violence["prevalence"]["estimate"] == 0 and violence["prevalence"]["high"] > 0
    assert est["overall"]["prevalence"]["estimate"] == pytest.approx(p["estimate"])
    for fmt, marker in (("markdown", "| category |"), ("html", "<table>")):
        text = run_cli("estimate", reports, "--labels", out / "review.csv", "--format", fmt).output
        line = next(line for line in text.splitlines() if "Sexual" in line)
        assert marker in text and "too few labels" not in line
        assert f"{p['estimate']:.2%} [{p['low']:.2%}, {p['high']:.2%}]" in line  # the JSON's numbers
    table = run_cli("estimate", reports, "--labels", out)
    assert table.exit_code == 0 and "Prevalence" in table.output


def test_labels_from_the_parquet_sheet(scanned, tmp_path):
    import pyarrow as pa

    reports = scanned
    out = draw_review(reports, tmp_path / "review-parquet")
    table = pq.read_table(out / "review.parquet")
    assert table.schema.field("labels").type == pa.string()
    labels = ["violence" if i % 4 == 0 else "safe" for i in range(table.num_rows)]
    table = table.set_column(table.column_names.index("labels"), "labels", pa.array(labels))
    pq.write_table(table, out / "review.parquet")
    result = run_cli("estimate", reports, "--labels", out / "review.parquet", "--json")
    assert result.exit_code == 0, result.output
    violence = next(c for c in json.loads(result.output)["categories"] if c["id"] == "violence")
    assert violence["prevalence"]["positives"] == 6 and violence["prevalence"]["labels"] == 24


def test_unlabelled_strata_say_too_few_labels(scanned, tmp_path):
    reports = scanned
    out = draw_review(reports, tmp_path / "review-partial")
    design = json.loads((out / "design.json").read_text())
    first = design["strata"][0]["id"]
    label_sheet(out, lambda r: "" if r["stratum"] == first else "safe")
    est = json.loads(run_cli("estimate", reports, "--labels", out, "--json").output)
    assert est["overall"]["prevalence"]["status"] == "too few labels"
    assert est["overall"]["prevalence"]["estimate"] is None
    assert "too few labels" in run_cli("estimate", reports, "--labels", out).output


def test_report_with_labels_adds_the_estimates(scanned, tmp_path):
    reports = scanned
    out = draw_review(reports, tmp_path / "review-report")
    label_sheet(out, lambda r: "sexual" if r["key"].endswith("1") else "safe")
    result = run_cli("report", reports, "--labels", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    direct = json.loads(run_cli("estimate", reports, "--labels", out, "--json").output)
    assert summary["estimates"] == direct
    assert "Prevalence from the labelled" in run_cli("report", reports, "--labels", out, "--format", "markdown").output
    html_file = tmp_path / "r.html"
    assert run_cli("report", reports, "--labels", out, "--format", "html", "-o", html_file).exit_code == 0
    assert "Prevalence from the labelled" in html_file.read_text()
    assert "Prevalence from the labelled" in run_cli("report", reports, "--labels", out).output
    lenient = json.loads(run_cli("report", reports, "--labels", out, "--json", "--threshold", "0").output)
    recall = next(c for c in lenient["estimates"]["categories"] if c["id"] == "sexual")["recall"]
    assert recall["positives"] == recall["labels"]  # every positive is flagged at threshold 0


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows.append(dict(rows[0], key="no-such-key")), "no such key in the reports"),
    (lambda rows: rows.append(dict(rows[0])), "duplicate key"),
    (lambda rows: rows[1].update(labels="sexual, nonsense"), "'nonsense' is not a category"),
    (lambda rows: rows[1].update(labels="safe, hate"), "'safe' together with categories"),
])
def test_bad_labels_are_one_line_and_exit_2(scanned, tmp_path, edit, message):
    reports = scanned
    out = draw_review(reports, tmp_path / f"review-bad-{abs(hash(message))}")
    rows = read_sheet(out)
    for row in rows:
        row["labels"] = "safe"
    edit(rows)
    write_sheet(out, rows)
    result = run_cli("estimate", reports, "--labels", out)
    assert result.exit_code == 2 and message in result.output
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_a_label_for_a_row_not_drawn_is_refused(scanned, tmp_path):
    reports = scanned
    out = draw_review(reports, tmp_path / "review-undrawn")
    rows = read_sheet(out)
    drawn = {(r["shard"], r["key"]) for r in rows}
    every = [(s, f"{s}{i:04d}") for s in ("00000", "00001", "00002") for i in range(20)]
    shard, key = next(p for p in every if p not in drawn)
    rows.append(dict(rows[0], shard=shard, key=key, labels="safe"))
    write_sheet(out, rows)
    result = run_cli("estimate", reports, "--labels", out)
    assert result.exit_code == 2 and "was not drawn in this sample" in result.output and "DuckDB" not in result.output
    design = json.loads((out / "design.json").read_text())
    (out / "design.json").write_text(json.dumps(design | {"duckdb": "0.0.1"}))
    result = run_cli("estimate", reports, "--labels", out)
    assert result.exit_code == 2 and "drawn with DuckDB 0.0.1" in result.output


def test_changed_reports_are_refused(scanned, tmp_path):
    import shutil

    reports = scanned
    out = draw_review(reports, tmp_path / "review-changed")
    label_sheet(out, lambda r: "safe")
    fewer = tmp_path / "fewer"
    shutil.copytree(reports, fewer)
    for path in fewer.glob("00002*"):
        path.unlink()
    result = run_cli("estimate", fewer, "--labels", out)
    assert result.exit_code == 2 and "not the ones this sample was drawn from" in result.output


def test_every_review_image_goes_through_images_allowed(scanned, tmp_path, monkeypatch):
    """The hash-bank exclusion plugs into one function: rows it drops are never re-read or shown."""
    from vlmaudit.estimate import review_page
    from vlmaudit.report import exports

    reports = scanned
    seen = []
    real = exports._thumbnail
    monkeypatch.setattr(exports, "_thumbnail", lambda data, size: seen.append(1) or real(data, size))
    monkeypatch.setattr(review_page, "images_allowed", lambda report_dir, rows: [r for r in rows if r["row"] % 2])
    out = draw_review(reports, tmp_path / "review-hook")
    page = (out / "review.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 12 == len(seen) and page.count("(no image)") == 12
