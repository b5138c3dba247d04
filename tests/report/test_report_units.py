"""Unit tests of the report engine's pieces against hand-written expectations (found by mutation
testing: behaviour that the end-to-end summary tests never reach)."""

import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def score_file(path, image, caption):
    """A report file holding only the two score-list columns (float32 lists, None = not scored)."""
    kind = pa.list_(pa.float32())
    pq.write_table(pa.table({"image_scores": pa.array(image, kind), "caption_scores": pa.array(caption, kind)}), path)
    return path


def test_connection_never_loads_extensions_nor_draws_a_progress_bar():
    from vlmaudit.report import engine

    con = engine.connect()
    try:
        row = con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                          "current_setting('autoload_known_extensions'), current_setting('enable_progress_bar'), "
                          "current_setting('threads')").fetchone()
    finally:
        con.close()
    assert row[:3] == (False, False, False) and 1 <= row[3] <= 16


def test_scores_at_exactly_0_and_1_and_unscored_rows_pass_the_score_check(tmp_path):
    from vlmaudit.report import engine

    path = score_file(tmp_path / "ok.parquet", [[0.0, 1.0], None, [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0], None])
    con = engine.connect()
    try:
        engine.check_scores(con, [path], 2)  # no error
    finally:
        con.close()


above = float(np.nextafter(np.float32(1), np.float32(2)))
below = float(np.nextafter(np.float32(0), np.float32(-1)))


@pytest.mark.parametrize("image, caption", [
    ([[0.5, above]], [[0.5, 0.5]]),  # one float32 step above 1
    ([[0.5, 0.5]], [[below, 0.5]]),  # one step below 0, caption side
    ([[math.nan, 0.5]], [None]),
    ([[0.5, 0.5]], [[math.inf, 0.5]]),
    ([[0.5]], [[0.5, 0.5]]),  # another length
    ([None], [[0.5, 0.5, 0.5]]),
])
def test_score_check_names_the_file_with_a_bad_list(tmp_path, image, caption):
    from vlmaudit.report import engine
    from vlmaudit.report.reading import BadScores

    good = score_file(tmp_path / "a.parquet", [[0.2, 0.3]], [[0.4, 1.0]])
    bad = score_file(tmp_path / "b.parquet", image, caption)
    con = engine.connect()
    try:
        with pytest.raises(BadScores, match=r"b\.parquet: holds score lists"):
            engine.check_scores(con, [good, bad], 2)
    finally:
        con.close()


def test_detail_histograms_put_each_score_in_the_documented_bin_and_skip_unscored_rows():
    from vlmaudit.report.counts import BINS
    from vlmaudit.report.details import DetailAccumulator

    image = [0.0, 0.0004, 0.001, 0.5, 0.9999, 1.0, None]  # bin b holds [b / 1000, (b + 1) / 1000); 1.0 in the last
    caption = [None, None, None, None, None, None, 0.25]
    acc = DetailAccumulator([3])
    acc.add(pa.record_batch({"i3": pa.array(image, pa.float32()), "c3": pa.array(caption, pa.float32())}))
    detail = acc.details()[3]
    expected = np.zeros(BINS, np.int64)
    for b in (0, 0, 1, 500, 999, 999):
        expected[b] += 1
    assert detail.hist_image.tolist() == expected.tolist()
    assert np.flatnonzero(detail.hist_caption).tolist() == [250] and detail.hist_caption.sum() == 1
    assert detail.mean_image == round((0.0004 + 0.001 + 0.5 + 0.9999 + 1.0) / 6, 4) and detail.mean_caption == 0.25


def test_a_missing_report_dir_is_empty_where_allowed_and_refused_elsewhere_locally_and_remotely(tmp_path):
    """missing_ok: the re-read of shards (galleries, thumbnails) takes a report directory that is not
    there as one without recorded sources; listing one for a summary is refused. Remote listings
    (fsspec's memory filesystem here) follow the same rule."""
    from vlmaudit.errors import UserError
    from vlmaudit.report.reading import ReportDir
    from vlmaudit.report.reread import ReReadOptions, shard_sources

    for missing in (tmp_path / "gone", f"memory://vlmaudit-missing-{tmp_path.name}"):
        assert shard_sources(missing, ["a"], ReReadOptions()) == ({}, {"a": "no source recorded"})
        assert ReportDir(missing, missing_ok=True).entries == {}
        with pytest.raises(UserError, match="not a directory"):
            ReportDir(missing)
    from vlmaudit.report import reading

    gone = tmp_path / "gone"  # the path readers: stats and run info of nothing are empty; report files are refused
    assert reading.read_stats(gone) == {} and reading.read_run_file(gone) == {}
    with pytest.raises(UserError, match=f"^{re.escape(str(gone))}: not a directory$"):
        reading.report_files(gone)


def test_histogram_counts_from_65536_up_are_stored_in_four_bytes():
    """A shard's hist.bin stores bin counts in two bytes while they fit: 65,535 does, 65,536 does not
    (it would wrap to 0). Both read back exactly."""
    from vlmaudit.report.shard_hists import HistBuilder, HistFile

    for n, width in ((65535, 2), (65536, 4)):
        builder = HistBuilder([0, 0, 1], 2)
        scores = pa.array([[0.5, None, 0.25]] * n, pa.list_(pa.float32()))
        builder.add(pa.record_batch({"shard": pa.array(["s"] * n), "sample_index": pa.array(range(n), pa.int64()),
                                     "image_scores": scores, "caption_scores": pa.array([None] * n, scores.type)}))
        data = builder.encode()
        hist = HistFile(data, "x.hist.bin", 3, 2)
        assert hist.dtype == f"<u{width}"
        image, caption = hist.concept(0)
        assert image[500] == n and image.sum() == n and caption.sum() == 0
        assert hist.concept(2)[0][250] == n and hist.concept(1).sum() == 0


def test_examples_skip_a_candidate_row_not_found_again_and_keep_the_rest():
    """A candidate whose row is not found again (its shard column differs from its file name) is
    skipped; the candidates after it still become examples, best first."""
    from vlmaudit.report.summary_dict import _ranked

    def row(key, image, caption):
        return {"image_scores": image, "caption_scores": caption, "key": key, "url": f"http://x/{key}", "caption": key}

    rows = {("s", 2): row("k2", [0.1, 0.7], [0.2, 0.9]), ("s", 3): row("k3", None, [0.1, 0.95])}
    items = _ranked(1, [("s", 1), ("s", 2), ("s", 3)], rows, keep=5)
    assert [(i["key"], i["score"], i["modality"]) for i in items] == [("k3", 0.95, "caption"), ("k2", 0.9, "caption")]
    assert [i["key"] for i in _ranked(1, [("s", 1), ("s", 2), ("s", 3)], rows, keep=1)] == ["k3"]


def test_each_recorded_source_is_opened_or_refused_with_its_reason(tmp_path):
    """The gallery / thumbnail re-read: what a report's recorded shard URL may open, and the one
    reason given for each it may not."""
    from vlmaudit.report.reread import recorded_source_problem
    from vlmaudit.scan.folder_source import folder_shard_url

    shard = tmp_path / "00000.tar"
    shard.write_bytes(b"")
    cases = [(None, "no source recorded"), ("", "no source recorded"), (7, "no source recorded"),
             (folder_shard_url(str(tmp_path), 0, 2, ["a", "b"]), None),
             (folder_shard_url(str(tmp_path / "gone"), 0, 2, ["a", "b"]), "recorded image folder is not a local directory"),
             ("pipe:curl -s http://x/0.tar", "recorded source is a pipe: command; never run from a report "
                                             "(name the shards with --shards)"),
             ("gs://bucket/0.tar", "recorded source uses gs://; allow it with --allow-scheme gs or name the shards "
                                   "with --shards"),
             ("s3://bucket/0.tar", None), ("S3://bucket/0.tar", None), ("hf://datasets/x/0.tar", "recorded source uses hf://; allow it with "
                                                                    "--allow-scheme hf or name the shards with --shards"),
             (str(tmp_path / "gone.tar"), "recorded source is not a regular local file (name the shards with --shards)"),
             (str(tmp_path), "recorded source is not a regular local file (name the shards with --shards)"),
             (str(shard), None)]
    for url, reason in cases:
        assert recorded_source_problem(url, ["S3"]) == reason, url


def test_a_report_whose_shard_and_status_columns_cannot_be_read_is_damaged():
    from vlmaudit.report.reading import DamagedReport, _check_columns_read

    class Unreadable:  # a Parquet file whose column pages fail to decode
        def read(self, columns, use_threads):
            assert columns == ["shard", "status"]
            raise OSError("Corrupt snappy\n compressed   data")

    with pytest.raises(DamagedReport) as raised:
        _check_columns_read("r/00001.parquet", Unreadable())
    assert str(raised.value) == "r/00001.parquet: cannot read its shard and status columns: Corrupt snappy compressed data"


def test_a_stats_file_is_checked_field_by_field():
    from vlmaudit.report.reading import DamagedReport, check_stats

    good = {"status": "complete", "url": "s.tar", "started_at": 1.0, "finished_at": 2, "judged": 0, "rows": 3}
    assert check_stats("s.stats.json", dict(good)) == good
    assert check_stats("s.stats.json", {"status": "failed", "url": None}) == {"status": "failed", "url": None}
    bad = [([], "expected a JSON object"), (good | {"url": 3}, "url must be a string"),
           (good | {"status": "done"}, "status 'done' is not one of ")]
    for key in ("started_at", "finished_at", "judged", "rows"):
        bad += [(good | {key: value}, f"{key} must be a finite number") for value in ("1", True, float("nan"), float("inf"))]
    bad += [({k: v for k, v in good.items() if k != "finished_at"}, "has only one of started_at / finished_at")]
    for stats, message in bad:
        with pytest.raises(DamagedReport, match="^s.stats.json: " + re.escape(message)):
            check_stats("s.stats.json", stats)


def test_a_shard_glob_that_matches_no_report_is_one_clear_error(scanned):
    from vlmaudit.errors import UserError
    from vlmaudit.report.reportset import ReportSet

    reports = ReportSet.open(scanned)
    assert [f.name for f in reports.select("0000[12]")] == ["00001.parquet", "00002.parquet"]
    assert reports.select(None) == reports.files
    with pytest.raises(UserError) as raised:
        reports.select("9*")
    assert str(raised.value) == "--shard '9*': no shard report matches"
