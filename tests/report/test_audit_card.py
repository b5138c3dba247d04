"""`report --format card` writes an audit card (Markdown + JSON); `verify-card` recomputes its
digests and numbers from the reports and names every difference (exit 1), or exits 2 when the
card or the reports cannot be read."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import draw_review, every_third, label_sheet, run_cli, write_sheet


@pytest.fixture
def reports(scanned_copy):
    """A private copy to tamper with."""
    return scanned_copy


def make_card(reports, out, *extra):
    result = run_cli("report", reports, "--format", "card", "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text()


def verify(card, reports, *extra):
    return run_cli("verify-card", card, reports, *extra)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_card_records_what_with_what_results_and_digests(scanned, tmp_path):
    card, markdown = make_card(scanned, tmp_path / "card")
    every = sorted(p.name for p in scanned.iterdir() if p.is_file() and not p.name.startswith("."))
    assert list(card["files"]) == every and all(card["files"][n] == sha(scanned / n) for n in every)
    assert card["audited"]["shard_list_sha256"] == hashlib.sha256(b"00000\n00001\n00002\n").hexdigest()
    assert card["audited"]["samples"] == 63 and card["audited"]["complete"] is True
    run = json.loads((scanned / "run.json").read_text())
    assert card["model"]["revision"] == run["revision"] and card["model"]["model"] == run["model"]
    assert card["taxonomy"]["fingerprint"] == run["taxonomy_fingerprint"]
    assert card["vlmaudit_version"] == run["packages"]["vlmaudit"]
    report = json.loads(run_cli("report", scanned, "--json").output)
    flagged = {r["id"]: r["flagged"] for r in card["results"]}
    assert flagged == {**{c["id"]: c["flagged"] for c in report["categories"]}, "any": report["overview"]["flagged"]}
    assert all(r["scored"] and r["estimate"] is None for r in card["results"])
    assert card["known_matches"] is None
    for name in every:
        assert f"| {name.replace('_', chr(92) + '_')} | `{card['files'][name]}` |" in markdown
    assert "complete: all 3 planned shards" in markdown and card["thresholds"]["sha256"] in markdown
    result = verify(tmp_path / "card.json", scanned)
    assert result.exit_code == 0 and "matches" in result.output, result.output
    assert verify(tmp_path / "card.md", scanned).exit_code == 0  # the Markdown's JSON beside it


def test_tampered_report_file_or_number_is_named(reports, tmp_path):
    make_card(reports, tmp_path / "card", "--threshold", "0.3")
    card_path = tmp_path / "card.json"
    assert verify(card_path, reports).exit_code == 0  # the recorded thresholds are re-applied
    stats = reports / "00001.stats.json"
    stats.write_text(stats.read_text() + " ")
    result = verify(card_path, reports)
    assert result.exit_code == 1 and "DIFFERS: file 00001.stats.json: SHA-256" in result.output
    assert "1 difference(s)" in result.output
    stats.write_text(stats.read_text()[:-1])
    card = json.loads(card_path.read_text())
    sexual = next(r for r in card["results"] if r["id"] == "sexual")
    sexual["flagged"] += 1
    card["audited"]["samples"] = 62
    card_path.write_text(json.dumps(card))
    result = verify(card_path, reports)
    assert result.exit_code == 1
    assert f"results[sexual].flagged: {sexual['flagged']} in the card, {sexual['flagged'] - 1} from" in result.output
    assert "audited.samples: 62 in the card, 63 from the reports" in result.output


def test_removed_and_added_files_are_named(reports, tmp_path):
    make_card(reports, tmp_path / "card")
    (reports / "00002.parquet").unlink()
    (reports / "00002.stats.json").unlink()
    (reports / "notes.txt").write_text("hi")
    result = verify(tmp_path / "card.json", reports)
    assert result.exit_code == 1
    assert "file 00002.parquet: listed in the card, not in the reports" in result.output
    assert "file notes.txt: in the reports, not listed in the card" in result.output
    assert "audited.complete: True in the card, False from the reports" in result.output
    assert "audited.samples: 63 in the card, 40" in result.output


def test_card_of_an_incomplete_run(reports, tmp_path):
    (reports / "00002.parquet").unlink()
    (reports / "00002.stats.json").unlink()
    card, markdown = make_card(reports, tmp_path / "card")
    assert card["audited"]["complete"] is False and card["audited"]["incomplete"]["missing_shards"] == ["00002"]
    assert "INCOMPLETE run" in markdown and "00002" in markdown
    assert verify(tmp_path / "card.json", reports).exit_code == 0


def test_unreadable_card_or_reports_exit_2(reports, tmp_path):
    assert verify(tmp_path / "nope.json", reports).exit_code == 2
    (tmp_path / "junk.json").write_text("{not json")
    result = verify(tmp_path / "junk.json", reports)
    assert result.exit_code == 2 and "not valid JSON" in result.output
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    assert "not a vlmaudit audit card" in verify(tmp_path / "other.json", reports).output
    make_card(reports, tmp_path / "card")
    result = verify(tmp_path / "card.json", tmp_path / "missing-dir")
    assert result.exit_code == 2 and "not a directory" in result.output


def test_unscored_categories_are_na_and_known_matches_counted(reports, tmp_path):
    run = json.loads((reports / "run.json").read_text())
    run["coverage"] = {"model": run["model"], "level": "category", "categories": ["sexual"], "concepts": [],
                       "modalities": ["image"]}
    (reports / "run.json").write_text(json.dumps(run))
    (reports / "matches").mkdir()
    rows = {"key": ["a", "a", "b"], "shard": ["00000", "00000", "00001"], "url": [None] * 3,
            "bank": ["csam-hashes", "csam-hashes", "ncii"], "bank_entry_id": ["1", "2", "3"],
            "distance": pa.array([0, 4, 0], pa.int16()), "kind": ["pdq", "pdq", "md5"]}
    pq.write_table(pa.table(rows), reports / "matches" / "matches.parquet")
    card, markdown = make_card(reports, tmp_path / "card")
    by_id = {r["id"]: r for r in card["results"]}
    assert by_id["sexual"]["scored"] is True and by_id["sexual"]["flagged"] is not None
    assert by_id["hate"] == {"id": "hate", "name": "Hate", "scored": False, "flagged": None, "rate": None,
                             "estimate": None}
    hate_line = next(line for line in markdown.splitlines() if line.startswith("| Hate |"))
    assert "n/a - not scored by" in hate_line and "0" not in hate_line.replace(run["model"].replace("_", "\\_"), "")
    assert card["known_matches"] == {"csam-hashes": {"matches": 2, "samples": 1}, "ncii": {"matches": 1, "samples": 1}}
    assert "matches/matches.parquet" in card["files"] and "csam-hashes: 2 matches, 1 samples" in markdown
    assert verify(tmp_path / "card.json", reports).exit_code == 0
    rows["bank"][2] = "csam-hashes"
    pq.write_table(pa.table(rows), reports / "matches" / "matches.parquet")
    result = verify(tmp_path / "card.json", reports)
    assert result.exit_code == 1 and "known_matches.ncii" in result.output and "file matches/matches.parquet" in result.output


def test_card_with_labels_carries_the_estimates(reports, tmp_path):
    review = draw_review(reports, tmp_path / "review")
    rows = label_sheet(review, lambda r: "sexual" if every_third(r) else "safe")
    card, markdown = make_card(reports, tmp_path / "card", "--labels", review)
    estimate = json.loads(run_cli("estimate", reports, "--labels", review, "--json").output)
    sexual = next(c for c in estimate["categories"] if c["id"] == "sexual")["prevalence"]
    entry = next(r for r in card["results"] if r["id"] == "sexual")["estimate"]
    assert entry["estimate"] == sexual["estimate"] and entry["low"] == sexual["low"] and entry["high"] == sexual["high"]
    assert f"{sexual['estimate']:.2%} ({sexual['low']:.2%} - {sexual['high']:.2%}; 24 labels)" in markdown
    assert card["estimate"]["labels_sha256"] == sha(review / "review.csv")
    assert verify(tmp_path / "card.json", reports, "--labels", review).exit_code == 0
    unchecked = verify(tmp_path / "card.json", reports)
    assert unchecked.exit_code == 0 and "not re-checked" in unchecked.output
    rows[0]["labels"] = "safe" if rows[0]["labels"] == "sexual" else "sexual"
    write_sheet(review, rows)
    result = verify(tmp_path / "card.json", reports, "--labels", review)
    assert result.exit_code == 1 and "results[sexual].estimate" in result.output


def test_card_written_inside_the_report_dir_leaves_itself_out(reports):
    card, _ = make_card(reports, reports / "audit-card")
    assert "audit-card.json" not in card["files"] and "audit-card.md" not in card["files"]
    assert verify(reports / "audit-card.json", reports).exit_code == 0
    assert run_cli("report", reports, "--json").exit_code == 0  # the card does not disturb the reports
