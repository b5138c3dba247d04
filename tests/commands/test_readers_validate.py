"""`sample`, `estimate` and `match` refuse a damaged report as `report`'s row path does (same
validation: footers, stats, types, ranges, NaN): one `error:` line naming the file, exit 2, before
any row is used or anything written."""

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import draw_review, label_sheet, run_cli
from vlmaudit.schema import META_KEY

SHARD = "00000"


@pytest.fixture(scope="module")
def good(tmp_path_factory, demo_scan):
    """A labelled review sheet of the demo scan, and a SHA-256 bank."""
    root = tmp_path_factory.mktemp("readers-validate")
    reports = demo_scan.reports
    review = draw_review(reports, root / "review", "--size", 10)
    label_sheet(review, lambda r: "safe")
    bank = root / "bank.txt"
    bank.write_text("0" * 64 + "\n")
    assert run_cli("estimate", reports, "--labels", review, "--json").exit_code == 0
    assert run_cli("match", reports, "--bank", f"sha256:{bank}", "--out", root / "m", "-q").exit_code == 0
    return review, bank


def rewrite(d, change, statistics=True, meta=None):
    path = d / f"{SHARD}.parquet"
    table = pq.read_table(path)
    meta = meta or table.schema.metadata[META_KEY]
    pq.write_table(change(table).replace_schema_metadata({META_KEY: meta}), path, write_statistics=statistics)


def first_score(value):
    def change(table):
        rows = [list(r) if r is not None else None for r in table.column("image_scores").to_pylist()]
        first = next(i for i, r in enumerate(rows) if r is not None)
        rows[first][0] = value
        i = table.schema.get_field_index("image_scores")
        return table.set_column(i, "image_scores", pa.array(rows, table.schema.field(i).type))
    return change


def short_lists(table):
    i = table.schema.get_field_index("image_scores")
    rows = [None if r is None else r[:-1] for r in table.column(i).to_pylist()]
    return table.set_column(i, "image_scores", pa.array(rows, table.schema.field(i).type))


def edit_stats(d, change):
    path = d / f"{SHARD}.stats.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


DAMAGED = [
    ("NaN score", lambda d: rewrite(d, first_score(math.nan)), "NaN"),
    ("no statistics, score above 1", lambda d: rewrite(d, first_score(1.5), statistics=False), "outside [0, 1]"),
    ("no statistics, NaN score", lambda d: rewrite(d, first_score(math.nan), statistics=False), "NaN"),
    ("score lists too short", lambda d: rewrite(d, short_lists), "score lists"),
    ("status an int", lambda d: rewrite(d, lambda t: t.set_column(
        t.schema.get_field_index("status"), "status", pa.array(range(t.num_rows), pa.int64()))), "'status' has type"),
    ("stats status unknown", lambda d: edit_stats(d, lambda s: {**s, "status": "rm -rf /"}), "is not one of"),
    ("stats missing", lambda d: (d / f"{SHARD}.stats.json").unlink(), "never finished"),
    ("metadata not JSON", lambda d: rewrite(d, lambda t: t, meta=b"{nope"), "not valid JSON"),
]


@pytest.mark.parametrize("case, damage, message", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_sample_estimate_match_refuse_a_damaged_report_like_report(good, scanned_copy, tmp_path, case, damage, message):
    review, bank = good
    d = scanned_copy
    damage(d)
    runs = [("sample", d, "--size", "4", "--out", tmp_path / "s"),
            ("estimate", d, "--labels", review, "--json"),
            ("match", d, "--bank", f"sha256:{bank}", "--out", tmp_path / "m", "-q")]
    for args in runs:
        result = run_cli(*args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, (case, args[0], result.output)
        assert lines[-1].startswith("error: ") and message in lines[-1], (case, args[0], result.output)
        assert f"{SHARD}" in lines[-1] and "Traceback" not in result.output, (case, args[0], result.output)
    assert not (tmp_path / "s").exists() and not (tmp_path / "m" / "matches.parquet").exists()
