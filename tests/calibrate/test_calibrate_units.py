"""calibrate's parts on hand-computed cases: the precision/recall curve with tied scores, the threshold
choice at its edges (precision equal to the target, exactly min_flagged samples, nothing reachable),
the labels file (spellings, shard column, budgets, one-line errors) and the labelled report rows."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, write_planted_report


def test_curve_has_one_point_per_distinct_score_with_ties_counted_together():
    from vlmaudit.calibrate.choose import curve

    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.5])
    labels = np.array([False, True, True, False, False])
    thresholds, precision, recall, flagged = curve(scores, labels)
    assert thresholds.tolist() == [0.9, 0.5, 0.2]
    assert flagged.tolist() == [2, 4, 5]
    assert precision.tolist() == pytest.approx([1 / 2, 2 / 4, 2 / 5])
    assert recall.tolist() == pytest.approx([1 / 2, 1, 1])


def test_curve_recall_with_a_single_positive():
    from vlmaudit.calibrate.choose import curve

    thresholds, precision, recall, flagged = curve(np.array([0.8, 0.4]), np.array([True, False]))
    assert recall.tolist() == [1.0, 1.0] and precision.tolist() == [1.0, 0.5] and flagged.tolist() == [1, 2]


def test_choose_without_positives_says_so():
    from vlmaudit.calibrate.choose import Choice, choose

    assert choose(np.array([0.9, 0.5, 0.1]), np.zeros(3, bool), 0.5) == Choice(None, None, None, 0, 0, 3, None)


def test_choose_one_positive_flagged_alone_reaches_full_precision():
    from vlmaudit.calibrate.choose import Choice, choose

    got = choose(np.array([0.9, 0.3, 0.1]), np.array([True, False, False]), 1.0)
    assert got == Choice(0.9, 1.0, 1.0, 1, 1, 2, 1.0)


def test_choose_takes_the_lowest_threshold_whose_precision_equals_the_target():
    from vlmaudit.calibrate.choose import Choice, choose

    # points: 0.9 p=1, 0.8 p=1/2, 0.7 p=2/3, 0.6 p=1/2 (exactly the target): the lowest wins
    got = choose(np.array([0.9, 0.8, 0.7, 0.6, np.nan]), np.array([True, False, True, False, True]), 0.5)
    assert got == Choice(0.6, 0.5, 1.0, 4, 2, 2, 1.0)


def test_choose_accepts_exactly_min_flagged_samples():
    from vlmaudit.calibrate.choose import Choice, choose

    scores, labels = np.array([0.9, 0.8, 0.1]), np.array([True, True, False])
    assert choose(scores, labels, 1.0, min_flagged=2) == Choice(0.8, 1.0, 1.0, 2, 2, 1, 1.0)
    # only the point flagging all three counts: 2/3 is the best precision on offer, below the target
    assert choose(scores, labels, 1.0, min_flagged=3) == Choice(None, None, None, 0, 2, 1, pytest.approx(2 / 3))
    assert choose(scores, labels, 1.0, min_flagged=4) == Choice(None, None, None, 0, 2, 1, None)


def _labels_csv(path, text):
    path.write_text(text)
    return path


def _ids():
    from vlmaudit.rulebook.load import load_rules

    categories = load_rules().taxonomy.categories
    return [c.id for c in categories], [c.name for c in categories]


def test_labels_accept_ids_and_names_in_any_case_and_keep_keys_as_written(tmp_path):
    from vlmaudit.calibrate.labels import load_labels

    path = _labels_csv(tmp_path / "l.csv", "key,category,label,shard\n"
                                           "000123,Illegal-Activity,Yes,s1\n0042,ILLEGAL ACTIVITY,safe,s2\n")
    labels = load_labels(path, "category", *_ids())
    assert labels.per == "category" and labels.keys.tolist() == ["000123", "0042"]
    assert labels.targets.tolist() == ["illegal-activity", "illegal-activity"]
    assert labels.values.tolist() == [True, False] and labels.shards.tolist() == ["s1", "s2"]
    assert load_labels(_labels_csv(tmp_path / "n.csv", "key,category,label\nk,hate,1\n"), "category", *_ids()).shards is None


def test_labels_from_parquet(tmp_path):
    from vlmaudit.calibrate.labels import load_labels

    pq.write_table(pa.table({"key": ["a", "b"], "category": ["hate", "Violence"], "label": ["1", "unsafe"]}),
                   tmp_path / "l.parquet")
    labels = load_labels(tmp_path / "l.parquet", "category", *_ids())
    assert labels.keys.tolist() == ["a", "b"] and labels.targets.tolist() == ["hate", "violence"]
    assert labels.values.tolist() == [True, True]


@pytest.mark.parametrize("text, message", [
    ("key,category,label\nk1,hate,1\nk2,hate,\n", "l.csv row 2: label '' is not 1/0"),
    ("key,category,label\nk1,hate,1\nk2,hate," + "x" * 60 + "\n", f"l.csv row 2: label '{'x' * 40}' is not"),
    ("key,category,label\nk1,hate,1\nk2," + "y" * 100 + ",1\n", f"l.csv row 2: unknown category '{'y' * 80}'\n"),
    ("key,category," + ",".join(f"c{i}" for i in range(10)) + "\n",
     "l.csv: no 'label' column (need key, category, label; have key, category, c0, c1, c2, c3, c4, c5, c6, c7)\n"),
])
def test_bad_labels_name_the_file_row_and_value(tmp_path, text, message):
    from vlmaudit.calibrate.labels import load_labels
    from vlmaudit.errors import UserError

    with pytest.raises(UserError) as info:
        load_labels(_labels_csv(tmp_path / "l.csv", text), "category", *_ids())
    assert message in str(info.value) + "\n"


def test_unreadable_labels_are_one_line_errors_naming_the_format(tmp_path):
    from vlmaudit.calibrate.labels import load_labels
    from vlmaudit.errors import UserError

    (tmp_path / "l.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match=r"l.parquet: cannot read it as Parquet \(.*magic bytes"):
        load_labels(tmp_path / "l.parquet", "category", *_ids())
    long_name = tmp_path / ("n" * 150 + ".parquet")  # pyarrow's message quotes the path: cut at 200 characters
    long_name.write_bytes(b"PAR1" + b"x" * 100 + b"PAR1")
    with pytest.raises(UserError) as info:
        load_labels(long_name, "category", *_ids())
    assert len(str(info.value).split("cannot read it as Parquet (", 1)[1]) == 201 and str(info.value).endswith(")")
    path = _labels_csv(tmp_path / "l.csv", "key,category,label\n" + "k,hate,1,extra   field\n")
    with pytest.raises(UserError) as info:
        load_labels(path, "category", *_ids())
    assert "cannot read it as CSV (CSV parse error: Expected 3 columns, got 4: k,hate,1,extra field)" in str(info.value)
    with pytest.raises(UserError, match=r"nope.csv: no such file"):
        load_labels(tmp_path / "nope.csv", "category", *_ids())


def test_labels_budgets_bytes_and_rows(tmp_path, monkeypatch):
    from vlmaudit.calibrate import labels as module
    from vlmaudit.errors import UserError

    row = "k,hate,1\n"
    text = "key,category,label\n" + row * 3
    path = _labels_csv(tmp_path / "l.csv", text)
    monkeypatch.setattr(module, "MAX_BYTES", len(text))
    monkeypatch.setattr(module, "MAX_ROWS", 3)
    assert len(module.load_labels(path, "category", *_ids()).keys) == 3  # exactly at both limits
    path.write_text(text + row)
    with pytest.raises(UserError, match="l.csv: larger than 0 MiB"):
        module.load_labels(path, "category", *_ids())
    monkeypatch.setattr(module, "MAX_BYTES", 2 << 20)
    with pytest.raises(UserError, match="l.csv: more than 3 rows"):
        module.load_labels(path, "category", *_ids())
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * ((2 << 20) + 1))
    with pytest.raises(UserError, match="big.csv: larger than 2 MiB"):
        module.load_labels(big, "category", *_ids())


def _report(tmp_path, shards: dict[str, list[str]]):
    """A report directory with one shard per entry (shard -> keys); scores of row i are i/100."""
    from vlmaudit.rulebook.load import load_rules

    n_concepts = len(load_rules().taxonomy.concepts)
    for shard, keys in shards.items():
        image = np.tile(np.arange(len(keys), dtype=np.float32)[:, None] / 100, (1, n_concepts))
        write_planted_report(tmp_path / "rep", image, image / 2, keys=keys, shard=shard)
    files = sorted((tmp_path / "rep").glob("*.parquet"))
    return files, {"concepts": [c.id for c in load_rules().taxonomy.concepts]}


def _keyed(keys, shards=None):
    from vlmaudit.calibrate.labels import Labels

    n = len(keys)
    return Labels("category", np.array(keys, object), np.array(["hate"] * n, object), np.ones(n, bool),
                  None if shards is None else np.array(shards, object))


def test_labelled_rows_match_by_shard_and_key(tmp_path):
    from vlmaudit.calibrate.scores import labelled_rows

    files, meta = _report(tmp_path, {"00000": ["a", "b"], "00001": ["a", "c"]})
    rows, image, caption = labelled_rows(_keyed(["a", "c", "a", "zz"], ["00001", "00001", "00000", "00000"]), meta, files)
    assert rows.dtype == np.int64
    assert image[rows[:3], 0].tolist() == pytest.approx([0.0, 0.01, 0.0])
    assert rows[3] == -1 and rows[0] != rows[2]
    assert caption[rows[1], 0] == pytest.approx(0.005)


def test_labelled_rows_by_key_alone_while_each_key_is_in_one_shard(tmp_path):
    from vlmaudit.calibrate.scores import labelled_rows
    from vlmaudit.errors import UserError

    files, meta = _report(tmp_path, {"00000": ["x"], "00001": ["y", "b", "c"], "00002": ["a"]})
    rows, image, _ = labelled_rows(_keyed(["c", "missing", "x", "b"]), meta, files)
    assert rows[1] == -1 and image[rows[[0, 2, 3]], 0].tolist() == pytest.approx([0.02, 0.0, 0.01])
    files, meta = _report(tmp_path, {"00003": ["a"], "00004": ["a", "c"], "00005": ["a"]})
    with pytest.raises(UserError) as info:
        labelled_rows(_keyed(["a"]), meta, files)
    assert str(info.value) == ("--labels: key a is in 4 shards (00002, 00003, 00004); add a `shard` column to the "
                               "labels so each label names its sample")
    with pytest.raises(UserError, match=r"key c is in 2 shards \(00001, 00004\)"):
        labelled_rows(_keyed(["c"]), meta, files)


def test_labelled_scores_of_keys_not_in_the_report_are_empty(tmp_path):
    from vlmaudit.calibrate.scores import labelled_scores

    files, meta = _report(tmp_path, {"00000": ["a", "b"]})
    found, image, caption = labelled_scores(np.array(["nope"], object), meta, files)
    assert found == {} and image.shape == caption.shape == (0, len(meta["concepts"]))


def test_group_scores_of_both_modalities_take_the_higher(tmp_path):
    from vlmaudit.calibrate.scores import group_scores

    image = np.array([[0.1, 0.2, 0.9], [np.nan, np.nan, np.nan], [np.nan, np.nan, np.nan], [0.7, 0.1, 0.0]], np.float32)
    caption = np.array([[0.3, 0.1, 0.0], [0.4, 0.6, 0.0], [np.nan, np.nan, np.nan], [0.2, 0.2, 0.9]], np.float32)
    members = np.array([True, True, False])
    assert group_scores(image, caption, members, "both").tolist() == pytest.approx([0.3, 0.6, np.nan, 0.7], nan_ok=True)
    assert group_scores(image, caption, members, "image").tolist() == pytest.approx([0.2, np.nan, np.nan, 0.7], nan_ok=True)


def test_calibrate_with_an_empty_labels_file(tmp_path):
    import json

    _report(tmp_path, {"00000": ["a", "b"]})
    labels = _labels_csv(tmp_path / "l.csv", "key,category,label\n")
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", "0.9", "--out",
                     tmp_path / "t.yaml", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["labels"] == 0 and json.loads(result.output)["groups"] == []


def test_calibrate_with_labels_that_match_no_report_row(tmp_path):
    import json

    _report(tmp_path, {"00000": ["a", "b"]})
    labels = _labels_csv(tmp_path / "l.csv", "key,category,label\nq,hate,1\nr,hate,0\n")
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", "0.9", "--out",
                     tmp_path / "t.yaml", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["labels"] == 2 and summary["labels_without_report_row"] == 2
    assert summary["groups"] == [{"id": "hate", "threshold": None, "precision": None, "recall": None, "flagged": 0,
                                  "positives": 0, "negatives": 0, "best_precision": None}]
