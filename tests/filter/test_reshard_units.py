"""filter --write-shards on tar shards, at the unit (filter.reshard.write_shard): kept samples copied
byte for byte, the others passed over; every mismatch, special member and member over the size limit
counted; the img2dataset-style Parquet beside it holds key, url and sample_index only."""

import hashlib
import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BIG = b"t" * 300  # over max_member_bytes=100 below


def write_shard(path, samples):
    """samples: [(key, [(ext, bytes)])], in this order; a `cont` member is a contiguous file (read
    as a file by the tar reader, never copied)."""
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                if ext == "cont":
                    info.type = tarfile.CONTTYPE
                tf.addfile(info, io.BytesIO(data))
    return str(path)


SAMPLES = [
    ("a", [("jpg", b"img-a"), ("txt", b"cap-a")]),
    ("b", [("jpg", b"img-b")]),
    ("c", [("jpg", b"img-c"), ("txt", b"cap-c")]),
    ("d", [("jpg", b"img-d"), ("txt", BIG)]),
    ("e", [("jpg", b"img-e"), ("cont", b"special")]),
    ("f", [("jpg", b"img-f"), ("txt", b"cap-f")]),
    ("g", [("jpg", b"img-g"), ("cont", b"special"), ("txt", BIG)]),
]


def members(path):
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def test_kept_samples_are_copied_byte_for_byte_and_the_rest_passed_over(tmp_path):
    from vlmaudit.filter.matching import Damage, Kept
    from vlmaudit.filter.reshard import write_shard as rewrite

    url = write_shard(tmp_path / "in.tar", SAMPLES)
    kept = Kept({0: "a", 3: "d", 5: "f"}, {5: hashlib.sha256(b"img-f").digest()})
    target = tmp_path / "out" / "in.tar"
    target.parent.mkdir()
    assert rewrite(url, kept, target, 100) == (3, 1, Damage())
    assert members(target) == [("a.jpg", b"img-a"), ("a.txt", b"cap-a"), ("d.jpg", b"img-d"), ("f.jpg", b"img-f"),
                               ("f.txt", b"cap-f")]
    assert sorted(p.name for p in target.parent.iterdir()) == ["in.tar"]


def test_every_mismatch_special_and_oversized_member_is_counted_and_nothing_written(tmp_path):
    from vlmaudit.filter.matching import Damage, Kept
    from vlmaudit.filter.reshard import write_shard as rewrite

    url = write_shard(tmp_path / "in.tar", SAMPLES)
    kept = Kept({0: "a", 1: "someone-else", 2: "zzz", 3: "d", 4: "e", 5: "f", 6: "g", 9: "gone"},
                {5: hashlib.sha256(b"other bytes").digest()})
    target = tmp_path / "out" / "in.tar"
    target.parent.mkdir()
    written, skipped, damage = rewrite(url, kept, target, 100)
    assert (written, skipped) == (4, 2)  # a, d, e, g; the big members of d and g
    assert damage == Damage(mismatched=3, missing=1, non_regular=2)
    assert list(target.parent.iterdir()) == []


def test_damage_description_names_the_source_only_when_rows_are_missing():
    from vlmaudit.filter.matching import Damage

    assert Damage(mismatched=1, source_error="EOFError").describe() == "1 differ from the scanned sample (key or image digest)"
    assert Damage(missing=2, source_error="EOFError").describe() == "2 missing, source damaged: EOFError"


def test_kept_parquet_holds_key_url_and_index_of_its_shard_only(tmp_path):
    from vlmaudit.filter.reshard import write_kept_parquet

    keep = tmp_path / "keep.parquet"
    pq.write_table(pa.table({"shard": ["s1", "s2", "s1"], "key": ["a", "b", "c"], "sample_index": [0, 0, 4],
                             "url": ["u0", None, "u4"], "action": ["keep"] * 3}), keep)
    write_kept_parquet(keep, "s1", tmp_path / "s1.parquet")
    assert pq.read_table(tmp_path / "s1.parquet").to_pylist() == [{"key": "a", "url": "u0", "sample_index": 0},
                                                                   {"key": "c", "url": "u4", "sample_index": 4}]


def planted_shards(tmp_path, shards: dict, out="rep"):
    """A report directory: per shard name (tar samples or None for no source, status) a planted
    report whose rows are the tar's samples in order; stats record the tar as the source."""
    import json

    import numpy as np

    from conftest import write_planted_report
    from vlmaudit.rulebook.load import load_rules

    n_concepts = len(load_rules().taxonomy.concepts)
    for name, (samples, status, url) in shards.items():
        keys = [key for key, _ in samples] or ["unused"]
        scores = np.zeros((len(keys), n_concepts), np.float32)
        write_planted_report(tmp_path / out, scores, scores, keys=keys, shard=name)
        if url is None:
            url = write_shard(tmp_path / f"{name}.tar", samples)
        stats = {"status": status, "url": url, "rows": len(samples)}
        (tmp_path / out / f"{name}.stats.json").write_text(json.dumps(stats))
    return tmp_path / out


def keep_file(path, rows):
    pq.write_table(pa.table({"shard": [s for s, _, _ in rows], "key": [k for _, k, _ in rows],
                             "sample_index": [i for _, _, i in rows], "url": [None] * len(rows)}), path)
    return path


def test_write_filtered_shards_counts_and_reports_progress_per_shard(tmp_path, capsys):
    from vlmaudit.filter.reshard import write_filtered_shards
    from vlmaudit.progress import ProgressOptions
    from vlmaudit.report.reread import ReReadOptions

    s0 = [("a", [("jpg", b"img-a"), ("txt", BIG)]), ("b", [("jpg", b"img-b"), ("cont", b"x")]), ("c", [("jpg", b"c")])]
    s1 = [("d", [("jpg", b"img-d"), ("txt", BIG), ("cont", b"y")])]
    report = planted_shards(tmp_path, {"s0": (s0, "complete", None), "s1": (s1, "truncated", None),
                                       "s2": ([], "complete", None), "s3": (s0, "failed", None)})
    keep = keep_file(tmp_path / "keep.parquet", [("s0", "a", 0), ("s0", "b", 1), ("s1", "d", 0)])
    out = tmp_path / "kept" / "deeper"
    result = write_filtered_shards(report, keep, out, ReReadOptions(max_member_bytes=100),
                                   ProgressOptions(quiet=False, every=1e9))
    assert result == {"samples": {"s0": 2, "s1": 1, "s2": 0}, "skipped_members": 2, "non_regular_members": 2}
    assert sorted(p.name for p in out.iterdir()) == ["s0.parquet", "s0.tar", "s1.parquet", "s1.tar", "s2.parquet",
                                                     "s2.tar"]
    lines = [line.split(", ") for line in capsys.readouterr().err.splitlines()]
    assert [[p for p in line if not p.endswith(("samples/s", ")")) and not p.startswith("ETA")] for line in lines] == [
        ["write-shards: shards 1/3", "samples 3/4", "written 2"],
        ["write-shards: shards 2/3", "samples 4/4", "written 3"],
        ["write-shards: shards 3/3", "samples 4/4", "written 3"]]
    # the same directory again: written over, not refused
    assert write_filtered_shards(report, keep, out, ReReadOptions(max_member_bytes=100))["samples"]["s0"] == 2


def test_write_filtered_shards_refuses_what_it_will_not_re_read(tmp_path):
    import pytest

    from vlmaudit.errors import UserError
    from vlmaudit.filter.reshard import write_filtered_shards
    from vlmaudit.report.reread import ReReadOptions

    one = [("a", [("jpg", b"img-a")])]
    report = planted_shards(tmp_path, {f"n{i}": (one, "complete", "pipe:cat x") for i in range(4)})
    keep = keep_file(tmp_path / "keep.parquet", [("n0", "a", 0)])
    with pytest.raises(UserError) as info:
        write_filtered_shards(report, keep, tmp_path / "out", ReReadOptions())
    why = "recorded source is a pipe: command; never run from a report (name the shards with --shards)"
    assert str(info.value) == f"--write-shards: 4 shard(s) will not be re-read: n0: {why}; n1: {why}; n2: {why}"
    (tmp_path / "images").mkdir()
    report = planted_shards(tmp_path, {"f0": (one, "complete", f"folder:{tmp_path / 'images'}#0:1:abc"),
                                       "f1": (one, "complete", f"folder:{tmp_path / 'images'}#1:1:abd")}, out="rep2")
    with pytest.raises(UserError) as info:
        write_filtered_shards(report, keep, tmp_path / "out", ReReadOptions())
    assert str(info.value) == ("--write-shards: f0 was scanned from a loose image folder; only tar and Parquet/Arrow "
                               "shards are rewritten (the keep list names the kept files by key)")
    assert not (tmp_path / "out").exists()


def test_a_damaged_shard_is_named_and_counted_as_nothing_written(tmp_path, capsys):
    import pytest

    from vlmaudit.errors import UserError
    from vlmaudit.filter.reshard import write_filtered_shards
    from vlmaudit.progress import ProgressOptions
    from vlmaudit.report.reread import ReReadOptions

    report = planted_shards(tmp_path, {"s0": ([("a", [("jpg", b"img-a")])], "complete", None)})
    keep = keep_file(tmp_path / "keep.parquet", [("s0", "a", 0), ("s0", "zz", 3)])
    with pytest.raises(UserError, match=r"1 shard\(s\) not written, .*: s0: 1 missing \(name the scanned"):
        write_filtered_shards(report, keep, tmp_path / "out", ReReadOptions(), ProgressOptions(quiet=False, every=1e9))
    assert "written 0" in capsys.readouterr().err


def matched_inputs(tmp_path, match: int):
    """(report files, permissive policy with this match action, matches file): a planted three-row
    report with known-content matches for rows a (two banks) and c; row c also fires a drop rule."""
    import numpy as np

    from conftest import write_planted_report
    from vlmaudit.rulebook.load import find_rule_file, load_rules
    from vlmaudit.rulebook.policy import load_policy

    taxonomy = load_rules().taxonomy
    scores = np.zeros((3, len(taxonomy.concepts)), np.float32)
    scores[2] = 1.0
    write_planted_report(tmp_path / "rep", scores, scores, keys=["a", "b", "c"], shard="s0")
    pq.write_table(pa.table({"shard": ["s0", "s0", "s0", "zz"], "key": ["a", "a", "c", "b"],
                             "bank": ["bank2", "bank1", "bank3", "other"]}), tmp_path / "matches.parquet")
    policy = load_policy(find_rule_file("policies", "permissive"), taxonomy.concept_ids,
                         [c.category for c in taxonomy.concepts])
    policy.match = match
    return [tmp_path / "rep" / "s0.parquet"], policy, tmp_path / "matches.parquet"


def matched(tmp_path, match: int):
    """key -> (action, reasons) of the matched_inputs rows decided by the policy and the matches."""
    from vlmaudit.filter.lists import decided_sql, with_matches
    from vlmaudit.report import engine

    files, policy, matches = matched_inputs(tmp_path, match)
    sql = with_matches(decided_sql(policy, 0, files), policy, matches)
    with engine.session(files, "test") as con:
        return {k: (a, r) for k, a, r in con.execute(f"SELECT key, action, reasons FROM ({sql})").fetchall()}


def test_known_content_matches_raise_the_action_and_lead_the_reasons(tmp_path):
    rows = matched(tmp_path, match=1)  # review
    action, reasons = rows["a"]
    assert action == "review" and reasons == [{"rule": "bank:bank1", "action": "review", "modality": "image",
                                                "threshold": None, "image_score": None, "caption_score": None}]
    assert rows["b"] == ("keep", [])  # a match in another shard is not this sample
    action, reasons = rows["c"]
    assert action == "drop" and reasons[0]["rule"] == "bank:bank3" and len(reasons) > 1  # never lowered
    assert matched(tmp_path / "drop", match=2)["a"][0] == "drop"


def test_unfinished_shards_list_partial_files_but_not_truncated_shards(tmp_path):
    from vlmaudit.filter.lists import unfinished_shards

    info = {"complete": False, "incomplete": {"missing_shards": ["m"], "held_shards": [], "failed_shards": ["f"],
                                              "truncated": [{"shard": "t", "samples_read": 3}]}}
    (tmp_path / ".s1.parquet.partial").write_bytes(b"")
    (tmp_path / "s2.parquet").write_bytes(b"")
    assert unfinished_shards(info, tmp_path) == ["m (not scanned)", "f (failed)", ".s1.parquet.partial (unfinished)"]


def test_write_decisions_splits_by_action_and_counts_bank_matches(tmp_path):
    from vlmaudit.filter.lists import write_decisions

    files, policy, matches = matched_inputs(tmp_path, match=2)
    out = tmp_path / "out" / "lists"
    counts, fired = write_decisions(files, policy, 0, out, matches)
    assert counts == {"keep": 1, "review": 0, "drop": 2}
    assert fired["bank:bank1"] == 1 and fired["bank:bank3"] == 1 and "bank:bank2" not in fired
    assert sorted(p.name for p in out.iterdir()) == ["drop.parquet", "keep.parquet", "review.parquet"]
    assert sorted(pq.read_table(out / "drop.parquet").column("key").to_pylist()) == ["a", "c"]


@pytest.mark.parametrize("n, more", [(5, ""), (6, " and 1 more"), (7, " and 2 more")])
def test_more_than_five_damaged_shards_are_summed_up(tmp_path, n, more):

    from vlmaudit.errors import UserError
    from vlmaudit.filter.reshard import write_filtered_shards
    from vlmaudit.report.reread import ReReadOptions

    one = [("a", [("jpg", b"img-a")])]
    report = planted_shards(tmp_path, {f"s{i}": (one, "complete", None) for i in range(n)})
    keep = keep_file(tmp_path / "keep.parquet", [(f"s{i}", "gone", 5) for i in range(n)])
    with pytest.raises(UserError) as info:
        write_filtered_shards(report, keep, tmp_path / "out", ReReadOptions())
    shown = "; ".join(f"s{i}: 1 missing" for i in range(5))
    assert str(info.value) == (f"--write-shards: {n} shard(s) not written, the re-read data is not what was scanned: "
                               f"{shown}{more} (name the scanned shards with --shards)")


@pytest.mark.parametrize("n, more", [(10, ""), (11, " and 1 more"), (12, " and 2 more")])
def test_run_filter_names_ten_unfinished_shards_and_sums_up_the_rest(tmp_path, n, more):
    from vlmaudit.errors import UserError
    from vlmaudit.filter.lists import run_filter

    report = tmp_path / "rep"
    report.mkdir()
    for i in range(n):
        (report / f".s{i:02d}.parquet.partial").write_bytes(b"")
    with pytest.raises(UserError) as info:
        run_filter(report, None, tmp_path / "out", "keep", allow_partial=False)
    shown = ", ".join(f".s{i:02d}.parquet.partial (unfinished)" for i in range(10))
    assert str(info.value) == (f"{report}: {n} shard(s) have no finished report: {shown}{more}; "
                               "finish the scan or pass --allow-partial")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("error, shown", [(OSError(5, "Input/output error"), "Input/output error"),
                                          (OSError("connection reset"), "connection reset")])
def test_a_shard_that_cannot_be_re_read_names_the_shard_its_source_and_the_error(tmp_path, monkeypatch, error, shown):
    from vlmaudit.errors import UserError
    from vlmaudit.filter import reshard
    from vlmaudit.report.reread import ReReadOptions

    def unreadable(*args):
        raise error

    report = planted_shards(tmp_path, {"s0": ([("a", [("jpg", b"img-a")])], "complete", None)})
    keep = keep_file(tmp_path / "keep.parquet", [("s0", "a", 0)])
    monkeypatch.setattr(reshard, "write_shard", unreadable)
    with pytest.raises(UserError) as info:
        reshard.write_filtered_shards(report, keep, tmp_path / "out", ReReadOptions())
    assert str(info.value) == f"s0: cannot re-read {tmp_path / 's0.tar'}: {shown}"


def planted_run(tmp_path, image=None):
    """(report dir, permissive policy, matches file): rows a (nothing), b (only the concept whose
    id sorts last) and c (every concept); known-content matches for a (two banks) and c."""
    import numpy as np

    from conftest import write_planted_report
    from vlmaudit.rulebook.load import find_rule_file, load_rules
    from vlmaudit.rulebook.policy import load_policy

    taxonomy = load_rules().taxonomy
    last = max(range(len(taxonomy.concepts)), key=lambda i: taxonomy.concept_ids[i])
    scores = np.zeros((3, len(taxonomy.concepts)), np.float32)
    scores[1, last] = scores[2] = 1.0
    write_planted_report(tmp_path / "rep", scores if image is None else image, scores, keys=["a", "b", "c"], shard="s0")
    pq.write_table(pa.table({"shard": ["s0", "s0", "s0"], "key": ["a", "a", "c"], "bank": ["bank2", "bank1", "bank3"]}),
                   tmp_path / "matches.parquet")
    policy = load_policy(find_rule_file("policies", "permissive"), taxonomy.concept_ids,
                         [c.category for c in taxonomy.concepts])
    policy.match = 2
    return tmp_path / "rep", policy, tmp_path / "matches.parquet", taxonomy.concept_ids[last]


def test_run_filter_summary_names_the_policy_the_run_the_matches_and_the_coverage(tmp_path):
    """summary.json, as written and as returned: the policy and its fingerprint, --on-failed, the
    report directory, counts, rules fired (most first, then by name), bank matches, the coverage
    block as given, and unfinished shards (here a .partial file, passed with --allow-partial)."""
    import json

    from vlmaudit.filter.lists import run_filter

    reports, policy, matches, last = planted_run(tmp_path)
    (reports / ".s1.parquet.partial").write_bytes(b"")
    summary = run_filter(reports, policy, tmp_path / "out", "review", True, coverage={"scored": "all"}, matches=matches)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert (summary["policy"], summary["policy_fingerprint"], summary["on_failed"]) == ("permissive", policy.fingerprint, "review")
    assert summary["report_dir"] == str(reports) and summary["samples"] == 3
    assert summary["counts"] == {"keep": 0, "review": 0, "drop": 3}  # b fires a drop rule, a and c are matched (drop)
    fired = list(summary["rules_fired"].items())
    assert fired[0] == (f"concept:{last}", 2)  # the only rule fired twice comes first, though it sorts last by name
    assert fired[1:] == sorted(fired[1:]) and all(n == 1 for _, n in fired[1:])
    assert summary["known_matches"] == {"bank1": 1, "bank3": 1}
    assert summary["coverage"] == {"scored": "all"}
    assert summary["incomplete_shards"] == [".s1.parquet.partial (unfinished)"]
    assert "coverage" not in run_filter(reports, policy, tmp_path / "out2", "review", True)


def test_run_filter_takes_an_opened_report_set_or_a_path_alike(tmp_path):
    from vlmaudit.filter.lists import run_filter
    from vlmaudit.report.reportset import ReportSet

    reports, policy, matches, _ = planted_run(tmp_path)
    by_path = run_filter(reports, policy, tmp_path / "a", "keep", False, matches=matches)
    by_set = run_filter(ReportSet.open(reports), policy, tmp_path / "b", "keep", False, matches=matches)
    assert by_path == by_set | {"report_dir": by_path["report_dir"]} and by_path["counts"]["drop"] == 3


def test_run_filter_refuses_damaged_scores_before_any_list_is_written(tmp_path):
    import numpy as np

    from vlmaudit.filter.lists import run_filter
    from vlmaudit.report.reading import BadScores
    from vlmaudit.rulebook.load import load_rules

    image = np.zeros((3, len(load_rules().taxonomy.concepts)), np.float32)
    image[1, 4] = np.nan
    reports, policy, _, _ = planted_run(tmp_path, image=image)
    with pytest.raises(BadScores, match=r"s0\.parquet: holds score lists that are NaN, infinite, outside \[0, 1\]"):
        run_filter(reports, policy, tmp_path / "out", "keep", False)
    assert list((tmp_path / "out").iterdir()) == []  # no list, no summary, no temporaries
