"""The decoding worker (scan/worker.py) with a stand-in preprocessor: each sample's row fields and
status, batch sizes, retries and their waits, how a broken shard ends, preprocessing failures,
GPU deferral and hashes."""

import hashlib
import io
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import image_bytes, write_tar
from vlmaudit.scan import worker as W
from vlmaudit.scan.samples import Sample
from vlmaudit.scan.worker import PreparedBatch, ScanSettings, ShardJob, prepare_batch, prepare_shard


class Prep:
    """Records what it was given; refuses images whose top-left pixel is pure red."""

    draft_size = 64

    def __init__(self, refuse_red=False):
        self.calls, self.refuse_red = [], refuse_red

    def prepare(self, images, captions):
        self.calls.append(([im.size for im in images], list(captions)))
        if self.refuse_red and any(im.getpixel((0, 0)) == (255, 0, 0) for im in images):
            raise ValueError("red")
        return {"images": [im.size for im in images], "captions": list(captions)}


def png(size=(8, 6), colour=(0, 0, 255)) -> bytes:
    return image_bytes(size, "PNG", colour)


def jpeg(size=(16, 12)) -> bytes:
    return image_bytes(size, "JPEG", (10, 200, 30))


JOB = ShardJob("s.tar", "s")


def meta_fields(meta):
    return (meta.key, meta.index, meta.url, meta.caption, meta.status, meta.error, meta.width, meta.height, meta.notes,
            meta.image_row, meta.caption_row)


def test_settings_defaults():
    s = ScanSettings()
    assert (s.batch_size, s.workers, s.max_pixels, s.max_member_bytes, s.max_caption_chars, s.retries, s.retry_wait,
            s.overwrite, s.decode, s.hashes) == (32, 2, 50_000_000, 64 << 20, 4096, 2, 1.0, False, "cpu", True)
    assert s.columns == W.ColumnChoice() and ScanSettings().columns is not s.columns
    assert ShardJob("u", "n").takeover is None and W.EXTREME_ASPECT == 20.0


def test_each_kind_of_sample_becomes_its_row():
    samples = [
        Sample("ok", 0, image=png(), caption="c0", url="http://0", notes=["n"]),
        Sample("dup", 1, image=png(), caption="c1", status="duplicate_key", error="again"),
        Sample("big", 2, image=b"x", caption="c2", status="too_large", error="over"),
        Sample("none", 3, caption="c3"),
        Sample("bad", 4, image=b"not an image"),
        Sample("huge", 5, image=png((30, 30))),
        Sample("ok2", 6, image=png((6, 8))),
    ]
    prep = Prep()
    batch = prepare_batch(JOB, samples, prep, ScanSettings(max_pixels=800, hashes=False), final=True, end="END")
    assert [meta_fields(m) for m in batch.metas] == [
        ("ok", 0, "http://0", "c0", "ok", None, 8, 6, ["n"], 0, 0),
        ("dup", 1, None, "c1", "duplicate_key", "again", None, None, [], -1, -1),
        ("big", 2, None, "c2", "too_large", "over", None, None, [], -1, 1),
        ("none", 3, None, "c3", "missing_image", "sample has no image member", None, None, [], -1, 2),
        ("bad", 4, None, None, "decode_error", batch.metas[4].error, None, None, [], -1, -1),
        ("huge", 5, None, None, "too_large", "30x30 = 900 pixels exceeds --max-pixels 800", None, None, [], -1, -1),
        ("ok2", 6, None, None, "ok", None, 6, 8, [], 1, -1)]
    assert batch.metas[4].error.startswith("UnidentifiedImageError: ")
    assert batch.inputs == {"images": [(8, 6), (6, 8)], "captions": ["c0", "c2", "c3"]}
    assert prep.calls == [([(8, 6), (6, 8)], ["c0", "c2", "c3"])]
    assert (batch.job, batch.final, batch.end, batch.extra) == (JOB, True, "END", {}) and batch.prep_seconds >= 0
    assert all(m.hashes is None for m in batch.metas)
    assert batch.metas[0].notes is not samples[0].notes


def test_hashes_of_decoded_images_and_of_bytes_only_when_not_decoded():
    data = png()
    batch = prepare_batch(JOB, [Sample("a", 0, image=data), Sample("b", 1, image=b"junk"), Sample("c", 2)], Prep(),
                          ScanSettings())
    a, b, c = (m.hashes for m in batch.metas)
    assert (a.sha256, a.md5) == (hashlib.sha256(data).digest(), hashlib.md5(data).digest())
    assert len(a.pdq) == 32 and 0 <= a.pdq_quality <= 100
    assert (b.sha256, b.pdq, b.pdq_quality) == (hashlib.sha256(b"junk").digest(), None, None) and c is None


def test_decoding_uses_the_hashing_draft_size(monkeypatch):
    seen = []
    real = W.decode_image
    monkeypatch.setattr(W, "decode_image", lambda data, pixels, draft: seen.append((pixels, draft)) or real(data, pixels, draft))
    prepare_batch(JOB, [Sample("a", 0, image=png())], Prep(), ScanSettings(max_pixels=99))
    prepare_batch(JOB, [Sample("a", 0, image=png())], Prep(), ScanSettings(max_pixels=99, hashes=False))
    assert seen == [(99, 512), (99, 64)]


@pytest.mark.parametrize("size, cropped", [((200, 10), None), ((10, 200), None), ((201, 10), (200, 10)),
                                           ((10, 203), (10, 200))])
def test_images_past_the_extreme_aspect_are_cropped_and_noted(size, cropped):
    prep = Prep()
    batch = prepare_batch(JOB, [Sample("a", 0, image=png(size))], prep, ScanSettings(hashes=False))
    assert prep.calls[0][0] == [cropped or size]
    assert batch.metas[0].notes == (["extreme_aspect_cropped"] if cropped else [])
    assert (batch.metas[0].width, batch.metas[0].height) == size


def test_an_image_the_preprocessor_refuses_is_a_decode_error_and_the_rest_is_kept():
    samples = [Sample("a", 0, image=png(colour=(0, 0, 255)), caption="ca"),
               Sample("b", 1, image=png(colour=(255, 0, 0)), caption="cb"),
               Sample("c", 2, image=png((5, 5))), Sample("d", 3, caption="cd")]
    prep = Prep(refuse_red=True)
    batch = prepare_batch(JOB, samples, prep, ScanSettings(hashes=False))
    assert [(m.status, m.image_row, m.caption_row) for m in batch.metas] == [
        ("ok", 0, 0), ("decode_error", -1, 1), ("ok", 1, -1), ("missing_image", -1, 2)]
    assert batch.metas[1].error == "preprocessing failed: ValueError: red"
    assert batch.inputs == {"images": [(8, 6), (5, 5)], "captions": ["ca", "cb", "cd"]}


def test_gpu_decoding_defers_plain_jpegs_with_their_size_and_byte_hashes():
    data = jpeg()
    samples = [Sample("p", 0, image=png(), caption="c"), Sample("j", 1, image=data, caption="cj", url="u", notes=["x"]),
               Sample("t", 2, image=data, status="too_large", error="e"), Sample("e", 3, image=b""),
               Sample("j2", 4, image=jpeg((8, 8)))]
    batch = prepare_batch(JOB, samples, Prep(), ScanSettings(decode="gpu"))
    assert batch.extra == {"jpeg": [(1, data), (4, jpeg((8, 8)))]}
    assert [meta_fields(m) for m in batch.metas] == [
        ("p", 0, None, "c", "ok", None, 8, 6, [], 0, 0), ("j", 1, "u", "cj", "ok", None, 16, 12, ["x"], -1, 1),
        ("t", 2, None, None, "too_large", "e", None, None, [], -1, -1),
        ("e", 3, None, None, "decode_error", "empty image member (0 bytes)", None, None, [], -1, -1),
        ("j2", 4, None, None, "ok", None, 8, 8, [], -1, -1)]
    j = batch.metas[1].hashes
    assert (j.sha256, j.md5, j.pdq) == (hashlib.sha256(data).digest(), hashlib.md5(data).digest(), None)
    batch = prepare_batch(JOB, samples[1:2], Prep(), ScanSettings(decode="gpu", hashes=False))
    assert batch.metas[0].hashes is None and batch.extra == {"jpeg": [(0, data)]}
    batch = prepare_batch(JOB, samples[1:2], Prep(), ScanSettings(decode="gpu", max_pixels=100))
    assert batch.extra == {} and batch.metas[0].status == "too_large"


def tar_of(tmp_path, n) -> str:
    return str(write_tar(tmp_path / "s.tar", [(f"k{i}.txt", f"caption {i}".encode()) for i in range(n)]))


@pytest.mark.parametrize("n, sizes", [(4, [2, 2, 0]), (5, [2, 2, 1]), (1, [1]), (0, [0])])
def test_batches_of_batch_size_then_a_final_one_with_the_end(tmp_path, n, sizes):
    batches = list(prepare_shard(ShardJob(tar_of(tmp_path, n), "s"), Prep(), ScanSettings(batch_size=2, workers=0)))
    assert [len(b.metas) for b in batches] == sizes
    assert [b.final for b in batches] == [False] * (len(sizes) - 1) + [True]
    assert batches[-1].end.status == "complete" and all(b.end is None for b in batches[:-1])


def test_select_keeps_only_the_chosen_samples(tmp_path):
    batches = list(prepare_shard(ShardJob(tar_of(tmp_path, 5), "s"), Prep(), ScanSettings(batch_size=2, workers=0),
                                 select=lambda sample: sample.index % 2 == 0))
    assert [[m.key for m in b.metas] for b in batches] == [["k0", "k2"], ["k4"]]


@pytest.mark.parametrize("fail_at, status, sizes", [(0, "failed", [0]), (1, "truncated", [1]), (2, "truncated", [2, 0]),
                                                    (3, "truncated", [2, 1])])
def test_an_unexpected_error_ends_the_shard(tmp_path, monkeypatch, fail_at, status, sizes):
    def samples(job, end, settings):
        for i in range(fail_at):
            yield Sample(f"k{i}", i, caption="c")
        raise RuntimeError("boom")

    monkeypatch.setattr(W, "_samples_with_retries", samples)
    batches = list(prepare_shard(JOB, Prep(), ScanSettings(batch_size=2, workers=0)))
    assert [len(b.metas) for b in batches] == sizes
    assert (batches[-1].end.status, batches[-1].end.error) == (status, "unexpected error: RuntimeError: boom")


def attempts_of(monkeypatch, url, error=None, retries=2, wait=0.5):
    attempts, sleeps = [], []

    def opener(u):
        attempts.append(u)
        if error is not None:
            raise error
        return io.BytesIO(b"not a tar" * 100)

    monkeypatch.setattr(W, "open_stream", opener)
    monkeypatch.setattr(W.time, "sleep", sleeps.append)
    [batch] = list(prepare_shard(ShardJob(url, "s"), Prep(), ScanSettings(retries=retries, retry_wait=wait, workers=0)))
    return len(attempts), sleeps, batch.end


def test_a_remote_open_failure_is_retried_with_doubling_waits(monkeypatch):
    count, sleeps, end = attempts_of(monkeypatch, "s3://b/s.tar", ConnectionError("reset"))
    assert (count, sleeps) == (3, [0.5, 1.0]) and (end.status, end.permanent) == ("failed", False)
    assert end.error == "cannot open: ConnectionError: reset"
    count, sleeps, end = attempts_of(monkeypatch, "s3://b/s.tar", ConnectionError("reset"), retries=0)
    assert (count, sleeps) == (1, [])


@pytest.mark.parametrize("error", [FileNotFoundError("x"), PermissionError("x"), IsADirectoryError("x"),
                                   NotADirectoryError("x")])
def test_a_local_file_that_cannot_be_opened_is_permanent_at_once(monkeypatch, error):
    count, sleeps, end = attempts_of(monkeypatch, "/data/s.tar", error)
    assert (count, sleeps, end.status, end.permanent) == (1, [], "failed", True)


@pytest.mark.parametrize("url", ["pipe:cat s.tar", "http://h/s.tar"])
def test_a_missing_file_behind_a_pipe_or_url_is_retried(monkeypatch, url):
    count, sleeps, end = attempts_of(monkeypatch, url, FileNotFoundError("x"))
    assert (count, end.permanent) == (3, False)


def test_a_local_file_that_is_not_a_tar_fails_for_good_after_one_read(monkeypatch):
    count, sleeps, end = attempts_of(monkeypatch, "/data/s.tar")
    assert (count, sleeps, end.status, end.permanent) == (1, [], "failed", True)
    assert end.error == "cannot read as tar: ReadError: invalid header"


def test_remote_bytes_that_are_not_a_tar_are_read_again(monkeypatch):
    count, sleeps, end = attempts_of(monkeypatch, "s3://b/s.tar")
    assert (count, sleeps, end.status, end.permanent) == (3, [0.5, 1.0], "failed", False)


def test_a_later_attempt_starts_from_a_fresh_end(monkeypatch, tmp_path):
    good = open(tar_of(tmp_path, 1), "rb").read()
    tries = []

    def opener(url):
        tries.append(url)
        if len(tries) == 1:
            raise ConnectionError("first")
        return io.BytesIO(good)

    monkeypatch.setattr(W, "open_stream", opener)
    monkeypatch.setattr(W.time, "sleep", lambda s: None)
    batches = list(prepare_shard(ShardJob("s3://b/s.tar", "s"), Prep(), ScanSettings(workers=0)))
    end = batches[-1].end
    assert (end.status, end.error, end.permanent, len(tries)) == ("complete", None, False, 2)


def test_a_table_shard_is_read_as_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"img": [png()], "TEXT": ["cap"], "key": ["k"]}), tmp_path / "t.parquet")
    settings = ScanSettings(workers=0, columns=W.ColumnChoice(image="img"), hashes=False)
    [batch] = list(prepare_shard(ShardJob(str(tmp_path / "t.parquet"), "t"), Prep(), settings))
    assert [meta_fields(m) for m in batch.metas] == [("k", 0, None, "cap", "ok", None, 8, 6, [], 0, 0)]


def test_a_folder_shard_is_read_from_its_files(tmp_path):
    from vlmaudit.scan.folder_source import expand_folder

    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "a.txt").write_text("cap")
    [url] = expand_folder(str(tmp_path), 10)
    [batch] = list(prepare_shard(ShardJob(url, "f"), Prep(), ScanSettings(workers=0, retries=5, hashes=False)))
    assert [meta_fields(m) for m in batch.metas] == [("a", 0, None, "cap", "ok", None, 8, 6, [], 0, 0)]


def test_a_stream_that_fails_to_close_is_ignored(monkeypatch, tmp_path):
    class Sticky(io.BytesIO):
        def close(self):
            raise OSError("cannot close")

    data = open(tar_of(tmp_path, 1), "rb").read()
    monkeypatch.setattr(W, "open_stream", lambda url: Sticky(data))
    batches = list(prepare_shard(ShardJob("/x/s.tar", "s"), Prep(), ScanSettings(workers=0)))
    assert batches[-1].end.status == "complete" and len(batches[-1].metas) == 1


def test_pinning_reaches_every_tensor_of_the_inputs():
    class Tensor:
        def __init__(self, name):
            self.name = name

        def pin_memory(self):
            return f"pinned {self.name}"

    batch = PreparedBatch(JOB, [], {"a": Tensor("a"), "b": {"c": Tensor("c"), "d": 5}}, 0.0)
    assert batch.pin_memory() is batch
    assert batch.inputs == {"a": "pinned a", "b": {"c": "pinned c", "d": 5}}
    assert (batch.final, batch.end, batch.extra) == (False, None, {})


def test_samples_with_nothing_to_prepare_still_reach_the_preprocessor_once():
    prep = Prep()
    batch = prepare_batch(JOB, [], prep, ScanSettings())
    assert prep.calls == [([], [])] and batch.metas == [] and batch.inputs == {"images": [], "captions": []}


def test_decoded_sizes_come_from_the_image_header(monkeypatch):
    data = png((12, 7))
    batch = prepare_batch(JOB, [Sample("a", 0, image=data)], SimpleNamespace(draft_size=None, prepare=lambda i, c: {}),
                          ScanSettings(hashes=False))
    assert (batch.metas[0].width, batch.metas[0].height) == (12, 7) and np.isscalar(batch.metas[0].width)
