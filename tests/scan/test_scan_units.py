"""Fast, model-free tests of the scan stage's pieces (samples, rows, flags, writer, run info,
reshard): milliseconds each, so a mutation tool can run them for every mutant. Written to kill
the mutants the CLI-level tests let survive."""

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import NoInputs, write_tar
from vlmaudit import flags as F
from vlmaudit.rulebook.load import load_rules
from vlmaudit.rulebook.thresholds import Thresholds
from vlmaudit.scan.rows import RowBuilder, RowMeta
from vlmaudit.scan.samples import group_by_key, iter_samples, split_name
from vlmaudit.scan.tario import Member, TarEnd, iter_members
from vlmaudit.schema import category_column, report_meta, report_schema

TAX = load_rules().taxonomy
N = len(TAX.concepts)
CAT = TAX.concept_category_index()


# ---- samples: names, grouping, members -> samples -------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("dir/sub/000.jpg", ("dir/sub/000", "jpg")), ("a.b.JPG", ("a.b", "jpg")), ("noext", ("noext", "")),
    (".hidden", (".hidden", "")), ("dir.x/file", ("dir.x/file", "")), ("x.", ("x", "")),
])
def test_split_name_takes_the_last_dot_of_the_file_name(name, expected):
    assert split_name(name) == expected


def member(name: str) -> Member:
    return Member(tarfile.TarInfo(name), name, b"", None)


def test_group_by_key_groups_runs_of_the_same_key_only():
    names = ["a.jpg", "a.txt", "b.jpg", "a.json", "a.txt", "c.jpg"]
    groups = [(i, k, [m.name for m in ms]) for i, k, ms in group_by_key(map(member, names))]
    assert groups == [(0, "a", ["a.jpg", "a.txt"]), (1, "b", ["b.jpg"]), (2, "a", ["a.json", "a.txt"]),
                      (3, "c", ["c.jpg"])]
    assert list(group_by_key([])) == []


def samples_of(tmp_path, members, max_bytes=1 << 20, max_chars=100):
    path = write_tar(tmp_path / "s.tar", members)
    end = TarEnd()
    with open(path, "rb") as stream:
        return list(iter_samples(stream, end, max_bytes, max_chars)), end


def test_iter_samples_fills_every_field_and_notes_everything_odd(tmp_path):
    samples, end = samples_of(tmp_path, [
        ("a.jpg", b"A"), ("a.txt", b"caption a"), ("a.json", b'{"url": "http://a", "caption": "json caption"}'),
        ("b.PNG", b"B"), ("b.json", b'{"caption": "from json", "url": 5}'),
        ("c.txt", b"only text"),
        ("d.jpg", b"D1"), ("d.jpeg", b"D2"), ("d.txt", b"one"), ("d.txt", b"two"),
        ("e.jpg", b"E"), ("e.xyz", b"?"), ("e", b"no ext"),
        ("f.jpg", b"F" * 300), ("f.json", b"{broken"),
        ("g.jpg", b"G"), ("g.json", b"[1, 2]"), ("g.txt", "x".encode() * 150),
        ("h.jpg", b"H"), ("h.txt", b"caf\xe9"),
        ("a.jpg", b"A again"),
    ], max_bytes=200)
    by_key = {(s.key, s.index): s for s in samples}
    assert [(s.index, s.key) for s in samples] == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e"), (5, "f"),
                                                   (6, "g"), (7, "h"), (8, "a")]
    a = by_key[("a", 0)]
    assert (a.image, a.image_ext, a.caption, a.url, a.status, a.notes) == (b"A", "jpg", "caption a", "http://a", None, [])
    b = by_key[("b", 1)]
    assert (b.image, b.image_ext, b.caption, b.url, b.notes) == (b"B", "png", "from json", None, ["json_url_not_a_string"])
    c = by_key[("c", 2)]
    assert (c.image, c.caption, c.status) == (None, "only text", None)
    d = by_key[("d", 3)]
    assert (d.image, d.image_ext, d.caption) == (b"D1", "jpg", "one")
    assert d.notes == ["extra_member:.jpeg", "extra_member:.txt"]
    e = by_key[("e", 4)]
    assert e.image == b"E" and e.notes == ["ignored_member:.xyz", "ignored_member:no_extension"]
    f = by_key[("f", 5)]
    assert (f.image, f.status) == (None, "too_large") and "over the 200-byte limit" in f.error
    assert f.notes == ["oversized_member:.jpg", "json_malformed:JSONDecodeError"]
    g = by_key[("g", 6)]
    assert g.caption == "x" * 100 and g.notes == ["json_not_an_object", "caption_capped"]
    h = by_key[("h", 7)]
    assert h.caption == "caf\ufffd" and h.notes == ["caption_invalid_utf8"]
    again = by_key[("a", 8)]
    assert again.status == "duplicate_key" and "'a' reappears" in again.error and again.image == b"A again"
    assert end.status == "complete" and end.members_ignored == 2
    assert end.ignored_kinds == {".xyz": 1, "no extension": 1}


def test_an_oversized_caption_member_does_not_make_the_sample_too_large(tmp_path):
    samples, _ = samples_of(tmp_path, [("a.jpg", b"A"), ("a.txt", b"c" * 60)], max_bytes=40)
    assert samples[0].status is None and samples[0].image == b"A" and samples[0].caption is None
    assert samples[0].notes == ["oversized_member:.txt"]


def test_members_of_damaged_and_non_tar_streams(tmp_path):
    whole = write_tar(tmp_path / "w.tar", [("a.jpg", b"x" * 600), ("b.jpg", b"y" * 600)]).read_bytes()
    end = TarEnd()
    names = [m.name for m in iter_members(io.BytesIO(whole[:1536 + 100]), end, lambda n: True, 1 << 20)]
    assert names == ["a.jpg"] and end.status == "truncated" and end.error
    end = TarEnd()
    assert list(iter_members(io.BytesIO(b"not a tar at all" * 64), end, lambda n: True, 1 << 20)) == []
    assert end.status == "unreadable" and end.error.startswith("cannot read as tar")
    end = TarEnd()
    got = list(iter_members(io.BytesIO(whole), end, lambda n: n.startswith("b"), 1 << 20))
    assert [(m.name, m.data) for m in got] == [("a.jpg", None), ("b.jpg", b"y" * 600)] and end.status == "complete"


# ---- flags and rows -------------------------------------------------------------------------------

def test_flag_math_on_known_scores():
    masks = F.category_masks([0, 0, 1, 2], 3)
    assert masks.tolist() == [[True, True, False, False], [False, False, True, False], [False, False, False, True]]
    scores = np.array([[0.1, 0.7, 0.2, 0.0], [np.nan] * 4, [0.5, 0.5, 0.9, 0.95]], np.float32)
    per_category = F.category_max(scores, masks)
    assert per_category[0].tolist() == pytest.approx([0.7, 0.2, 0.0]) and np.isnan(per_category[1]).all()
    flags = F.concept_flags(scores, np.array([0.5, 0.8, 0.9, 1.0], np.float32))
    assert flags.tolist() == [[False, False, False, False], [False] * 4, [True, False, True, False]]
    assert F.category_flags(flags, masks).tolist() == [[False] * 3, [False] * 3, [True, True, False]]
    index, top = F.top_concept(scores)
    assert index.tolist() == [1, -1, 3] and top[[0, 2]].tolist() == pytest.approx([0.7, 0.95]) and np.isnan(top[1])
    index, top = F.top_concept(np.array([[np.nan, 0.3, 0.1, np.nan]], np.float32))  # NaN never wins
    assert index.tolist() == [1] and top.tolist() == pytest.approx([0.3]) and top.dtype == np.float32


def builder(image=0.5, caption=0.5) -> RowBuilder:
    thresholds = Thresholds(np.full(N, image, np.float32), np.full(N, caption, np.float32))
    schema = report_schema(TAX, report_meta(TAX, thresholds, {}))
    return RowBuilder(TAX, thresholds, schema, "model@rev")


def concept_in(category: int, nth: int = 0) -> int:
    return [i for i, k in enumerate(CAT) if k == category][nth]


def test_rows_carry_scores_tops_categories_flags_and_judge_columns():
    """Row 0: image flags category 0, caption flags nothing; row 1: caption only, flagged;
    row 2: not scored (decode error)."""
    c0, c0b, c3 = concept_in(0), concept_in(0, 1), concept_in(3)
    image = np.zeros((1, N), np.float32)
    image[0, c0], image[0, c0b], image[0, c3] = 0.9, 0.6, 0.3
    caption = np.zeros((2, N), np.float32)
    caption[0, c3] = 0.4
    caption[1, c3] = 0.7
    metas = [RowMeta("k0", 0, "http://0", "cap0", "ok", width=4, height=3, image_row=0, caption_row=0),
             RowMeta("k1", 1, None, "cap1", "missing_image", "no image", caption_row=1),
             RowMeta("k2", 2, None, None, "decode_error", "bad", notes=["n"])]
    extras = {"image_unsafe": np.array([0.9], np.float32), "caption_unsafe": np.array([0.4, 0.7], np.float32),
              "image_rationale": ["because"], "caption_rationale": ["c0", "c1"]}
    rows = builder().build("shard", metas, image, caption, extras, "vlm").to_pylist()
    r0, r1, r2 = rows
    assert (r0["shard"], r0["key"], r0["sample_index"], r0["url"], r0["caption"], r0["width"], r0["height"]) == (
        "shard", "k0", 0, "http://0", "cap0", 4, 3)
    assert (r2["status"], r2["error"], r2["notes"], r0["notes"]) == ("decode_error", "bad", ["n"], None)
    assert r0["image_scores"] == pytest.approx(image[0].tolist()) and r0["caption_scores"] == pytest.approx(caption[0].tolist())
    assert r1["image_scores"] is None and r1["caption_scores"] == pytest.approx(caption[1].tolist())
    assert r2["image_scores"] is None and r2["caption_scores"] is None
    ids = TAX.concept_ids
    assert (r0["image_top_concept"], r0["image_top_score"]) == (ids[c0], pytest.approx(0.9))
    assert (r0["caption_top_concept"], r0["caption_top_score"]) == (ids[c3], pytest.approx(0.4))
    assert (r1["image_top_concept"], r1["image_top_score"]) == (None, None)
    first, fourth = TAX.category_ids[0], TAX.category_ids[3]
    assert r0[category_column("image", first)] == pytest.approx(0.9)
    assert r0[category_column("image", fourth)] == pytest.approx(0.3)
    assert r1[category_column("image", first)] is None and r1[category_column("caption", fourth)] == pytest.approx(0.7)
    assert [(r["image_flagged"], r["caption_flagged"], r["flagged"]) for r in rows] == [
        (True, False, True), (None, True, True), (None, None, False)]
    assert r0["image_flagged_concepts"] == [ids[c0], ids[c0b]] and r0["caption_flagged_concepts"] == []
    assert r0["image_flagged_scores"] == pytest.approx([0.9, 0.6]) and r1["caption_flagged_scores"] == pytest.approx([0.7])
    assert r0["flagged_categories"] == [first] and r1["flagged_categories"] == [fourth] and r2["flagged_categories"] == []
    assert [r["model"] for r in rows] == ["model@rev"] * 3 and r0["taxonomy_version"] == TAX.tag
    assert [r["image_unsafe"] for r in rows] == [pytest.approx(0.9), None, None]
    assert [r["caption_unsafe"] for r in rows] == [pytest.approx(0.4), pytest.approx(0.7), None]
    assert [r["modalities_disagree"] for r in rows] == [True, None, None]
    assert [r["decided_by"] for r in rows] == ["vlm", "vlm", None]
    assert [r["rationale"] for r in rows] == ["because", "c1", None]
    assert all(r["screen_image_scores"] is None and r["screen_caption_scores"] is None for r in rows)


def test_modalities_agree_when_both_or_neither_flag():
    c = concept_in(2)
    image = np.zeros((2, N), np.float32)
    caption = np.zeros((2, N), np.float32)
    image[0, c] = caption[0, c] = 0.9
    metas = [RowMeta(f"k{i}", i, None, "x", "ok", image_row=i, caption_row=i) for i in range(2)]
    rows = builder().build("s", metas, image, caption).to_pylist()
    assert [r["modalities_disagree"] for r in rows] == [False, False]
    assert [r["flagged"] for r in rows] == [True, False] and rows[0]["decided_by"] is None


def test_per_modality_thresholds_are_not_swapped():
    c = concept_in(1)
    scores = np.zeros((1, N), np.float32)
    scores[0, c] = 0.6
    metas = [RowMeta("k", 0, None, "x", "ok", image_row=0, caption_row=0)]
    row = builder(image=0.5, caption=0.7).build("s", metas, scores, scores).to_pylist()[0]
    assert (row["image_flagged"], row["caption_flagged"]) == (True, False)


# ---- writer -----------------------------------------------------------------------------------------

def batch_of(statuses: list[str], flagged: list[bool]):
    metas = [RowMeta(f"k{i}", i, None, None, s, image_row=i if s == "ok" else -1) for i, s in enumerate(statuses)]
    image = np.zeros((len(statuses), N), np.float32)
    image[[i for i, f in enumerate(flagged) if f], 0] = 0.9
    return builder().build("s", metas, image, None)


def new_writer(out, name, schema):
    """A writer as the scanner gets one: claimed (lock file) and writing to a unique temporary."""
    from vlmaudit.scan.writer import ShardWriter

    return ShardWriter.claim_shard(out, name, schema)


def test_shard_writer_counts_commits_stats_last_and_aborts_cleanly(tmp_path):
    from vlmaudit.scan.writer import shard_is_done

    schema = builder().schema
    writer = new_writer(tmp_path, "s", schema)
    writer.add(batch_of(["ok", "ok", "decode_error"], [True, False, False]))
    writer.add(batch_of(["ok", "missing_image"], [True, False]))
    assert not shard_is_done(tmp_path, "s") and list(tmp_path.glob(".s.parquet.*.partial"))
    writer.commit({"status": "complete"})
    stats = json.loads((tmp_path / "s.stats.json").read_text())
    assert stats["rows"] == 5 and stats["status_counts"] == {"ok": 3, "decode_error": 1, "missing_image": 1}
    assert stats["flagged"] == {"image": 2, "caption": 0, "any": 2}
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 5 and shard_is_done(tmp_path, "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet", "s.stats.json"]
    aborted = new_writer(tmp_path, "t", schema)
    aborted.add(batch_of(["ok"], [True]))
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet", "s.stats.json"]


def test_shard_writer_flushes_row_groups_and_counts_what_it_is_given(tmp_path, monkeypatch):
    from vlmaudit.scan import writer as W

    monkeypatch.setattr(W, "ROW_GROUP_ROWS", 2)
    plain = new_writer(tmp_path, "plain", builder().schema)
    for _ in range(3):
        plain.add(batch_of(["ok", "ok"], [True, False]))
    plain.commit(stats := {})
    assert pq.ParquetFile(tmp_path / "plain.parquet").metadata.num_row_groups == 3
    assert stats["rows"] == 6 and stats["flagged"]["any"] == 3


def test_the_scanner_refines_a_shard_before_the_writer_writes_it_once(tmp_path, monkeypatch):
    """Planted: rows written before the second stage, or the stats counted from the first stage."""
    import pyarrow.compute as pc
    from types import SimpleNamespace

    from vlmaudit.scan.scanner import Scanner
    from vlmaudit.scan.worker import ShardJob

    class Escalation:
        judge = None

        def escalated(self, table):
            return np.array([], np.int64)

    seen = {}

    def refine_shard(escalation, job, table, settings, rows, score_batch):
        seen["rows"] = table.num_rows
        flagged = pa.array([True] + [False] * (table.num_rows - 1))
        return table.set_column(table.schema.get_field_index("flagged"), "flagged", flagged), {"escalated": 1}

    import vlmaudit.scan.scanner as S

    scanner = Scanner.__new__(Scanner)
    scanner.schema, scanner.settings, scanner.rows = builder().schema, None, None
    scanner.backend = SimpleNamespace(escalation=Escalation())
    writer = new_writer(tmp_path, "s", scanner.schema)
    held = [batch_of(["ok", "ok"], [False, False]), batch_of(["ok"], [False])]
    monkeypatch.setattr(S, "refine_shard", refine_shard)
    scanner._refine(ShardJob("s.tar", "s"), held, stats := {"seconds": {}}, writer)
    writer.commit(stats)
    table = pq.read_table(tmp_path / "s.parquet")
    assert seen["rows"] == 3 and table.column("flagged").to_pylist() == [True, False, False]
    assert stats["rows"] == 3 and stats["flagged"]["any"] == 1 and stats["escalated"] == 1
    assert int(pc.sum(table.column("image_flagged").cast(pa.int8())).as_py()) == 0


# ---- run info ---------------------------------------------------------------------------------------

def test_resume_refuses_each_identity_change_and_allows_the_rest(tmp_path):
    from vlmaudit.errors import ResumeConflict
    from vlmaudit.scan.runinfo import IDENTITY, check_resume, write_run_record

    record = {k: f"{k}-1" for k in IDENTITY} | {"device": "cpu", "created_at": 1}
    check_resume(tmp_path, record, overwrite=False)  # nothing there yet
    write_run_record(tmp_path, record)
    check_resume(tmp_path, {**record, "device": "cuda", "created_at": 2}, overwrite=False)
    for key in IDENTITY:
        with pytest.raises(ResumeConflict, match=f"different {key};"):
            check_resume(tmp_path, {**record, key: "other"}, overwrite=False)
        check_resume(tmp_path, {**record, key: "other"}, overwrite=True)
    (tmp_path / "run.json").write_text("{truncated")
    check_resume(tmp_path, {**record, "model": "other"}, overwrite=False)


def test_plan_and_split_done(tmp_path):
    from vlmaudit.scan.runinfo import plan_jobs, split_done

    shards = [write_tar(tmp_path / f"{i:02d}.tar", []) for i in range(5)]
    jobs, names = plan_jobs([str(s) for s in shards], num_shards=2, shard_index=1)
    assert names == ["00", "01", "02", "03", "04"] and [j.name for j in jobs] == ["01", "03"]
    assert all(j.url == str(shards[int(j.name)]) for j in jobs)
    out = tmp_path / "out"
    out.mkdir()
    for name, status in (("01", "complete"), ("03", "failed")):
        (out / f"{name}.parquet").write_bytes(b"x")
        (out / f"{name}.stats.json").write_text(json.dumps({"status": status}))
    todo, done = split_done(jobs, out, overwrite=False)
    assert [j.name for j in todo] == ["03"] and [j.name for j in done] == ["01"]
    todo, done = split_done(jobs, out, overwrite=True)
    assert [j.name for j in todo] == ["01", "03"] and done == []


# ---- reshard ----------------------------------------------------------------------------------------

def test_write_shard_keeps_exactly_the_chosen_samples_with_all_their_members(tmp_path):
    from vlmaudit.filter.reshard import Kept, write_shard

    members = [("./a.jpg", b"A"), ("./a.txt", b"a"), ("b.jpg", b"B"), ("b.json", b"{}"), ("b.cls", b"1"),
               ("c.jpg", b"C"), ("a.jpg", b"A2")]
    shard = write_tar(tmp_path / "s.tar", members)
    written, skipped, damage = write_shard(str(shard), Kept({1: "b", 3: "a"}), tmp_path / "out.tar", 64 << 20)
    assert (written, skipped, bool(damage)) == (2, 0, False)
    with tarfile.open(tmp_path / "out.tar") as tf:
        assert [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()] == [
            ("b.jpg", b"B"), ("b.json", b"{}"), ("b.cls", b"1"), ("a.jpg", b"A2")]
    assert not list(tmp_path.glob(".*partial"))


def test_write_filtered_shards_skips_failed_and_unfinished_shards(tmp_path):
    from vlmaudit.filter.reshard import write_filtered_shards
    from vlmaudit.report.reread import ReReadOptions

    report = tmp_path / "report"
    report.mkdir()
    for name, status in (("s1", "complete"), ("s2", "truncated"), ("bad", "failed"), ("gone", "complete")):
        shard = write_tar(tmp_path / f"{name}.tar", [(f"{name}-{i}.jpg", bytes([i])) for i in range(3)])
        (report / f"{name}.stats.json").write_text(json.dumps({"status": status, "url": str(shard)}))
        if name != "gone":
            pq.write_table(pa.table({"key": [f"{name}-{i}" for i in range(3)], "sample_index": [0, 1, 2]}),
                           report / f"{name}.parquet")
    keep_file = tmp_path / "keep.parquet"
    pq.write_table(pa.table({"shard": ["s1", "s1", "s2", "bad"], "key": ["s1-0", "s1-2", "s2-1", "bad-0"],
                             "url": ["u0", None, "u2", "u3"], "sample_index": [0, 2, 1, 0]}), keep_file)
    out = tmp_path / "out" / "nested"
    written = {"samples": {"s1": 2, "s2": 1}, "skipped_members": 0, "non_regular_members": 0}
    assert write_filtered_shards(report, keep_file, out, ReReadOptions()) == written
    assert write_filtered_shards(report, keep_file, out, ReReadOptions()) == written  # a rerun overwrites
    assert sorted(p.name for p in out.iterdir()) == ["s1.parquet", "s1.tar", "s2.parquet", "s2.tar"]
    with tarfile.open(out / "s1.tar") as tf:
        assert tf.getnames() == ["s1-0.jpg", "s1-2.jpg"]
    assert pq.read_table(out / "s1.parquet").to_pylist() == [
        {"key": "s1-0", "url": "u0", "sample_index": 0}, {"key": "s1-2", "url": None, "sample_index": 2}]


def test_out_dir_checks_and_the_run_record(tmp_path):
    from vlmaudit.errors import UserError
    from vlmaudit.scan.runinfo import package_versions, prepare_out_dir, run_record

    prepare_out_dir(tmp_path / "new" / "dir")
    prepare_out_dir(tmp_path / "new" / "dir")  # resuming into it again
    assert (tmp_path / "new" / "dir").is_dir() and list((tmp_path / "new" / "dir").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out .*file: cannot write there"):
        prepare_out_dir(tmp_path / "file")
    versions = package_versions()
    assert versions["numpy"] == np.__version__ and versions["python"].count(".") == 2 and "vlmaudit" in versions
    rules = load_rules()
    info = {"backend": "clip", "model": "m", "revision": "r", "device": "cpu", "precision": "fp32", "extra": 1}
    record = run_record(info, rules, {"batch_size": 4}, ["a", "b"])
    assert record["planned_shards"] == ["a", "b"] and record["model_info"] == info
    assert {k: record[k] for k in ("backend", "model", "revision", "device", "precision")} == {
        "backend": "clip", "model": "m", "revision": "r", "device": "cpu", "precision": "fp32"}
    assert record["taxonomy_version"] == TAX.tag and record["taxonomy_fingerprint"] == TAX.fingerprint()
    assert record["thresholds_fingerprint"] == rules.thresholds.fingerprint() and record["config"] == {"batch_size": 4}
    assert record["rules_dir"] == str(rules.directory) and record["packages"]["numpy"] == np.__version__


def test_8_bit_range_integer_images_keep_their_values_and_black_stays_black():
    from PIL import Image

    from vlmaudit.scan.imaging import decode_image

    grey = np.array([[0, 200], [255, 17]], np.int32)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="I").save(buffer, format="TIFF")
    image, size = decode_image(buffer.getvalue(), 100)
    assert size == (2, 2) and image.mode == "RGB"
    assert np.asarray(image)[..., 0].tolist() == [[0, 200], [255, 17]]


def test_pipe_and_fsspec_streams(tmp_path):
    from vlmaudit.scan.tario import open_stream

    path = tmp_path / "x.bin"
    path.write_bytes(b"payload")
    for url in (f"pipe:cat {path}", f"file://{path}", str(path)):
        stream = open_stream(url)
        try:
            assert stream.read() == b"payload", url
        finally:
            stream.close()
    failing = open_stream("pipe:echo oops >&2; exit 3")
    with pytest.raises(OSError, match="pipe:echo oops >&2; exit 3: command exited with 3: oops"):
        failing.read()
    failing.close()


def test_report_names_of_pipe_and_plain_specs():
    from vlmaudit.scan.shards import output_names, shard_stem

    assert shard_stem("pipe:curl -s http://h/x/part-7.tar") == "part-7"
    assert shard_stem("/data/we|ird.tar") == "we|ird"
    assert output_names(["/d/Shard_a.b-1.tar", "/d/we|ird.tar"]) == {"/d/Shard_a.b-1.tar": "Shard_a.b-1",
                                                                    "/d/we|ird.tar": "we_ird"}


def test_abort_twice_and_after_commit_is_harmless(tmp_path):
    writer = new_writer(tmp_path, "s", builder().schema)
    writer.add(batch_of(["ok"], [True]))
    writer.commit({})
    writer.abort()
    other = new_writer(tmp_path, "t", builder().schema)
    other.abort()
    other.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet", "s.stats.json"]


def test_scan_results_merge_shards_failures_and_counts():
    from vlmaudit.scan.scanner import ScanResult

    a = ScanResult({"00000": "complete", "00001": "failed"}, rows=5, flagged=2, permanent={"00001"})
    b = ScanResult({"00002": "skipped", "00003": "failed"}, rows=7, flagged=1, permanent={"00003"})
    a.merge(b)
    assert a.shards == {"00000": "complete", "00001": "failed", "00002": "skipped", "00003": "failed"}
    assert (a.rows, a.flagged, a.permanent) == (12, 3, {"00001", "00003"})
    assert (a.failed, a.skipped) == (["00001", "00003"], ["00002"])


def test_a_failing_model_marks_every_scored_row_of_the_batch_and_only_those():
    from vlmaudit.scan.scanner import score_batch
    from vlmaudit.scan.worker import PreparedBatch, ShardJob

    class Broken:
        def score(self, inputs):
            raise RuntimeError("out of memory")

    metas = [RowMeta("a", 0, None, None, "ok", image_row=0),  # row 0 of the images only
             RowMeta("b", 1, None, "c", "missing_image", "no image", caption_row=0),  # row 0 of the captions only
             RowMeta("c", 2, None, "c", "ok", image_row=1, caption_row=1),
             RowMeta("d", 3, None, None, "missing_image", "no image")]
    batch = PreparedBatch(ShardJob("x.tar", "x"), metas, {"pixel_values": object()}, 0.0)
    assert score_batch(Broken(), batch) == (None, None, {})
    got = [(m.status, m.error, m.image_row, m.caption_row) for m in metas]
    failed = ("inference_error", "RuntimeError: out of memory", -1, -1)
    assert got == [failed, failed, failed, ("missing_image", "no image", -1, -1)]


# ---- scan/worker.py: retries, closing, cropping, how a broken shard ends (mutation testing) ------
def test_a_remote_shard_that_cannot_be_opened_is_tried_retries_plus_one_times(monkeypatch):
    from vlmaudit.scan import worker

    attempts = []

    def refuse(url):
        attempts.append(url)
        raise ConnectionError("connection reset")

    monkeypatch.setattr(worker, "open_stream", refuse)
    settings = worker.ScanSettings(retries=2, retry_wait=0.0, workers=0)
    [batch] = list(worker.prepare_shard(worker.ShardJob("http://host/a.tar", "a"), NoInputs(), settings))
    assert len(attempts) == 3 and batch.final
    assert batch.end.status == "failed" and not batch.end.permanent and "connection reset" in batch.end.error


def test_a_missing_local_shard_is_tried_once_and_marked_permanent(monkeypatch, tmp_path):
    from vlmaudit.scan import worker

    attempts = []
    real_open = worker.open_stream
    monkeypatch.setattr(worker, "open_stream", lambda url: attempts.append(url) or real_open(url))
    settings = worker.ScanSettings(retries=2, retry_wait=0.0, workers=0)
    [batch] = list(worker.prepare_shard(worker.ShardJob(str(tmp_path / "gone.tar"), "gone"), NoInputs(), settings))
    assert len(attempts) == 1 and batch.end.status == "failed" and batch.end.permanent


def test_every_opened_shard_stream_is_closed(monkeypatch, tmp_path):
    from conftest import write_shard
    from vlmaudit.scan import worker

    shard = write_shard(tmp_path / "s.tar", [{"__key__": f"k{i}", "txt": f"caption {i}"} for i in range(3)])
    opened = []

    class Recording(io.FileIO):
        def close(self):
            opened.append("closed")
            super().close()

    monkeypatch.setattr(worker, "open_stream", lambda url: opened.append("open") or Recording(url, "rb"))
    batches = list(worker.prepare_shard(worker.ShardJob(str(shard), "s"), NoInputs(), worker.ScanSettings(workers=0)))
    assert [m.key for b in batches for m in b.metas] == ["k0", "k1", "k2"]
    assert opened == ["open", "closed"]


@pytest.mark.parametrize("size, box", [
    ((10, 300), (0, 50, 10, 250)),  # tall: keep the middle 200 rows
    ((301, 10), (50, 0, 250, 10)),  # wide: keep the middle 200 columns (odd margin rounds down)
])
def test_extreme_aspect_images_are_cropped_around_their_centre(size, box):
    from PIL import Image

    from vlmaudit.scan.rows import RowMeta
    from vlmaudit.scan.worker import _guard_aspect

    width, height = size
    gradient = np.add.outer(np.arange(height), np.arange(width) * 1000).astype(np.int32)  # pixel = y + 1000 x
    meta = RowMeta("k", 0, "u", None, "ok", None)
    cropped = np.asarray(_guard_aspect(Image.fromarray(gradient, "I"), meta))
    left, top, right, bottom = box
    assert cropped.shape == (bottom - top, right - left)
    assert cropped[0, 0] == top + 1000 * left and cropped[-1, -1] == (bottom - 1) + 1000 * (right - 1)
    assert meta.notes == ["extreme_aspect_cropped"]


def test_an_error_right_after_a_full_batch_truncates_the_shard_instead_of_failing_it(monkeypatch):
    """Samples already handed on count: the shard is `truncated` (keeps its rows), not `failed`."""
    from vlmaudit.scan import worker
    from vlmaudit.scan.samples import Sample

    def two_then_boom(job, end, settings):
        yield Sample(key="a", index=0, url=job.url, caption="one")
        yield Sample(key="b", index=1, url=job.url, caption="two")
        raise RuntimeError("reader bug")

    monkeypatch.setattr(worker, "_samples_with_retries", two_then_boom)
    settings = worker.ScanSettings(batch_size=2, workers=0)
    batches = list(worker.prepare_shard(worker.ShardJob("x.tar", "x"), NoInputs(), settings))
    assert [len(b.metas) for b in batches] == [2, 0] and batches[-1].final
    assert batches[-1].end.status == "truncated" and "reader bug" in batches[-1].end.error


def test_every_backend_implements_the_scorer_protocol_the_scanner_calls():
    """Planted: a backend without stage / escalation (the scanner no longer probes with getattr)."""
    import inspect
    from types import SimpleNamespace

    from vlmaudit.backends.cascade import Cascade
    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.head import HeadScorer
    from vlmaudit.backends.opennsfw import OpenNsfwScorer
    from vlmaudit.backends.vlm import VlmJudge
    from vlmaudit.scan.scorer import Escalation, Scorer

    declared = {n for n, v in vars(Scorer).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert declared == {"score", "forward_only", "describe"}
    for cls in (ClipScorer, OpenNsfwScorer, VlmJudge, HeadScorer, Cascade):
        assert all(callable(getattr(cls, m, None)) for m in declared), cls
    for cls in (ClipScorer, OpenNsfwScorer, VlmJudge, HeadScorer):
        assert cls.stage == cls.name and cls.escalation is None, cls
    screen = SimpleNamespace(preprocessor=object(), name="clip", device="cpu", precision="fp32")
    cascade = Cascade(screen, SimpleNamespace(name="vlm"), 0.5, None)
    assert (cascade.stage, cascade.device, cascade.escalation) == ("clip", "cpu", cascade)
    assert callable(cascade.escalation.escalated) and cascade.escalation.judge.name == "vlm"
    assert set(Escalation.__annotations__) == {"judge"}


def test_scan_options_have_one_set_of_defaults_and_are_given_by_keyword():
    """Planted: a default changed in the CLI but not in ScanRequest (or the other way round)."""
    import dataclasses
    import inspect

    from vlmaudit.cli import scan
    from vlmaudit.commands.scan_request import DEFAULTS, ScanRequest

    with pytest.raises(TypeError):
        ScanRequest(["a.tar"], "out", None)  # keyword-only: no options by position
    fields = {f.name for f in dataclasses.fields(ScanRequest)}
    renamed = {"compile_model": "compile"}
    cli = inspect.signature(inspect.unwrap(scan)).parameters
    for name, parameter in cli.items():
        field = renamed.get(name, name)
        if field in fields and parameter.default is not inspect.Parameter.empty and parameter.default is not None:
            assert parameter.default == getattr(DEFAULTS, field), name
    assert cli["workers"].default is None and DEFAULTS.workers == 2  # None: not given (--engine ray reads it as --actors)


# ---- writer: failure, claims, object stores, encodings, summaries --------------------------------------

def test_a_failed_shard_gets_only_stats_saying_so_and_its_claim_is_released(tmp_path):
    writer = new_writer(tmp_path, "s", builder().schema)
    writer.add(batch_of(["ok", "ok"], [True, True]))
    writer.fail(stats := {"status": "failed", "error": "gone"})
    assert stats == {"status": "failed", "error": "gone", "rows": 0, "status_counts": {},
                     "flagged": {"image": 0, "caption": 0, "any": 0}}
    assert json.loads((tmp_path / "s.stats.json").read_text()) == stats
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.stats.json"]  # no Parquet, no temporary, no lock


def test_a_held_claim_gives_no_second_writer_and_a_done_shard_is_rescanned_only_when_asked(tmp_path):
    from vlmaudit.scan.writer import ShardWriter

    schema = builder().schema
    first = new_writer(tmp_path, "s", schema)
    assert ShardWriter.claim_shard(tmp_path, "s", schema) is None
    first.add(batch_of(["ok"], [False]))
    first.commit({"status": "complete"})
    assert ShardWriter.claim_shard(tmp_path, "s", schema, rescan_done=False) is None
    assert not (tmp_path / ".s.lock").exists()  # the claim taken to look was given back
    again = ShardWriter.claim_shard(tmp_path, "s", schema)
    assert again is not None and not (tmp_path / "s.stats.json").exists()  # stale stats gone at once
    again.abort()
    assert not (tmp_path / ".s.lock").exists()
    failed = ShardWriter.claim_shard(tmp_path, "s", schema, rescan_done=False)  # no stats: not done
    assert failed is not None
    failed.abort()


@pytest.mark.parametrize("stats, parquet, done", [
    ({"status": "complete"}, True, True), ({"status": "truncated"}, True, True), ({"status": "failed"}, True, False),
    ({"status": "complete"}, False, False), (["complete"], True, False), ({}, True, False), (None, True, False),
])
def test_shard_is_done_needs_done_stats_and_the_parquet(tmp_path, stats, parquet, done):
    from vlmaudit.scan.writer import shard_is_done

    if stats is not None:
        (tmp_path / "s.stats.json").write_text(json.dumps(stats))
    if parquet:
        (tmp_path / "s.parquet").write_bytes(b"x")
    assert shard_is_done(tmp_path, "s") is done
    assert shard_is_done(str(tmp_path), "s") is done


def test_names_and_paths_of_a_shards_files(tmp_path):
    from vlmaudit.scan.writer import as_location, parquet_name, parquet_path, stats_name, stats_path
    from vlmaudit.storage.location import Location

    assert (parquet_name("a"), stats_name("a")) == ("a.parquet", "a.stats.json")
    assert (parquet_path(tmp_path, "a"), stats_path(str(tmp_path), "a")) == (tmp_path / "a.parquet",
                                                                             tmp_path / "a.stats.json")
    where = Location(tmp_path)
    assert as_location(where) is where and as_location(tmp_path).root == tmp_path


def test_an_object_store_gets_the_parquet_under_its_final_name_then_the_stats():
    import fsspec

    from vlmaudit.scan.writer import ShardWriter, shard_is_done

    fs = fsspec.filesystem("memory")
    fs.rm("/wout", recursive=True) if fs.exists("/wout") else None
    fs.pipe("/wout/s.stats.json", b'{"status": "complete"}')
    writer = ShardWriter.claim_shard("memory://wout", "s", builder().schema)
    assert writer.claim is None and writer.partial is None and not fs.exists("/wout/s.stats.json")
    writer.add(batch_of(["ok", "decode_error"], [True, False]))
    assert writer.commit({"status": "complete"}) == ["memory://wout/s.parquet", "memory://wout/s.stats.json"]
    assert json.loads(fs.cat("/wout/s.stats.json"))["status_counts"] == {"ok": 1, "decode_error": 1}
    assert shard_is_done("memory://wout", "s")
    fs.rm("/wout", recursive=True)


def test_score_lists_are_byte_stream_split_and_not_dictionary_encoded(tmp_path):
    writer = new_writer(tmp_path, "s", builder().schema)
    writer.add(batch_of(["ok", "ok"], [True, False]))
    writer.commit({})
    group = pq.ParquetFile(tmp_path / "s.parquet").metadata.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    scores = chunks["image_scores.list.element"]
    assert "BYTE_STREAM_SPLIT" in scores.encodings and "RLE_DICTIONARY" not in scores.encodings
    assert scores.compression == "ZSTD" and chunks["key"].compression == "ZSTD"
    assert "RLE_DICTIONARY" in chunks["status"].encodings and "BYTE_STREAM_SPLIT" not in chunks["status"].encodings


def test_a_summarizer_gets_the_kept_columns_and_its_summary_is_written_before_the_stats(tmp_path):
    from vlmaudit.scan.summary import NEEDED_COLUMNS
    from vlmaudit.scan.writer import ShardWriter
    from vlmaudit.schema import footer_digest, meta_digest

    seen = []

    def summarizer(table, meta, name):
        seen.append((table.column_names, table.num_rows, sorted(meta)[:2], name))
        assert not (tmp_path / "s.stats.json").exists()
        return {"rows": table.num_rows}, b"HIST"

    schema = builder().schema
    writer = ShardWriter.claim_shard(tmp_path, "s", schema, summarizer=summarizer)
    writer.add(batch_of(["ok", "ok"], [True, False]))
    writer.add(batch_of(["decode_error"], [False]))
    writer.commit({"status": "complete"})
    assert seen == [([c for c in NEEDED_COLUMNS if c in schema.names], 3, seen[0][2], "s")] and seen[0][2]
    summary = json.loads((tmp_path / "s.summary.json").read_text())
    with open(tmp_path / "s.parquet", "rb") as handle:
        digest = footer_digest(handle)
    meta = pq.ParquetFile(tmp_path / "s.parquet").schema_arrow.metadata
    from vlmaudit.schema import META_KEY

    assert summary == {"rows": 3, "footer_sha256": digest, "meta_sha256": meta_digest(meta[META_KEY])}
    assert (tmp_path / "s.hist.bin").read_bytes() == b"HIST" and writer.kept == []
    none = ShardWriter.claim_shard(tmp_path, "s", schema, summarizer=lambda *a: None)
    assert not (tmp_path / "s.summary.json").exists() and not (tmp_path / "s.hist.bin").exists()
    none.add(batch_of(["ok"], [False]))
    none.commit({})
    assert not (tmp_path / "s.summary.json").exists() and (tmp_path / "s.stats.json").exists()


def test_no_summary_for_a_schema_without_a_taxonomy(tmp_path):
    from vlmaudit.scan.writer import ShardWriter

    schema = pa.schema([("sample_index", pa.int64()), ("status", pa.string())])
    writer = ShardWriter.claim_shard(tmp_path, "s", schema, summarizer=lambda *a: 1 / 0)
    assert writer.meta is None
    assert ShardWriter.claim_shard(tmp_path, "t", builder().schema).meta is None  # no summarizer: nothing kept


# ---- rows: partial scores, hashes, verdicts on rows without a score ------------------------------------

def test_a_row_scored_on_some_concepts_only_keeps_its_nans_and_counts_as_scored():
    from vlmaudit.scan.hashing import ImageHashes

    c0 = concept_in(0)
    image = np.full((2, N), np.nan, np.float32)
    image[0, c0] = 0.9  # a category-level model: one concept scored, the rest unscored
    metas = [RowMeta("a", 0, None, None, "ok", image_row=0, notes=[],
                     hashes=ImageHashes(b"s" * 32, b"m" * 16, b"p" * 32, 77)),
             RowMeta("b", 1, None, None, "ok", image_row=1)]
    rows = builder().build("s", metas, image, None, {"image_unsafe": np.array([0.5, np.nan], np.float32)},
                           "clip").to_pylist()
    a, b = rows
    assert a["image_scores"][c0] == pytest.approx(0.9) and sum(np.isnan(a["image_scores"])) == N - 1
    assert (a["image_top_concept"], a["image_flagged"], a["flagged"], a["decided_by"]) == (
        TAX.concept_ids[c0], True, True, "clip")
    assert (b["image_scores"], b["image_top_concept"], b["image_top_score"], b["image_flagged"], b["decided_by"]) == (
        None, None, None, None, None)
    assert (a["image_unsafe"], b["image_unsafe"]) == (pytest.approx(0.5), None)
    assert (a["image_sha256"], a["image_md5"], a["image_pdq"], a["image_pdq_quality"]) == (
        b"s" * 32, b"m" * 16, b"p" * 32, 77)
    assert (b["image_sha256"], b["image_md5"], b["image_pdq"], b["image_pdq_quality"]) == (None, None, None, None)
    assert a["notes"] is None and a["modalities_disagree"] is None and a["caption_flagged"] is None


def test_rationale_and_verdicts_of_rows_without_that_modality_are_null():
    image = np.zeros((1, N), np.float32)
    caption = np.zeros((1, N), np.float32)
    metas = [RowMeta("a", 0, None, "c", "ok", caption_row=0), RowMeta("b", 1, None, None, "ok", image_row=0)]
    extras = {"image_unsafe": np.array([0.25], np.float32), "caption_unsafe": np.array([0.75], np.float32),
              "image_rationale": ["img"], "caption_rationale": None}
    a, b = builder().build("s", metas, image, caption, extras, "vlm").to_pylist()
    assert (a["image_unsafe"], a["caption_unsafe"], a["rationale"]) == (None, pytest.approx(0.75), None)
    assert (b["image_unsafe"], b["caption_unsafe"], b["rationale"]) == (pytest.approx(0.25), None, "img")
    assert [a["decided_by"], b["decided_by"]] == ["vlm", "vlm"]


def test_json_files_are_written_with_sorted_keys_and_two_space_indent(tmp_path):
    """stats.json, run.json and filter's summary.json are written one way for the same content
    (sorted keys, indent 2): the audit card digests them, and two runs' files diff cleanly."""
    from vlmaudit.scan.writer import write_json_atomic

    write_json_atomic(tmp_path / "s.json", {"b": 1, "a": {"d": [1, 2], "c": None}})
    assert (tmp_path / "s.json").read_text() == '{\n  "a": {\n    "c": null,\n    "d": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}'
