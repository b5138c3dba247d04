"""The scan loop (scan/scanner.py) and the cascade's second stage (scan/escalation.py) with a
stand-in scorer whose scores are known: result counts, progress calls, the stats record field by
field, skipped/failed/permanent shards, model failures, and which rows the judge replaces."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import image_bytes, write_tar
from vlmaudit import __version__
from vlmaudit.rulebook.load import load_rules
from vlmaudit.scan import scanner as S
from vlmaudit.scan.escalation import refine_shard
from vlmaudit.scan.rows import RowBuilder, RowMeta
from vlmaudit.scan.scanner import NullProgress, ScanResult, Scanner, scan_shard, score_batch
from vlmaudit.scan.worker import PreparedBatch, ScanSettings, ShardJob
from vlmaudit.schema import report_meta, report_schema

RULES = load_rules()
N = len(RULES.taxonomy.concepts)


def png(colour=(0, 0, 255)) -> bytes:
    return image_bytes((8, 8), "PNG", colour)


def jpeg() -> bytes:
    return image_bytes((16, 16), "JPEG", (0, 0, 255))


class Prep:
    draft_size = None

    def __init__(self):
        self.images = 0

    def prepare(self, images, captions):
        self.images += len(images)
        out = {}
        if images:
            out["red"] = [im.getpixel((0, 0))[0] / 255 for im in images]
        if captions:
            out["flag"] = ["flag" in c for c in captions]
        return out


class Backend:
    """Image score of concept 0 = the red share of the image; caption score = 1 if it says 'flag'."""

    stage = "screen"
    device = "cpu"

    def __init__(self, name="fake", escalation=None, fail=False):
        self.name, self.escalation, self.fail, self.preprocessor = name, escalation, fail, Prep()

    def describe(self):
        return {"model": f"{self.name}-model", "revision": "r1"}

    def score(self, inputs):
        if self.fail:
            raise RuntimeError("out of memory")
        image = np.zeros((len(inputs.get("red", [])), N), np.float32)
        image[:, 0] = inputs.get("red", [])
        caption = np.zeros((len(inputs.get("flag", [])), N), np.float32)
        caption[:, 0] = inputs.get("flag", [])
        return image, caption


class Progress:
    def __init__(self):
        self.calls = []

    def batch(self, rows, flagged):
        self.calls.append(("batch", rows, flagged))

    def shard_done(self, name, status):
        self.calls.append(("done", name, status))


def schema_for(backend):
    return report_schema(RULES.taxonomy, report_meta(RULES.taxonomy, RULES.thresholds, backend.describe()))


def shard(tmp_path, name="s.tar", red=(1, 3)):
    members = []
    for i in range(5):
        members += [(f"k{i}.png", png((255, 0, 0) if i in red else (0, 0, 255))), (f"k{i}.txt", f"caption {i}".encode())]
    members += [("k9.txt", b"flag me"), ("k9.xyz", b"?")]
    return str(write_tar(tmp_path / name, members))


def scan(tmp_path, jobs, backend=None, progress=None, **settings):
    backend = backend or Backend()
    settings = ScanSettings(**{"workers": 0, "batch_size": 4, "hashes": False, **settings})
    scanner = Scanner(backend, RULES, tmp_path / "out", settings, schema_for(backend), progress=progress)
    return scanner, scanner.run(jobs)


def stats_of(tmp_path, name="s"):
    return json.loads((tmp_path / "out" / f"{name}.stats.json").read_text())


def test_scan_results_of_a_shard_and_its_progress(tmp_path):
    progress = Progress()
    _, result = scan(tmp_path, [ShardJob(shard(tmp_path), "s")], progress=progress)
    assert (result.shards, result.rows, result.flagged, result.permanent) == ({"s": "complete"}, 6, 3, set())
    assert progress.calls == [("batch", 4, 2), ("batch", 2, 1), ("done", "s", "complete")]
    rows = pq.read_table(tmp_path / "out" / "s.parquet").to_pylist()
    assert [(r["key"], r["flagged"], r["decided_by"], r["model"]) for r in rows] == [
        ("k0", False, "screen", "fake-model@r1"), ("k1", True, "screen", "fake-model@r1"),
        ("k2", False, "screen", "fake-model@r1"), ("k3", True, "screen", "fake-model@r1"),
        ("k4", False, "screen", "fake-model@r1"), ("k9", True, "screen", "fake-model@r1")]


def test_the_stats_record_field_by_field(tmp_path):
    _, result = scan(tmp_path, [ShardJob(shard(tmp_path), "s")])
    stats = stats_of(tmp_path)
    assert {k: stats[k] for k in ("shard", "url", "status", "error", "failure", "members_ignored", "ignored_kinds",
                                  "vlmaudit_version", "rows", "flagged", "status_counts")} == {
        "shard": "s", "url": str(tmp_path / "s.tar"), "status": "complete", "error": None, "failure": None,
        "members_ignored": 1, "ignored_kinds": {".xyz": 1}, "vlmaudit_version": __version__, "rows": 6,
        "flagged": {"image": 2, "caption": 1, "any": 3}, "status_counts": {"ok": 5, "missing_image": 1}}
    assert set(stats["seconds"]) == {"wall", "model", "decode_preprocess_workers"}
    assert all(v >= 0 for v in stats["seconds"].values())
    assert stats["started_at"] <= stats["finished_at"]


def test_a_missing_local_shard_fails_for_good_and_a_broken_pipe_for_now(tmp_path):
    progress = Progress()
    jobs = [ShardJob(str(tmp_path / "gone.tar"), "gone"), ShardJob("pipe:exit 3", "pipe")]
    _, result = scan(tmp_path, jobs, progress=progress, retries=0)
    assert result.shards == {"gone": "failed", "pipe": "failed"} and result.permanent == {"gone"}
    assert result.failed == ["gone", "pipe"] and result.skipped == [] and result.rows == 0
    gone, pipe = stats_of(tmp_path, "gone"), stats_of(tmp_path, "pipe")
    assert (gone["failure"], pipe["failure"]) == ("permanent", "transient")
    assert gone["error"].startswith("cannot open: FileNotFoundError: ") and gone["rows"] == 0
    assert not (tmp_path / "out" / "gone.parquet").exists()
    assert ("done", "gone", "failed") in progress.calls and ("done", "pipe", "failed") in progress.calls


def test_a_damaged_shard_is_truncated_and_keeps_its_rows(tmp_path):
    path = shard(tmp_path)
    data = open(path, "rb").read()
    (tmp_path / "cut.tar").write_bytes(data[:512 * 8])
    _, result = scan(tmp_path, [ShardJob(str(tmp_path / "cut.tar"), "cut")])
    stats = stats_of(tmp_path, "cut")
    assert result.shards == {"cut": "truncated"} and stats["failure"] is None and stats["error"]
    assert pq.read_table(tmp_path / "out" / "cut.parquet").num_rows == stats["rows"] > 0


def test_the_shard_url_in_the_stats_is_redacted(tmp_path):
    _, result = scan(tmp_path, [ShardJob("http://user:hunter2@127.0.0.1:9/s.tar", "s")], retries=0)
    stats = stats_of(tmp_path)
    assert stats["url"] == "http://127.0.0.1:9/s.tar" and stats["failure"] == "transient"


def test_a_shard_another_writer_holds_is_skipped_without_files(tmp_path):
    from vlmaudit.scan.writer import ShardWriter

    backend = Backend()
    holder = ShardWriter.claim_shard(tmp_path / "out", "s", schema_for(backend))
    progress = Progress()
    scanner, result = scan(tmp_path, [ShardJob(shard(tmp_path), "s")], backend, progress)
    assert result.shards == {"s": "skipped"} and result.skipped == ["s"] and result.rows == 0
    assert progress.calls == [("done", "s", "skipped")] and scanner.skipping == set()
    assert not (tmp_path / "out" / "s.stats.json").exists()
    holder.abort()


def test_a_done_shard_is_skipped_unless_overwrite(tmp_path):
    job = ShardJob(shard(tmp_path), "s")
    scan(tmp_path, [job])
    _, again = scan(tmp_path, [job])
    assert again.shards == {"s": "skipped"}
    _, forced = scan(tmp_path, [job], overwrite=True)
    assert forced.shards == {"s": "complete"} and forced.rows == 6


def test_a_model_failure_costs_the_batch_rows_not_the_shard(tmp_path):
    _, result = scan(tmp_path, [ShardJob(shard(tmp_path), "s")], Backend(fail=True))
    stats = stats_of(tmp_path)
    assert result.shards == {"s": "complete"} and stats["status_counts"] == {"inference_error": 6}
    rows = pq.read_table(tmp_path / "out" / "s.parquet").to_pylist()
    assert {r["error"] for r in rows} == {"RuntimeError: out of memory"} and rows[0]["image_scores"] is None


def test_score_batch():
    metas = [RowMeta("a", 0, None, "c", "ok", image_row=0, caption_row=0), RowMeta("b", 1, None, None, "ok", image_row=1),
             RowMeta("c", 2, None, "c", "ok", caption_row=1), RowMeta("d", 3, None, None, "decode_error", "x")]
    batch = PreparedBatch(ShardJob("u", "n"), metas, {}, 0.0)
    assert score_batch(Backend(fail=True), batch) == (None, None, {})  # nothing to score: never called

    class WithExtras(Backend):
        def score(self, inputs):
            return "I", "C", {"image_unsafe": 1}, "ignored"

    batch.inputs = {"red": [0.0]}
    assert score_batch(WithExtras(), batch) == ("I", "C", {"image_unsafe": 1})

    class Failing(Backend):
        def score(self, inputs):
            raise MemoryError("x" * 600)

    assert score_batch(Failing(), batch) == (None, None, {})
    assert [(m.status, m.error, m.image_row, m.caption_row) for m in metas] == [
        ("inference_error", ("MemoryError: " + "x" * 600)[:500], -1, -1)] * 3 + [("decode_error", "x", -1, -1)]


def test_scan_results_merge():
    a = ScanResult({"x": "complete"}, rows=2, flagged=1, permanent={"p"})
    a.merge(ScanResult({"y": "skipped", "x": "failed"}, rows=3, flagged=4, permanent={"q"}))
    assert (a.shards, a.rows, a.flagged, a.permanent) == ({"x": "failed", "y": "skipped"}, 5, 5, {"p", "q"})
    assert (a.failed, a.skipped) == (["x"], ["y"])
    assert ScanResult() == ScanResult({}, 0, 0, set())
    NullProgress().batch(1, 1)
    NullProgress().shard_done("s", "complete")


def test_scan_shard_runs_in_process_and_returns_its_files(tmp_path):
    backend = Backend()
    files = scan_shard(ShardJob(shard(tmp_path), "s"), backend, RULES, tmp_path / "out",
                       ScanSettings(workers=4, hashes=False), schema_for(backend))
    assert files == [str(tmp_path / "out" / "s.parquet"), str(tmp_path / "out" / "s.stats.json")]
    failed = scan_shard(ShardJob(str(tmp_path / "gone.tar"), "g"), backend, RULES, tmp_path / "out",
                        ScanSettings(retries=0), schema_for(backend))
    assert failed == [str(tmp_path / "out" / "g.stats.json")]


def test_batches_are_pinned_only_for_a_cuda_model_and_a_gpu_decoder_is_made_for_gpu_decoding(tmp_path, monkeypatch):
    from vlmaudit.scan import gpu_decode

    seen = []
    monkeypatch.setattr(S, "iter_prepared", lambda jobs, prep, settings, pin_memory: seen.append(pin_memory) or iter(()))
    monkeypatch.setattr(gpu_decode, "torchvision_decoder", lambda device: f"decoder on {device}")
    cuda = Backend()
    cuda.device = "cuda:1"
    scanner, _ = scan(tmp_path, [], cuda)
    assert seen == [True] and scanner.on_cuda and scanner.decoder is None
    scanner = Scanner(cuda, RULES, tmp_path / "out", ScanSettings(decode="gpu", max_pixels=1234), schema_for(cuda))
    assert (scanner.decoder.device, scanner.decoder.max_pixels, scanner.decoder.decode_batch) == (
        "cuda:1", 1234, "decoder on cuda:1")
    assert scanner.decoder.preprocessor is cuda.preprocessor
    scanner, _ = scan(tmp_path, [])
    assert seen == [True, False] and scanner.decoder is None and not scanner.on_cuda


def test_a_commit_that_fails_leaves_nothing_and_the_error_propagates(tmp_path, monkeypatch):
    from vlmaudit.scan.writer import ShardWriter

    def full(self, stats):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ShardWriter, "commit", full)
    with pytest.raises(OSError, match="No space left"):
        scan(tmp_path, [ShardJob(shard(tmp_path), "s")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


# ---- the cascade's second stage ---------------------------------------------------------------------

class Escalation:
    """Judge the rows whose first-stage flag is set; the judge scores everything 0.9."""

    def __init__(self, judge, wanted=None):
        self.judge, self.wanted, self.tables = judge, wanted, []

    def escalated(self, table):
        self.tables.append(table)
        if self.wanted is not None:
            return np.array(self.wanted, np.int64)
        return np.array([i for i, f in zip(table.column("sample_index").to_pylist(),
                                           table.column("flagged").to_pylist()) if f], np.int64)


class Judge(Backend):
    stage = "judge"

    def score(self, inputs):
        image = np.full((len(inputs.get("red", [])), N), 0.1, np.float32)
        caption = np.full((len(inputs.get("flag", [])), N), 0.1, np.float32)
        extras = {"image_unsafe": np.full(len(image), 0.9, np.float32), "image_rationale": ["why"] * len(image)}
        return image, caption, extras


def test_the_judge_replaces_the_escalated_rows_and_keeps_the_screen_scores(tmp_path):
    judge = Judge("vlm")
    escalation = Escalation(judge)
    progress = Progress()
    _, result = scan(tmp_path, [ShardJob(shard(tmp_path), "s")], Backend(escalation=escalation), progress)
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "s.parquet").to_pylist()}
    assert [r["sample_index"] for r in rows.values()] == [0, 1, 2, 3, 4, 5]
    assert escalation.tables[0].num_rows == 6
    for key in ("k1", "k3", "k9"):
        assert rows[key]["decided_by"] == "vlm" and rows[key]["model"] == "vlm-model@r1"
        assert rows[key]["flagged"] is False
    assert rows["k1"]["screen_image_scores"][0] == pytest.approx(1.0) and rows["k1"]["image_unsafe"] == pytest.approx(0.9)
    assert rows["k1"]["rationale"] == "why" and rows["k9"]["screen_caption_scores"][0] == pytest.approx(1.0)
    assert rows["k9"]["screen_image_scores"] is None
    assert rows["k0"]["decided_by"] == "screen" and rows["k0"]["screen_image_scores"] is None
    stats = stats_of(tmp_path)
    assert (stats["escalated"], stats["judged"], stats["rows"]) == (3, 3, 6) and stats["seconds"]["second_stage"] >= 0
    assert stats["flagged"]["any"] == 0  # counted from the refined rows
    assert (result.rows, result.flagged) == (6, 3)  # the first stage's, as the batches came
    assert judge.preprocessor.images == 2


def test_nothing_escalated_keeps_the_table(tmp_path):
    judge = Judge("vlm")
    _, result = scan(tmp_path, [ShardJob(shard(tmp_path), "s")], Backend(escalation=Escalation(judge, [])))
    stats = stats_of(tmp_path)
    assert (stats["escalated"], stats["judged"]) == (0, 0) and judge.preprocessor.images == 0
    assert {r["decided_by"] for r in pq.read_table(tmp_path / "out" / "s.parquet").to_pylist()} == {"screen"}


def first_stage(tmp_path):
    backend = Backend()
    schema = schema_for(backend)
    rows = RowBuilder(RULES.taxonomy, RULES.thresholds, schema, "fake-model@r1")
    metas = [RowMeta(f"k{i}", i, None, f"caption {i}", "ok", image_row=i, caption_row=i) for i in range(5)]
    image = np.zeros((5, N), np.float32)
    table = pa.Table.from_batches([rows.build("s", metas, image, image.copy(), None, "screen")])
    return table, rows


def test_refine_shard_when_the_escalated_samples_are_not_in_the_shard(tmp_path):
    table, rows = first_stage(tmp_path)
    job = ShardJob(shard(tmp_path), "s")
    got, info = refine_shard(Escalation(Judge("vlm"), [77]), job, table, ScanSettings(workers=0), rows, score_batch)
    assert got is table and info == {"escalated": 1, "judged": 0}


def test_refine_shard_judges_on_the_cpu_path_even_when_the_scan_decodes_on_the_gpu(tmp_path):
    table, rows = first_stage(tmp_path)
    path = str(write_tar(tmp_path / "j.tar", [(f"k{i}.jpg", jpeg()) for i in range(5)]))
    judge = Judge("vlm")
    got, info = refine_shard(Escalation(judge, [2, 4]), ShardJob(path, "s"), table,
                             ScanSettings(workers=0, decode="gpu", hashes=False), rows, score_batch)
    assert info == {"escalated": 2, "judged": 2} and judge.preprocessor.images == 2
    assert got.column("sample_index").to_pylist() == [0, 1, 2, 3, 4]
    assert got.column("decided_by").to_pylist() == ["screen", "screen", "vlm", "screen", "vlm"]
    assert got.column("caption_scores").to_pylist()[2] is None  # the judge read no caption: the jpg-only shard has none
    assert got.column("screen_caption_scores").to_pylist()[2] == pytest.approx([0.0] * N)
    assert got.column("screen_image_scores").to_pylist()[2] == pytest.approx([0.0] * N)


def test_worker_time_is_summed_into_the_stats_and_batches_of_other_shards_interleave(tmp_path, monkeypatch):
    from vlmaudit.scan.tario import TarEnd

    def meta(key, i):
        return RowMeta(key, i, None, "flag" if key == "b0" else "c", "ok", caption_row=0)

    a, b = ShardJob("/x/a.tar", "a"), ShardJob("/x/b.tar", "b")
    prepared = [PreparedBatch(a, [meta("a0", 0)], {"flag": [False]}, 0.25),
                PreparedBatch(b, [meta("b0", 0)], {"flag": [True]}, 0.5),
                PreparedBatch(a, [meta("a1", 1)], {"flag": [False]}, 0.125, final=True, end=TarEnd()),
                PreparedBatch(b, [], {}, 0.0625, final=True, end=TarEnd(status="truncated", error="cut"))]
    monkeypatch.setattr(S, "iter_prepared", lambda jobs, prep, settings, pin_memory: iter(prepared))
    progress = Progress()
    _, result = scan(tmp_path, [a, b], progress=progress)
    assert result.shards == {"a": "complete", "b": "truncated"} and (result.rows, result.flagged) == (3, 1)
    assert stats_of(tmp_path, "a")["seconds"]["decode_preprocess_workers"] == 0.375
    assert stats_of(tmp_path, "b")["seconds"]["decode_preprocess_workers"] == 0.5625
    assert stats_of(tmp_path, "b")["error"] == "cut" and stats_of(tmp_path, "b")["rows"] == 1
    assert progress.calls == [("batch", 1, 0), ("batch", 1, 1), ("batch", 1, 0), ("done", "a", "complete"),
                              ("batch", 0, 0), ("done", "b", "truncated")]


def test_an_error_in_the_loop_aborts_every_open_shard(tmp_path, monkeypatch):
    def broken(jobs, prep, settings, pin_memory):
        yield PreparedBatch(ShardJob("/x/a.tar", "a"), [RowMeta("k", 0, None, "c", "ok", caption_row=0)],
                            {"flag": [False]}, 0.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "iter_prepared", broken)
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path, [ShardJob("/x/a.tar", "a")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
