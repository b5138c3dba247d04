"""Per-shard summaries (report.shard_summary, written by the scan's writer): merged, they give
exactly the numbers a full pass over the rows gives, on seeded random reports with empty shards and
shards holding only failed rows; damaged, foreign or stale summaries are refused naming the file."""

import json
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
