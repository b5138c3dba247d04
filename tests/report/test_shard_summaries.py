"""Per-shard summaries (report.shard_summary, written by the scan's writer): merged, they give
exactly the numbers a full pass over the rows gives, on seeded random reports with empty shards and
shards holding only failed rows; damaged, foreign or stale summaries are refused naming the file."""

import json
import re
import shutil

import numpy as np
import pytest

from conftest import run_cli
from vlmaudit.rulebook.load import load_rules

RULES = load_rules()
TAX = RULES.taxonomy


def write_reports(out, seed, sizes, failing=(), model="synthetic"):
    """Shards of `sizes` rows through the scanner's own row builder and ShardWriter (which writes
    the summaries); shards in `failing` hold only failed rows."""
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.report.shard_summary import summarize_table
    from vlmaudit.scan.writer import ShardWriter
    from vlmaudit.schema import report_meta, report_schema

    meta = report_meta(TAX, RULES.thresholds, {"model": model, "backend": "synthetic"})
    schema = report_schema(TAX, meta)
    builder = RowBuilder(TAX, RULES.thresholds, schema, "synthetic@0")
    rng = np.random.default_rng(seed)
    n_c = len(TAX.concept_ids)
    for s, n in enumerate(sizes):
        name = f"{s:05d}"
        writer = ShardWriter.claim_shard(out, name, schema, summarizer=summarize_table)
        for start in range(0, max(n, 1), 50):
            m = min(50, n - start)
            image = rng.beta(0.6, 6.0, (m, n_c)).astype(np.float32)
            caption = rng.beta(0.6, 6.0, (m, n_c)).astype(np.float32)
            hot = rng.random((m, n_c)) < 0.02 * (s % 4 + 1)
            image[hot] = rng.uniform(0.6, 1.0, hot.sum())
            caption[rng.random((m, n_c)) < 0.01] = np.float32(0.95)  # ties across shards
            metas = []
            for j in range(start, start + m):
                status, image_row, caption_row = "ok", j - start, j - start
                if s in failing:
                    status, image_row, caption_row = ("decode_error", "inference_error")[j % 2], -1, -1
                elif j % 13 == 3:
                    status, image_row = "missing_image", -1
                elif j % 19 == 4:
                    status, image_row, caption_row = "inference_error", -1, -1
                metas.append(RowMeta(f"s{s}k{j:04d}", j, f"http://x/{s}/{j}", f"caption {s} {j}", status,
                                     image_row=image_row, caption_row=caption_row))
            if m:
                writer.add(builder.build(name, metas, image, caption))
        writer.commit({"shard": name, "status": "complete", "started_at": 1.0 * s, "finished_at": 1.0 * s + 2})
    return out


def report_json(out, *extra):
    result = run_cli("report", str(out), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def without_summaries(out, where):
    shutil.copytree(out, where)
    for path in list(where.glob("*.summary.json")) + list(where.glob("*.hist.bin")):
        path.unlink()
    return where


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_summaries_equal_the_full_pass(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    sizes = [int(n) for n in rng.integers(1, 140, 6)] + [0]  # and an empty shard
    out = write_reports(tmp_path / "r", seed, sizes, failing={2})
    assert len(list(out.glob("*.summary.json"))) == len(sizes) == len(list(out.glob("*.hist.bin")))
    plain = without_summaries(out, tmp_path / "plain")
    for extra in ((), ("--concept", TAX.concept_ids[0], "--top", "4"), ("--shard", "0000[0-2]"), ("--top", "30")):
        fast, full = report_json(out, *extra), report_json(plain, *extra)
        assert fast["overview"]["flagged"] > 0
        assert fast == full, extra


def test_only_failures_and_nothing_flagged_show_the_same_highest_scores(tmp_path):
    out = write_reports(tmp_path / "r", 3, [5, 7], failing={0, 1})
    plain = without_summaries(out, tmp_path / "plain")
    fast, full = report_json(out), report_json(plain)
    assert fast["overview"]["flagged"] == 0 and fast["overview"]["failed"] == 12
    assert fast == full


def test_summary_path_reads_no_rows(tmp_path, monkeypatch):
    """The default dashboard never runs the row pass when every shard has its summary."""
    from vlmaudit.report import summary

    out = write_reports(tmp_path / "r", 4, [30, 40])
    monkeypatch.setattr(summary, "count", lambda *a, **k: pytest.fail("read the rows"))
    assert report_json(out)["overview"]["samples"] == 70


@pytest.mark.parametrize("damage", ["garbage", "foreign", "rows", "hist", "hist-tail"])
def test_damaged_or_foreign_summaries_are_refused_naming_the_file(tmp_path, damage):
    out = write_reports(tmp_path / "r", 5, [20, 25])
    target = out / "00001.summary.json"
    summary = json.loads(target.read_text())
    if damage == "garbage":
        target.write_text("{not json")
    elif damage == "foreign":
        summary["taxonomy"] = "0" * 64
        target.write_text(json.dumps(summary))
    elif damage == "rows":  # a summary of another version of the shard
        summary["rows"] += 1
        summary["status"]["ok"] = summary["status"].get("ok", 0) + 1
        target.write_text(json.dumps(summary))
    else:  # the block table (read by every report), or the last block (read by a re-threshold)
        data = bytearray((out / "00001.hist.bin").read_bytes())
        data[-3 if damage == "hist-tail" else 30] ^= 0xFF
        (out / "00001.hist.bin").write_bytes(bytes(data))
    result = run_cli("report", str(out), *(["--threshold", "0.5"] if damage == "hist-tail" else []))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "00001." in lines[0], result.output


def test_summarize_writes_the_missing_summaries(tmp_path):
    out = write_reports(tmp_path / "r", 6, [15, 0, 33])
    plain = without_summaries(out, tmp_path / "plain")
    result = run_cli("summarize", str(plain))
    assert result.exit_code == 0, result.output
    for name in ("00000", "00001", "00002"):  # the same bytes the scan's writer wrote
        assert (plain / f"{name}.summary.json").read_bytes() == (out / f"{name}.summary.json").read_bytes()
        assert (plain / f"{name}.hist.bin").read_bytes() == (out / f"{name}.hist.bin").read_bytes()
    assert not [p for p in plain.iterdir() if p.name.startswith(".")]  # no temporary file or claim left
    stamp = (plain / "00001.summary.json").stat().st_mtime_ns
    (plain / "00002.summary.json").unlink()
    result = run_cli("summarize", str(plain))
    assert result.exit_code == 0 and "1 summary written" in result.output, result.output
    assert (plain / "00001.summary.json").stat().st_mtime_ns == stamp  # a valid summary is left alone
    assert report_json(plain) == report_json(out)


def no_row_pass(monkeypatch):
    from vlmaudit.report import summary

    monkeypatch.setattr(summary, "count", lambda *a, **k: pytest.fail("read the rows"))


@pytest.mark.parametrize("threshold", ["0.5", "0.3", "0.95", "0.001"])
def test_one_threshold_on_a_bin_edge_comes_from_the_histograms_exactly(tmp_path, monkeypatch, threshold):
    """`--threshold T` (T a multiple of 1/1000) is answered from hist.bin without reading rows, and
    says what a full pass over the rows says, examples and per-shard counts included."""
    rng = np.random.default_rng(7)
    out = write_reports(tmp_path / "r", 8, [int(n) for n in rng.integers(1, 120, 5)] + [0], failing={1})
    plain = without_summaries(out, tmp_path / "plain")
    full = report_json(plain, "--threshold", threshold, "--top", "75", "--examples", "8")
    with monkeypatch.context() as patch:
        no_row_pass(patch)
        fast = report_json(out, "--threshold", threshold, "--top", "75", "--examples", "8")
    assert fast["overview"]["flagged"] > 0
    assert fast == full


def test_a_threshold_between_bin_edges_reads_the_rows(tmp_path, monkeypatch):
    from vlmaudit.report import summary

    out = write_reports(tmp_path / "r", 9, [40, 30])
    plain = without_summaries(out, tmp_path / "plain")
    calls = []
    real = summary.count
    monkeypatch.setattr(summary, "count", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert report_json(out, "--threshold", "0.5005") == report_json(plain, "--threshold", "0.5005")
    assert len(calls) == 2  # both directories took the row pass
    for mixed in (["--threshold", "0.5", "--threshold", "sexual=0.4"], ["--threshold", "0.4", "--concept", TAX.concept_ids[3]]):
        calls.clear()
        assert report_json(out, *mixed) == report_json(plain, *mixed)
        assert len(calls) == 2, mixed  # one threshold per category or a slice: the rows decide


def test_worker_processes_give_the_numbers_of_one_process(tmp_path, monkeypatch):
    """Above POOL_MIN_FILES files the summaries are folded in worker processes (spawned, importing
    the installed package): the same JSON as in-process and as the rows."""
    from vlmaudit.report import summary_fold

    rng = np.random.default_rng(11)
    out = write_reports(tmp_path / "r", 10, [int(n) for n in rng.integers(1, 60, 9)] + [0])
    plain = without_summaries(out, tmp_path / "plain")
    monkeypatch.setattr(summary_fold, "_cores", lambda: 2)
    runs = []
    real = summary_fold.ProcessPoolExecutor if hasattr(summary_fold, "ProcessPoolExecutor") else None
    assert real is None  # imported inside run(): spy on the pool through concurrent.futures
    import concurrent.futures

    pool = concurrent.futures.ProcessPoolExecutor

    class Spy(pool):
        def __init__(self, *a, **k):
            runs.append(a)
            super().__init__(*a, **k)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Spy)
    for extra in ((), ("--threshold", "0.4")):
        monkeypatch.setattr(summary_fold, "POOL_MIN_FILES", 10 ** 9)
        single = report_json(out, *extra)
        monkeypatch.setattr(summary_fold, "POOL_MIN_FILES", 2)
        runs.clear()
        pooled = report_json(out, *extra)
        assert runs, "no worker pool was started"
        assert pooled == single == report_json(plain, *extra), extra


def test_the_row_pass_checks_scores_in_the_same_pass(tmp_path, monkeypatch):
    """Without summaries, the pass that reads the score lists (counting for a re-threshold, the
    details at the scan's thresholds) finds damaged scores: the check pass runs only to name the
    file once something is found."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmaudit.report import engine

    out = write_reports(tmp_path / "r", 12, [30, 20])
    plain = without_summaries(out, tmp_path / "plain")
    calls = []
    real = engine.check_scores
    monkeypatch.setattr(engine, "check_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert report_json(plain, "--threshold", "0.5")["overview"]["samples"] == 50
    assert report_json(plain)["overview"]["flagged"] > 0  # stored flags: the details pass checks
    assert not calls
    table = pq.read_table(plain / "00001.parquet")
    scores = table.column("image_scores").to_pylist()
    row = next(i for i, s in enumerate(scores) if s)
    scores[row] = [float("nan")] * len(scores[row])
    table = table.set_column(table.schema.get_field_index("image_scores"), table.schema.field("image_scores"),
                             pa.array(scores, table.schema.field("image_scores").type))
    pq.write_table(table, plain / "00001.parquet")
    for extra in (["--threshold", "0.5"], []):
        calls.clear()
        result = run_cli("report", str(plain), *extra)
        assert result.exit_code == 2 and "00001.parquet" in result.output and "NaN" in result.output, result.output
        assert calls


def test_a_shard_of_another_run_with_its_own_summary_is_refused_as_mixed(tmp_path):
    """Each summary records its run's metadata digest: a file of another model copied in with its
    summary is caught without reading every footer, and refused as `report` refuses mixed runs."""
    out = write_reports(tmp_path / "r", 13, [20, 30])
    other = write_reports(tmp_path / "o", 14, [0, 0, 25], model="someone/else")
    for name in ("00002.parquet", "00002.summary.json", "00002.hist.bin", "00002.stats.json"):
        shutil.copy(other / name, out / name)
    result = run_cli("report", str(out))
    assert result.exit_code == 2 and "00002.parquet: another model" in result.output, result.output
    assert report_json(out, "--allow-mixed")["overview"]["samples"] == 75


def test_a_report_file_rewritten_after_its_summary_is_read_from_its_rows(tmp_path):
    import pyarrow.parquet as pq

    out = write_reports(tmp_path / "r", 15, [40, 30])
    before = report_json(out)
    table = pq.read_table(out / "00001.parquet")
    pq.write_table(table.slice(0, 10), out / "00001.parquet")  # same run, other rows: the footer changed
    (out / "00001.stats.json").write_text(json.dumps({**json.loads((out / "00001.stats.json").read_text()), "rows": 10}))
    after = report_json(out)
    assert before["overview"]["samples"] == 70 and after["overview"]["samples"] == 50


def _forge(out, name, change):
    target = out / f"{name}.summary.json"
    summary = json.loads(target.read_text())
    change(summary)
    target.write_text(json.dumps(summary))


def _bump_counts(s):
    s["counts"][10] = s["rows"] + 5


FORGED = {  # summaries that keep their digests but say something impossible (found in review)
    "superscript-digit candidate key": lambda s: s["candidates"].update({"\u00b2": []}),
    "arabic-digit candidate key": lambda s: s["candidates"].update({"\u0663": []}),
    "highest row with a text score": lambda s: s.update(highest=[["00001", "k", "c", "x", "c", 0.5]]),
    "highest row without a score": lambda s: s.update(highest=[["00001", "k", "c", None, "c", None]]),
    "a concept count above the rows": _bump_counts,
    "a category count near 2**63": lambda s: s["counts"].__setitem__(-1, 2 ** 63 - 1),
    "a score sum above its count": lambda s: s["score_sums"].__setitem__(0, 1e6),
    "another shard's name": lambda s: s.update(shards={"zzz": list(s["shards"]["00001"])}),
    "a candidate of two fields": lambda s: s["candidates"].update({"0": [[0.5, "00001"]]}),
    "a candidate whose score is text": lambda s: s["candidates"].update({"0": [["0.5", "00001", 3]]}),
}


@pytest.mark.parametrize("case", list(FORGED), ids=list(FORGED))
def test_forged_summaries_that_do_not_add_up_are_refused(tmp_path, case):
    out = write_reports(tmp_path / "r", 16, [20, 25])
    _forge(out, "00001", FORGED[case])
    result = run_cli("report", str(out))
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "00001.summary.json" in lines[0], result.output


def test_histograms_whose_both_block_exceeds_its_image_block_are_refused(tmp_path):
    import zlib

    from vlmaudit.report.shard_hists import HEAD, MAGIC, block_count

    out = write_reports(tmp_path / "r", 17, [30, 20])
    path = out / "00001.hist.bin"
    data = path.read_bytes()
    n = block_count(len(TAX.concept_ids), len(TAX.category_ids))
    head = len(MAGIC) + HEAD.size
    width = HEAD.unpack_from(data, len(MAGIC))[-1]
    lengths = list(np.frombuffer(data, "<u4", n, head))
    blocks, at = [], head + 4 * n
    for length in lengths:
        blocks.append(data[at:at + int(length)])
        at += int(length)
    both = np.zeros(1000, f"<u{width}")
    both[999] = 1000  # more rows reach every threshold in both modalities than in the image
    blocks[2] = zlib.compress(both.tobytes())
    lengths[2] = len(blocks[2])
    forged = data[:head] + np.asarray(lengths, "<u4").tobytes() + b"".join(blocks)
    path.write_bytes(forged)
    import hashlib

    _forge(out, "00001", lambda s: s["hist"].update(sha256=hashlib.sha256(forged).hexdigest(), bytes=len(forged)))
    result = run_cli("report", str(out), "--threshold", "0.5")
    assert result.exit_code == 2 and "00001.hist.bin: histograms that do not add up" in result.output, result.output


def test_files_outside_the_shard_selection_are_still_checked(tmp_path):
    out = write_reports(tmp_path / "r", 18, [20, 25])
    other = write_reports(tmp_path / "o", 19, [0, 0, 25], model="someone/else")
    for name in ("00002.parquet", "00002.summary.json", "00002.hist.bin", "00002.stats.json"):
        shutil.copy(other / name, out / name)
    plain = without_summaries(out, tmp_path / "plain")
    for where in (out, plain):  # the summary path and the rows path agree
        result = run_cli("report", str(where), "--shard", "0000[01]")
        assert result.exit_code == 2 and "00002.parquet: another model" in result.output, (where, result.output)


def test_a_summary_left_from_a_rewrite_with_other_thresholds_is_stale_not_damaged(tmp_path):
    """The Parquet file was rewritten by a scan with other thresholds: its old summary (another
    taxonomy digest, another footer) is stale: the rows are read and `summarize` rewrites it."""
    out = write_reports(tmp_path / "r", 20, [20, 25])
    old = (out / "00001.summary.json").read_text()
    again = write_reports(tmp_path / "again", 21, [20, 25])
    _forge(again, "00001", lambda s: None)
    shutil.copy(again / "00001.parquet", out / "00001.parquet")  # footer differs from the old summary's
    summary = json.loads(old)
    summary["taxonomy"] = "0" * 64  # as if made with other thresholds
    (out / "00001.summary.json").write_text(json.dumps(summary))
    before = (out / "00001.parquet").read_bytes()
    if json.loads(old)["footer_sha256"] == json.loads((again / "00001.summary.json").read_text())["footer_sha256"]:
        pytest.skip("the rewrite produced the same footer bytes")
    assert run_cli("report", str(out)).exit_code == 0
    assert run_cli("summarize", str(out)).exit_code == 0
    assert json.loads((out / "00001.summary.json").read_text())["taxonomy"] != "0" * 64
    assert (out / "00001.parquet").read_bytes() == before


def test_a_shard_with_damaged_scores_is_committed_without_a_summary(tmp_path):
    """A NaN from a model inside a score list: the scan still commits the shard (stats written),
    without a summary, and `report` refuses its rows naming the file, as before summaries."""
    from vlmaudit.report.shard_summary import summarize_table
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.scan.writer import ShardWriter
    from vlmaudit.schema import report_meta, report_schema

    meta = report_meta(TAX, RULES.thresholds, {"model": "synthetic", "backend": "synthetic"})
    schema = report_schema(TAX, meta)
    builder = RowBuilder(TAX, RULES.thresholds, schema, "synthetic@0")
    n_c = len(TAX.concept_ids)
    image = np.full((4, n_c), 0.1, np.float32)
    image[2, 5] = np.nan
    metas = [RowMeta(f"k{j}", j, None, f"c{j}", "ok", image_row=j, caption_row=j) for j in range(4)]
    writer = ShardWriter.claim_shard(tmp_path, "00000", schema, summarizer=summarize_table)
    writer.add(builder.build("00000", metas, image, image.copy()))
    writer.commit({"shard": "00000", "status": "complete", "started_at": 0.0, "finished_at": 1.0})
    assert (tmp_path / "00000.stats.json").exists() and not (tmp_path / "00000.summary.json").exists()
    result = run_cli("report", str(tmp_path))
    assert result.exit_code == 2 and "00000.parquet" in result.output and "NaN" in result.output, result.output


def _set(key, value):
    return lambda s: s.__setitem__(key, value)


def _first_candidate(value):
    return lambda s: s["candidates"].__setitem__("0", [value])


def _first_highest(value):
    return lambda s: s["highest"].__setitem__(0, value)


def _hist(key, value):
    return lambda s: s["hist"].__setitem__(key, value)


MALFORMED = [  # (what, damage, message)
    ("format", _set("format", "vlmaudit.other"), "not a vlmaudit shard summary"),
    ("taxonomy", _set("taxonomy", "0" * 64), "summary of another taxonomy or thresholds than its report"),
    ("rows negative", _set("rows", -1), "field rows must be a count"),
    ("rows bool", _set("rows", True), "field rows must be a count"),
    ("rows float", _set("rows", 20.0), "field rows must be a count"),
    ("status list", _set("status", [["ok", 20]]), "field status malformed"),
    ("status key", _set("status", {1: 20}), "field status malformed"),
    ("status value", _set("status", {"ok": -1}), "field status malformed"),
    ("shards list", _set("shards", [["00000", 20, 14]]), "field shards malformed"),
    ("shards key", _set("shards", {0: [20, 14]}), "field shards malformed"),
    ("shards length", _set("shards", {"00000": [20]}), "field shards malformed"),
    ("counts length", lambda s: s["counts"].append(0), "field counts malformed"),
    ("counts float", lambda s: s["counts"].__setitem__(5, 0.5), "field counts malformed"),
    ("counts negative", lambda s: s["counts"].__setitem__(5, -1), "field counts malformed"),
    ("counts none", _set("counts", None), "field counts malformed"),
    ("sums nan", lambda s: s["score_sums"].__setitem__(0, float("nan")), "field score_sums / score_counts malformed"),
    ("sums inf", lambda s: s["score_sums"].__setitem__(0, float("inf")), "field score_sums / score_counts malformed"),
    ("sums text", lambda s: s["score_sums"].__setitem__(0, "1"), "field score_sums / score_counts malformed"),
    ("sums length", lambda s: s["score_sums"].pop(), "field score_sums / score_counts malformed"),
    ("scored float", lambda s: s["score_counts"].__setitem__(0, 1.5), "field score_sums / score_counts malformed"),
    ("scored nested", lambda s: s["score_counts"].__setitem__(0, [1]), "field score_sums / score_counts malformed"),
    ("candidates list", _set("candidates", []), "field candidates malformed"),
    ("candidates key", lambda s: s["candidates"].__setitem__("x", []), "field candidates malformed"),
    ("candidates key range", lambda s: s["candidates"].__setitem__(str(len(TAX.concept_ids)), []),
     "field candidates malformed"),
    ("candidates too many", lambda s: s["candidates"].__setitem__("0", [[0.5, "00000", i] for i in range(101)]),
     "field candidates malformed"),
    ("candidate score", _first_candidate([1.5, "00000", 1]), "field candidates malformed"),
    ("candidate bool", _first_candidate([True, "00000", 1]), "field candidates malformed"),
    ("candidate shard", _first_candidate([0.5, 0, 1]), "field candidates malformed"),
    ("candidate index", _first_candidate([0.5, "00000", 1.0]), "field candidates malformed"),
    ("candidate index bool", _first_candidate([0.5, "00000", False]), "field candidates malformed"),
    ("candidate length", _first_candidate([0.5, "00000"]), "field candidates malformed"),
    ("highest dict", _set("highest", {}), "field highest malformed"),
    ("highest too many", lambda s: s["highest"].extend([["00000", "k", "c", 0.5, None, None]] * 6),
     "field highest malformed"),
    ("highest length", _first_highest(["00000", "k", "c", 0.5, "d"]), "field highest malformed"),
    ("highest no score", _first_highest(["00000", "k", "c", None, "d", None]), "field highest malformed"),
    ("highest score", _first_highest(["00000", "k", "c", 1.5, "d", None]), "field highest malformed"),
    ("highest bool score", _first_highest(["00000", "k", "c", None, "d", True]), "field highest malformed"),
    ("highest key", _first_highest(["00000", 7, "c", 0.5, "d", 0.5]), "field highest malformed"),
    ("highest concept", _first_highest(["00000", "k", 7, 0.5, "d", 0.5]), "field highest malformed"),
    ("highest caption concept", _first_highest(["00000", "k", "c", 0.5, 7, 0.5]), "field highest malformed"),
    ("hist list", _set("hist", []), "field hist malformed"),
    ("hist bins", _hist("bins", 100), "field hist malformed"),
    ("hist sha256", _hist("sha256", None), "field hist malformed"),
    ("hist index", _hist("index_sha256", 1), "field hist malformed"),
    ("hist bytes", _hist("bytes", -1), "field hist malformed"),
    ("hist bytes bool", _hist("bytes", True), "field hist malformed"),
    ("status sum", lambda s: s["status"].__setitem__("ok", s["status"]["ok"] + 1), "counts do not add up"),
    ("flagged above rows", lambda s: s.update(rows=13, status={"ok": 13}, shards={"00000": [13, 14]}),
     "counts do not add up"),
    ("split", lambda s: s["counts"].__setitem__(1, s["counts"][1] + 1), "counts do not add up"),
    ("concept above flagged", lambda s: s["counts"].__setitem__(-1, s["counts"][0] + 1), "counts do not add up"),
    ("scored above rows", lambda s: s["score_counts"].__setitem__(0, 21), "counts do not add up"),
    ("sum above count", lambda s: s["score_sums"].__setitem__(0, s["score_counts"][0] + 0.01), "counts do not add up"),
    ("shard rows", _set("shards", {"00000": [19, 14]}), "counts do not add up"),
    ("shard flags", _set("shards", {"00000": [20, 13]}), "counts do not add up"),
    ("shard flags above rows", _set("shards", {"00000": [10, 11], "00001": [10, 3]}), "counts do not add up"),
]


def _valid_summary(tmp_path):
    import pyarrow.parquet as pq

    from vlmaudit.schema import read_meta

    out = write_reports(tmp_path / "r", 5, [20])
    summary = json.loads((out / "00000.summary.json").read_text())
    assert summary["rows"] == 20 and summary["status"] == {"inference_error": 1, "missing_image": 2, "ok": 17}
    assert summary["counts"][0] == 14 and summary["shards"] == {"00000": [20, 14]}
    return summary, read_meta(pq.read_schema(out / "00000.parquet"))


def test_the_shard_summary_check_refuses_each_malformed_field_with_its_own_message(tmp_path):
    """shard_summary.check, field by field (found by mutation testing: the end-to-end tests damage a
    summary in a few ways only): each damage is refused naming the field; a valid summary, scores at
    0 and 1 and a row with one score pass."""
    import copy

    from vlmaudit.report.reading import DamagedReport
    from vlmaudit.report.shard_summary import SummaryMismatch, check

    valid, meta = _valid_summary(tmp_path)
    assert check(copy.deepcopy(valid), meta, "s.json", {"rows": 20, "shard": "00000"}) == valid
    edge = copy.deepcopy(valid)
    edge["candidates"]["0"] = [[1, "00000", 1], [0, "00000", 2], [0.5, "other", 3]]
    edge["highest"][0] = [None, None, None, None, "d", 0]
    assert check(edge, meta, "s.json") is edge
    for what, damage, message in MALFORMED:
        summary = copy.deepcopy(valid)
        damage(summary)
        with pytest.raises(DamagedReport, match="^s.json: " + re.escape(message)) as raised:
            check(summary, meta, "s.json")
        assert not isinstance(raised.value, SummaryMismatch), what
    with pytest.raises(DamagedReport, match=r"^s.json: not a vlmaudit shard summary"):
        check([valid], meta, "s.json")
    for expect, message in [({"rows": 21}, "summary counts 20 rows, its report holds 21; re-create it with "
                              "`vlmaudit summarize`"), ({"shard": "00001"}, "counts do not add up"),
                            ({"taxonomy": "f" * 64}, "summary of another taxonomy")]:
        with pytest.raises(DamagedReport, match="^s.json: " + re.escape(message)):
            check(copy.deepcopy(valid), meta, "s.json", expect)


def test_a_stale_shard_summary_is_a_mismatch_not_damage(tmp_path):
    import copy

    from vlmaudit.report.shard_summary import SummaryMismatch, check

    valid, meta = _valid_summary(tmp_path)
    stale = [({"version": 1}, {}, "shard summary version 1, expected 2 (run `vlmaudit summarize` again)"),
             ({}, {"footer": "0" * 64}, "made from another version of its Parquet file"),
             ({}, {"meta": "0" * 64}, "made for another run's metadata than the first report's")]
    for change, expect, message in stale:
        summary = copy.deepcopy(valid) | change
        with pytest.raises(SummaryMismatch, match="^s.json: " + re.escape(message)):
            check(summary, meta, "s.json", expect)
    same = {"footer": valid["footer_sha256"], "meta": valid["meta_sha256"], "taxonomy": valid["taxonomy"], "rows": 20}
    assert check(copy.deepcopy(valid), meta, "s.json", same) == valid
