"""Tar members as samples (scan/samples.py) beyond the basics in test_scan_units: names at their
length limits, bad_name rows, extension budgets, which preset status wins, JSON fields; plus the
summary files (scan/summary.py) and the hash helpers (scan/hashing.py)."""

import hashlib
import io
import json

import numpy as np
import pytest

from conftest import tar_bytes, write_tar
from vlmaudit.scan import hashing as H
from vlmaudit.scan.samples import (IMAGE_EXTS, KEPT_KEY_CHARS, MAX_EXT_CHARS, MAX_NAME_CHARS, TEXT_EXTS, Sample,
                                   cap_caption, finish_sample, iter_samples, member_key, wanted_member)
from vlmaudit.scan.tario import TarEnd


def samples_of(members, max_bytes=1 << 20, chars=100):
    buf = io.BytesIO(tar_bytes(members))
    end = TarEnd()
    return [(s.key, s.index, s.image, s.image_ext, s.caption, s.url, s.status, s.error, s.notes)
            for s in iter_samples(buf, end, max_bytes, chars)], end


def test_the_extension_lists():
    assert IMAGE_EXTS == ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff") and TEXT_EXTS == ("txt", "json")
    assert (MAX_NAME_CHARS, KEPT_KEY_CHARS, MAX_EXT_CHARS) == (4096, 200, 16)


@pytest.mark.parametrize("name, wanted", [("a.JPG", True), ("a.tiff", True), ("a.json", True), ("a.TXT", True),
                                          ("a.cls", False), ("a", False), ("jpg", False), ("d.jpg/x", False)])
def test_wanted_members(name, wanted):
    assert wanted_member(name) is wanted


def test_member_keys_within_their_budgets():
    assert member_key("d/a.b.JPG") == ("d/a.b", "jpg")
    assert member_key("a." + "x" * 16) == ("a", "x" * 16)
    assert member_key("a." + "x" * 17) == ("a", "x" * 16 + "…")
    stem = "k" * (MAX_NAME_CHARS - 4)
    assert member_key(stem + ".jpg") == (stem, "jpg")  # exactly at the limit: kept whole
    long = stem + "k.jpg"
    key, ext = member_key(long)
    digest = hashlib.sha1((stem + "k").encode()).hexdigest()[:16]
    assert (key, ext) == ("k" * KEPT_KEY_CHARS + "…" + digest, "jpg")
    assert member_key("\udcff" * 5000 + ".txt")[0].endswith(
        hashlib.sha1(("\udcff" * 5000).encode("utf-8", "replace")).hexdigest()[:16])


def test_an_over_long_member_name_is_a_bad_name_row_without_its_image():
    long = "k" * MAX_NAME_CHARS
    rows, end = samples_of([(long + ".jpg", b"J"), (long + ".txt", b"cap"), ("b.jpg", b"B")])
    key = member_key(long + ".jpg")[0]
    assert rows == [
        (key, 0, None, "jpg", "cap", None, "bad_name",
         f"member name of {MAX_NAME_CHARS + 4} characters, over the {MAX_NAME_CHARS}-character limit", []),
        ("b", 1, b"B", "jpg", None, None, None, None, [])]
    assert end.status == "complete"


def test_a_name_at_the_limit_is_fine():
    name = "k" * (MAX_NAME_CHARS - 4) + ".jpg"
    rows, _ = samples_of([(name, b"J")])
    assert rows[0][6:8] == (None, None) and rows[0][2] == b"J"


def test_a_duplicate_key_keeps_its_status_over_a_later_name_problem():
    long = "a" * MAX_NAME_CHARS
    rows, _ = samples_of([(long + ".jpg", b"1"), ("b.jpg", b"2"), (long + ".png", b"3")])
    assert rows[2][6] == "duplicate_key" and rows[2][2] == b"3"
    assert rows[2][7] == f"key {rows[2][0]!r} reappears after other keys (members not adjacent); not merged, not scored"


def test_too_large_wins_over_a_later_bad_name_and_a_caption_is_never_too_large():
    rows, _ = samples_of([("a.jpg", b"x" * 20), ("a.txt", b"y" * 20), ("b.txt", b"z" * 10), ("b.jpg", b"j" * 10)],
                         max_bytes=10)
    assert rows == [
        ("a", 0, None, "jpg", None, None, "too_large", "member is 20 bytes, over the 10-byte limit",
         ["oversized_member:.jpg", "oversized_member:.txt"]),
        ("b", 1, b"j" * 10, "jpg", "z" * 10, None, None, None, [])]


def test_a_second_image_of_another_extension_is_extra_and_the_first_one_counts():
    rows, end = samples_of([("a.png", b"P"), ("a.jpg", b"J"), ("a.json", b'{"url": "u"}'), ("a.json", b"{}"),
                            ("a.txt", b"t")])
    assert rows == [("a", 0, b"P", "png", "t", "u", None, None, ["extra_member:.jpg", "extra_member:.json"])]
    assert end.members_ignored == 0


def test_json_fields_and_caption_sources():
    sample = finish_sample(Sample("k", 0, _members={"json": b'{"caption": "c", "url": null}'}), 100)
    assert (sample.caption, sample.url, sample.notes) == ("c", None, [])
    sample = finish_sample(Sample("k", 0, _members={"json": b'{"caption": 5, "url": ["x"]}'}), 100)
    assert (sample.caption, sample.url, sample.notes) == (None, None, ["json_url_not_a_string", "json_caption_not_a_string"])
    sample = finish_sample(Sample("k", 0, _members={"json": b"[" * 100_000}), 100)
    assert sample.notes == ["json_malformed:RecursionError"]
    sample = finish_sample(Sample("k", 0, _members={"txt": b"", "json": b'{"caption": "j"}'}), 100)
    assert sample.caption == "" and sample._members == {}
    sample = finish_sample(Sample("k", 0, _members={"txt": None, "json": b'{"caption": "j\\u00e9"}'}), 100)
    assert sample.caption == "jé"
    sample = finish_sample(Sample("k", 0, _members={"json": b'{"caption": "x"}\xff'}), 100)
    assert sample.notes == ["json_malformed:JSONDecodeError"]


def test_captions_are_capped_at_exactly_the_limit():
    assert cap_caption(Sample("k", 0, caption="abc"), 3).notes == []
    capped = cap_caption(Sample("k", 0, caption="abcd"), 3)
    assert (capped.caption, capped.notes) == ("abc", ["caption_capped"])
    assert cap_caption(Sample("k", 0), 0).notes == []


def test_an_ignored_member_without_extension_and_with_one(tmp_path):
    path = write_tar(tmp_path / "s.tar", [("a.jpg", b"J"), ("a", b"?"), ("a.cls", b"1"), ("a.CLS", b"2")])
    end = TarEnd()
    with open(path, "rb") as f:
        [sample] = list(iter_samples(f, end, 100, 100))
    assert sample.notes == ["ignored_member:no_extension", "ignored_member:.cls", "ignored_member:.cls"]
    assert end.ignored_kinds == {"no extension": 1, ".cls": 2} and end.members_ignored == 3


# ---- summary files -------------------------------------------------------------------------------

def test_summary_files_are_written_whole_and_removed(tmp_path):
    import pyarrow as pa

    from vlmaudit.scan.summary import (NEEDED_COLUMNS, hist_name, kept_columns, remove_summary, summary_name,
                                       write_summary)
    from vlmaudit.storage.location import Location

    assert (summary_name("s"), hist_name("s")) == ("s.summary.json", "s.hist.bin")
    schema = pa.schema([("caption", pa.string()), ("x", pa.int8()), ("shard", pa.string())])
    assert kept_columns(schema) == ["shard", "caption"] and NEEDED_COLUMNS[0] == "shard"
    out = Location(tmp_path)
    write_summary(out, "s", {"b": 1, "a": [2]}, b"HIST")
    assert (tmp_path / "s.hist.bin").read_bytes() == b"HIST"
    assert (tmp_path / "s.summary.json").read_text() == '{"a": [2], "b": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.hist.bin", "s.summary.json"]
    remove_summary(out, "s")
    remove_summary(out, "s")
    assert list(tmp_path.iterdir()) == []


def test_summary_files_on_an_object_store():
    import fsspec

    from vlmaudit.scan.summary import remove_summary, write_summary
    from vlmaudit.storage.location import Location

    fs = fsspec.filesystem("memory")
    out = Location("memory://sums")
    try:
        write_summary(out, "s", {"a": 1}, b"H")
        assert fs.cat("/sums/s.hist.bin") == b"H" and json.loads(fs.cat("/sums/s.summary.json")) == {"a": 1}
        remove_summary(out, "s")
        assert not fs.exists("/sums/s.hist.bin") and not fs.exists("/sums/s.summary.json")
    finally:
        if fs.exists("/sums"):
            fs.rm("/sums", recursive=True)


def test_a_failed_summary_write_leaves_no_temporary(tmp_path, monkeypatch):
    from vlmaudit.scan import summary

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        summary.write_bytes_atomic(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []


# ---- hashes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, hashes, draft", [(224, True, 512), (600, True, 600), (512, True, 512),
                                                  (224, False, 224), (None, True, None), (None, False, None)])
def test_hashing_draft(model, hashes, draft):
    assert H.hashing_draft(model, hashes) == draft


def test_byte_digests_and_pdq():
    from PIL import Image

    assert H.byte_digests(b"abc") == (hashlib.sha256(b"abc").digest(), hashlib.md5(b"abc").digest())
    assert H.ImageHashes() == H.ImageHashes(None, None, None, None)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if not H.pdq_available():
        assert H.pdq_hash(image) == (None, None)
        return
    import pdqhash

    bits, quality = pdqhash.compute(np.asarray(image))
    assert H.pdq_hash(image) == (np.packbits(bits.astype(np.uint8)).tobytes(), int(quality))
    assert len(H.pdq_hash(image)[0]) == 32


def test_without_pdqhash_only_the_digests(monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__",
                        lambda name, *a, **kw: (_ for _ in ()).throw(ImportError(name)) if name == "pdqhash"
                        else real(name, *a, **kw))
    assert H.pdq_available() is False and H.pdq_hash(None) == (None, None)
