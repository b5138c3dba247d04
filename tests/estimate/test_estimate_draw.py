"""The sampler on synthetic reports in the real schema (no model): strata, unscored rows,
inclusion probabilities, category strata, and hostile keys / captions on the sheet and page."""

import csv
import json

import numpy as np
import pytest
from conftest import run_cli


def synthetic_reports(out, files=2, rows=300, seed=0, keys=None, captions=None, unscored=()):
    """Report files written by the scanner's own row builder; scores ~ Beta(0.4, 6)."""
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.scan.writer import open_parquet_writer
    from vlmaudit.schema import report_meta, report_schema

    rules = load_rules()
    meta = report_meta(rules.taxonomy, rules.thresholds, {"model": "synthetic", "backend": "synthetic", "revision": "0"})
    schema = report_schema(rules.taxonomy, meta)
    builder = RowBuilder(rules.taxonomy, rules.thresholds, schema, "synthetic@0")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        name = f"{f:05d}"
        metas = []
        for i in range(rows):
            key = (keys or {}).get((f, i), f"{name}{i:04d}")
            bad = (f, i) in unscored
            metas.append(RowMeta(key, i, f"http://x/{i}", (captions or {}).get((f, i), f"caption {i}"),
                                 "decode_error" if bad else "ok", image_row=-1 if bad else i,
                                 caption_row=-1 if bad else i))
        scores = rng.beta(0.4, 6.0, (2, rows, 75)).astype(np.float32)
        with open_parquet_writer(out / f"{name}.parquet", schema) as writer:
            writer.write_batch(builder.build(name, metas, scores[0], scores[1]))
        (out / f"{name}.stats.json").write_text(json.dumps({"shard": name, "status": "complete", "rows": rows,
                                                            "started_at": 0.0, "finished_at": 1.0}))
    return out


def load(reports):
    from vlmaudit.report.reportset import ReportSet

    opened = ReportSet.open(reports)
    return opened.files, opened.meta


def test_strata_partition_the_scored_rows_and_skip_unscored_ones(tmp_path):
    from vlmaudit.estimate.design import bin_of
    from vlmaudit.estimate.draw import Params, category_scores, draw, fetch_rows

    reports = synthetic_reports(tmp_path / "r", unscored={(0, 3), (1, 7)})
    files, meta = load(reports)
    result = draw(files, meta, Params(size=60, seed=1))
    assert result.population == 598 and result.unscored == 2
    assert sum(s.rows for s in result.strata) == 598 and sum(s.drawn for s in result.strata) == 60
    assert len(result.picks) == 60 and len({(s, i) for s, i, _ in result.picks}) == 60
    assert ("00000", 3) not in {(s, i) for s, i, _ in result.picks}
    rows = fetch_rows(files, [(s, i) for s, i, _ in result.picks])
    for shard, index, h in result.picks:
        lo, hi = result.strata[h].bins
        assert lo <= bin_of(category_scores(rows[(shard, index)], meta).max()) < hi


def test_every_row_of_a_stratum_is_equally_likely(tmp_path):
    """Over many seeds each row is drawn about n_h / N_h of the time (the recorded probability)."""
    from vlmaudit.estimate.draw import Params, draw

    reports = synthetic_reports(tmp_path / "r", files=1, rows=120)
    files, meta = load(reports)
    seeds = 80
    hits, prob = {}, {}
    for seed in range(seeds):
        result = draw(files, meta, Params(size=24, bands=3, seed=seed))
        for _shard, index, h in result.picks:
            hits[index] = hits.get(index, 0) + 1
            prob[index] = result.strata[h].drawn / result.strata[h].rows
    assert len(hits) > 100  # nearly every row is drawn at least once
    for index, count in hits.items():
        p = prob[index]
        assert abs(count / seeds - p) < 5 * np.sqrt(p * (1 - p) / seeds) + 1e-9, (index, count, p)


def test_category_strata_group_rows_by_their_top_category(tmp_path):
    from vlmaudit.estimate.design import bin_of
    from vlmaudit.estimate.draw import (
        Params,
        category_scores,
        draw,
        fetch_rows,
        top_group,
    )

    reports = synthetic_reports(tmp_path / "r")
    files, meta = load(reports)
    result = draw(files, meta, Params(mode="category", bands=2, size=80, seed=3))
    groups = {s.group for s in result.strata}
    assert groups <= set(meta["categories"]) and len(groups) > 3
    rows = fetch_rows(files, [(s, i) for s, i, _ in result.picks])
    for shard, index, h in result.picks:
        row = rows[(shard, index)]
        scores = category_scores(row, meta)
        assert meta["categories"][int(scores.argmax())] == result.strata[h].group == meta["categories"][top_group(row, meta)]
        lo, hi = result.strata[h].bins
        assert lo <= bin_of(scores.max()) < hi


def test_hostile_keys_and_captions_on_the_sheet_and_page(tmp_path):
    keys = {(0, i): f"=HYPERLINK(\"http://evil/{i}\")" for i in range(40)}
    captions = {(0, i): "<script>alert(1)</script>\x1b[2J" for i in range(40)}
    reports = synthetic_reports(tmp_path / "r", files=1, rows=40, keys=keys, captions=captions)
    out = tmp_path / "review"
    result = run_cli("sample", reports, "--size", 40, "--out", out)
    assert result.exit_code == 0, result.output
    page = (out / "review.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    with open(out / "review.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["key"].startswith("'=HYPERLINK") for r in rows)  # a spreadsheet shows it as text
    for row in rows:
        row["labels"] = "safe"
    with open(out / "review.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    est = run_cli("estimate", reports, "--labels", out, "--json")
    assert est.exit_code == 0, est.output
    assert json.loads(est.output)["labelled"] == 40


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "--size 0"), (["--size", "5", "--strata", "concept"], "--strata concept"),
    (["--size", "3", "--bands", "5"], "too small for the strata"),
])
def test_sample_option_errors(tmp_path, args, message):
    reports = synthetic_reports(tmp_path / "r", files=1, rows=50)
    result = run_cli("sample", reports, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output


def test_labels_file_problems(tmp_path):
    reports = synthetic_reports(tmp_path / "r", files=1, rows=50)
    out = tmp_path / "review"
    assert run_cli("sample", reports, "--size", 10, "--out", out).exit_code == 0
    (out / "design.json").write_text("{\"format\": 1}")
    result = run_cli("estimate", reports, "--labels", out)
    assert result.exit_code == 2 and "not a design file" in result.output
    (out / "design.json").unlink()
    result = run_cli("estimate", reports, "--labels", out)
    assert result.exit_code == 2 and "no design.json beside it" in result.output
    result = run_cli("estimate", reports, "--labels", tmp_path / "nothing.csv")
    assert result.exit_code == 2 and "no such file" in result.output


def test_category_strata_end_to_end_with_a_bom_csv(tmp_path):
    """sample --strata category -> labels (saved with a UTF-8 BOM, as Excel does) -> estimate."""
    reports = synthetic_reports(tmp_path / "r", files=1, rows=200)
    out = tmp_path / "review"
    assert run_cli("sample", reports, "--size", 60, "--strata", "category", "--bands", "2", "--out", out).exit_code == 0
    with open(out / "review.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["labels"] = row["top_category"] if float(row["top_score"]) > 0.5 else "safe"
    with open(out / "review.csv", "w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=["shard", "key", "labels"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = run_cli("estimate", reports, "--labels", out, "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.output)
    assert est["labelled"] == 60 and est["params"]["mode"] == "category"
    assert est["overall"]["prevalence"]["positives"] == sum(float(r["top_score"]) > 0.5 for r in rows)
