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
