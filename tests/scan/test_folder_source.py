"""Loose image folders (scan/folder_source.py) without a model: shard URLs and names, the listing
(pairs, imagefolder metadata, symlinks), every sample field and status, metadata refusals, the
containment checks and the labelled-folder reader, each message exact."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from vlmaudit.errors import ShardSpecError, UserError
from vlmaudit.scan import folder_source as F
from vlmaudit.scan.folder_source import (changed_since_scanned, expand_folder, folder_shard_name, folder_shard_samples,
                                         folder_shard_url, is_folder_shard, is_image_folder, is_labelled_folder,
                                         iter_folder_samples, labelled_records, list_folder, outside,
                                         parse_folder_shard, read_inside)
from vlmaudit.scan.tario import TarEnd


def files(root: Path, spec: dict) -> Path:
    for name, data in spec.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


def samples_of(root: Path, size=100, max_bytes=1 << 20, chars=100):
    urls = expand_folder(str(root), size)
    out = []
    for url in urls:
        end = TarEnd()
        out.append(([(s.key, s.index, s.image, s.image_ext, s.caption, s.url, s.status, s.error, s.notes)
                     for s in iter_folder_samples(url, end, max_bytes, chars)], end))
    return out


@pytest.fixture(autouse=True)
def fresh_listing():
    list_folder.cache_clear()
    yield
    list_folder.cache_clear()


def test_shard_urls_name_root_index_size_and_a_digest_of_the_keys():
    digest = hashlib.sha256(b"a\nb").hexdigest()[:12]
    url = folder_shard_url("/d/pics", 3, 2, ["a", "b"])
    assert url == f"folder:/d/pics#3:2:{digest}" and is_folder_shard(url) and not is_folder_shard("/d/folder:x")
    assert parse_folder_shard(url) == ("/d/pics", 3, 2)
    assert parse_folder_shard("folder:/d/we#ird#12:5:abc") == ("/d/we#ird", 12, 5)
    assert folder_shard_name(url) == "pics-00003" and folder_shard_name("folder:/#0:1:x") == "folder-00000"
    assert folder_shard_name("folder:/d/x#123456:1:x") == "x-123456"


def test_a_key_from_an_undecodable_file_name_still_gets_a_digest():
    digest = hashlib.sha256(b"a\n?").hexdigest()[:12]
    assert folder_shard_url("/r", 0, 2, ["a", "\udcff"]) == f"folder:/r#0:2:{digest}"


def test_a_changed_folder_shard_is_named_with_both_urls_cut_to_40_characters():
    url = "folder:/d/pics#0:2:" + "a" * 12
    assert changed_since_scanned(url, url) is None and changed_since_scanned("other", "/d/x.tar") is None
    url = "folder:/d/" + "p" * 40 + "#0:2:" + "a" * 12
    other = "folder:/d/pics#0:3:" + "b" * 40
    assert changed_since_scanned(other, url) == (
        f"{'p' * 40}-00000 was scanned from other files or another --folder-shard-size (recorded {other[-40:]!r}, "
        f"now {url[-40:]!r})")
    assert "recorded 'None'" in changed_since_scanned(None, url)


def test_expand_cuts_the_sorted_samples_into_shards(tmp_path):
    files(tmp_path, {f"{k}.jpg": b"x" for k in "edcba"})
    urls = expand_folder(str(tmp_path), 2)
    assert [parse_folder_shard(u) for u in urls] == [(str(tmp_path), i, 2) for i in range(3)]
    assert urls[0] == folder_shard_url(str(tmp_path), 0, 2, ["a", "b"])
    assert urls[2] == folder_shard_url(str(tmp_path), 2, 2, ["e"])
    assert [folder_shard_samples(u) for u in urls] == [2, 2, 1]
    assert folder_shard_samples(folder_shard_url(str(tmp_path), 5, 2, [])) == 0
    assert len(expand_folder(str(tmp_path), 5)) == 1 and len(expand_folder(str(tmp_path), 1)) == 5
    assert len(expand_folder(str(tmp_path), 4)) == 2


def test_expand_refusals(tmp_path):
    with pytest.raises(ShardSpecError) as info:
        expand_folder(str(tmp_path), 0)
    assert str(info.value) == "--folder-shard-size must be at least 1, got 0"
    files(tmp_path, {"notes.md": "x"})
    with pytest.raises(ShardSpecError) as info:
        expand_folder(str(tmp_path), 1)
    assert str(info.value) == f"{tmp_path}: no images and no metadata rows in this folder"


def test_expand_lists_afresh(tmp_path):
    files(tmp_path, {"a.jpg": b"x"})
    assert len(expand_folder(str(tmp_path), 1)) == 1
    files(tmp_path, {"b.jpg": b"x"})
    assert len(expand_folder(str(tmp_path), 1)) == 2


def test_the_listing_of_a_pairs_folder(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "a.txt": "cap", "a.json": "{}", "a.png": b"P", "a.md": "x",
                     "sub/b.webp": b"B", "c.txt": "only text", "d.JPEG": b"D"})
    entries = list_folder(str(tmp_path))
    assert [(e.key, e.files, e.record, e.problem, e.extra) for e in entries] == [
        ("a", {"jpg": "a.jpg", "json": "a.json", "txt": "a.txt"}, None, None, ["extra_member:.png"]),
        ("c", {"txt": "c.txt"}, None, None, []), ("d", {"jpeg": "d.JPEG"}, None, None, []),
        ("sub/b", {"webp": "sub/b.webp"}, None, None, [])]


def test_symlinks_are_listed_never_followed(tmp_path):
    root = files(tmp_path / "root", {"a.jpg": b"A"})
    files(tmp_path / "elsewhere", {"x.jpg": b"X", "secret.txt": "s"})
    (root / "dir").symlink_to(tmp_path / "elsewhere")
    (root / "l.jpg").symlink_to(tmp_path / "elsewhere" / "x.jpg")
    (root / "m.jpg").symlink_to(root / "a.jpg")
    entries = {e.key: e for e in list_folder(str(root))}
    assert sorted(entries) == ["a", "dir", "l", "m"]
    assert entries["dir"].problem == "'dir' is a symlinked directory: not followed"
    (result, end), = samples_of(root)
    assert result == [
        ("a", 0, b"A", "jpg", None, None, None, None, []),
        ("dir", 1, None, None, None, None, "bad_name", "'dir' is a symlinked directory: not followed", []),
        ("l", 2, None, None, None, None, "bad_name", "path 'l.jpg' resolves outside the folder (a symlink): not opened",
         ["refused_file:.jpg"]),
        ("m", 3, None, None, None, None, "bad_name", "'m.jpg' is a symlink: not opened", ["refused_file:.jpg"])]
    assert end.status == "complete"


def test_every_sample_field_of_a_pairs_folder(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "a.txt": "caption a", "a.json": json.dumps({"url": "http://a", "caption": "j"}),
                     "b.png": b"B", "b.json": json.dumps({"caption": "from json"}),
                     "c.jpg": b"C" * 41, "c.txt": "t" * 41, "d.jpg": b"D", "d.txt": "x" * 8})
    (result, end), = samples_of(tmp_path, max_bytes=40, chars=5)
    assert result == [
        ("a", 0, b"A", "jpg", "capti", "http://a", None, None, ["caption_capped"]),
        ("b", 1, b"B", "png", "from ", None, None, None, ["caption_capped"]),
        ("c", 2, None, None, None, None, "too_large", "'c.jpg' is 41 bytes, over the 40-byte limit",
         ["oversized_member:.jpg", "oversized_member:.txt"]),
        ("d", 3, b"D", "jpg", "xxxxx", None, None, None, ["caption_capped"])]


def test_extra_images_are_noted_on_the_sample(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "a.png": b"P", "a.webp": b"W"})
    (result, _), = samples_of(tmp_path)
    assert result == [("a", 0, b"A", "jpg", None, None, None, None, ["extra_member:.png", "extra_member:.webp"])]


def test_a_file_gone_after_listing_is_noted_and_the_others_still_read(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "a.txt": "caption"})
    [url] = expand_folder(str(tmp_path), 5)
    (tmp_path / "a.jpg").unlink()
    end = TarEnd()
    [sample] = list(iter_folder_samples(url, end, 100, 100))
    assert (sample.image, sample.caption, sample.status, sample.notes) == (None, "caption", None, ["missing_file:.jpg"])


def test_samples_are_numbered_within_their_shard(tmp_path):
    files(tmp_path, {f"{k}.jpg": k.encode() for k in "abc"})
    (first, _), (second, _) = samples_of(tmp_path, size=2)
    assert [(k, i) for k, i, *_ in first] == [("a", 0), ("b", 1)] and [(k, i) for k, i, *_ in second] == [("c", 0)]


def test_a_missing_root_and_a_changed_folder_fail_the_shard_for_good(tmp_path):
    end = TarEnd()
    assert list(iter_folder_samples(f"folder:{tmp_path}/gone#0:1:x", end, 10, 10)) == []
    assert (end.status, end.error, end.permanent) == ("failed", f"cannot open: {tmp_path}/gone is not a directory", True)
    files(tmp_path, {"a.jpg": b"A"})
    url = expand_folder(str(tmp_path), 5)[0]
    files(tmp_path, {"b.jpg": b"B"})
    list_folder.cache_clear()
    end = TarEnd()
    assert list(iter_folder_samples(url, end, 10, 10)) == []
    assert (end.status, end.error, end.permanent) == (
        "failed", "the folder's files changed since the shard list was made: scan it again", True)


def test_imagefolder_metadata_rows(tmp_path):
    rows = [{"file_name": "a.jpg", "caption": "cap a", "url": "http://a"},
            {"file_name": "sub\\b.png", "text": "cap b", "url": 5},
            {"file_name": "gone.jpg", "prompt": 7},
            {"file_name": "../x.jpg", "alt": "outside"},
            {"file_name": "a.jpg", "caption": "again"},
            {"file_name": "notes.txt", "TEXT": "t"}]
    files(tmp_path, {"a.jpg": b"A", "sub/b.png": b"B", "unlisted.jpg": b"U", "notes.txt": "n",
                     "metadata.jsonl": "\n".join(json.dumps(r) for r in rows) + "\n\n"})
    (result, end), = samples_of(tmp_path)
    assert result == [
        ("a", 0, None, None, "cap a", "http://a", "bad_name", "metadata.jsonl row 5: file_name 'a.jpg' listed twice", []),
        ("gone", 1, None, None, None, None, None, None, ["missing_file:.jpg", "metadata_caption_not_a_string"]),
        ("metadata.jsonl/4", 2, None, None, "outside", None, "bad_name",
         "path '../x.jpg' leaves the folder: not opened", []),
        ("notes", 3, None, None, "t", None, None, None, []),
        ("sub/b", 4, b"B", "png", "cap b", None, None, None, []),
        ("unlisted", 5, b"U", "jpg", None, None, None, None, [])]


def test_a_metadata_row_without_a_caption_keeps_the_pair_caption_and_one_at_the_limit_is_whole(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "a.txt": "pair caption", "b.jpg": b"B",
                     "metadata.jsonl": json.dumps({"file_name": "a.jpg", "label": 1}) + "\n"
                     + json.dumps({"file_name": "b.jpg", "caption": "x" * 12}) + "\n"})
    (result, _), = samples_of(tmp_path, chars=12)
    assert [(k, caption, notes) for k, _, _, _, caption, _, _, _, notes in result] == [
        ("a", "pair caption", []), ("b", "x" * 12, [])]


def test_csv_metadata_and_its_caption_fields_in_order(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "b.jpg": b"B",
                     "metadata.csv": "file_name,alt,caption\na.jpg,alt a,\nb.jpg,alt b,caption b\n"})
    (result, _), = samples_of(tmp_path, chars=6)
    assert [(k, caption) for k, _, _, _, caption, *_ in result] == [("a", ""), ("b", "captio")]
    assert result[1][-1] == ["caption_capped"]


def test_csv_rows_are_numbered_from_one(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "metadata.csv": "file_name,caption\na.jpg,x\n,y\n"})
    with pytest.raises(UserError) as info:
        list_folder(str(tmp_path))
    assert str(info.value) == (f"{tmp_path / 'metadata.csv'}: metadata.csv row 2 has no file_name "
                               "(Hugging Face imagefolder layout)")


def test_a_metadata_csv_is_skipped_as_a_sample_only_when_it_is_the_metadata(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "metadata.jsonl": json.dumps({"file_name": "a.jpg"}), "metadata.txt": "t"})
    assert [e.key for e in list_folder(str(tmp_path))] == ["a", "metadata"]


@pytest.mark.parametrize("content, message", [
    ('{"caption": "x"}\n', "{path}: metadata.jsonl row 1 has no file_name (Hugging Face imagefolder layout)"),
    ('\n{"file_name": ""}\n', "{path}: metadata.jsonl row 2 has no file_name (Hugging Face imagefolder layout)"),
    ('{"file_name": 3}\n', "{path}: metadata.jsonl row 1 has no file_name (Hugging Face imagefolder layout)"),
    ('{"file_name": "a.jpg"}\nnot json\n', "{path} line 2: not JSON"),
    ('[' * 100_000 + "\n", "{path} line 1: not JSON"),
    ('["a.jpg"]\n', "{path} line 1: not a JSON object"),
])
def test_bad_jsonl_metadata_is_one_line(tmp_path, content, message):
    files(tmp_path, {"a.jpg": b"A", "metadata.jsonl": content})
    with pytest.raises(UserError) as info:
        list_folder(str(tmp_path))
    assert str(info.value) == message.format(path=tmp_path / "metadata.jsonl")


def test_metadata_line_and_file_budgets(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_LINE", 40)
    line = json.dumps({"file_name": "a.jpg", "c": "x"})
    files(tmp_path, {"a.jpg": b"A", "metadata.jsonl": line + "\n" + json.dumps({"file_name": "a.jpg", "c": "x" * 40})})
    with pytest.raises(UserError) as info:
        list_folder(str(tmp_path))
    assert str(info.value) == f"{tmp_path / 'metadata.jsonl'} line 2: longer than 40 characters"
    exact = json.dumps({"file_name": "a.jpg", "c": "x" * 8})  # 40 characters with its newline
    assert len(exact) + 1 == 40
    (tmp_path / "metadata.jsonl").write_text(exact + "\n")
    list_folder.cache_clear()
    assert list_folder(str(tmp_path))[0].record["file_name"] == "a.jpg"
    monkeypatch.setattr(F, "MAX_METADATA_BYTES", 3 << 30)
    monkeypatch.setattr(os.stat_result, "st_size", property(lambda self: (3 << 30) + 1), raising=False)
    list_folder.cache_clear()
    with pytest.raises(UserError) as info:
        list_folder(str(tmp_path))
    assert str(info.value) == f"{tmp_path / 'metadata.jsonl'}: over the 3 GiB metadata limit"


def test_metadata_exactly_at_its_size_limit_is_read(tmp_path, monkeypatch):
    files(tmp_path, {"a.jpg": b"A", "metadata.jsonl": json.dumps({"file_name": "a.jpg"})})
    size = (tmp_path / "metadata.jsonl").stat().st_size
    monkeypatch.setattr(F, "MAX_METADATA_BYTES", size)
    assert list_folder(str(tmp_path))[0].record == {"file_name": "a.jpg"}
    monkeypatch.setattr(F, "MAX_METADATA_BYTES", size - 1)
    list_folder.cache_clear()
    with pytest.raises(UserError, match="over the 0 GiB metadata limit"):
        list_folder(str(tmp_path))


def test_metadata_text_is_read_as_utf8_with_replacement_and_csv_keeps_its_line_breaks(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "b.jpg": b"B",
                     "metadata.csv": b'file_name,caption\r\na.jpg,"one\r\ntwo"\r\nb.jpg,caf\xe9\r\n'})
    (result, _), = samples_of(tmp_path)
    assert [caption for _, _, _, _, caption, *_ in result] == ["one\r\ntwo", "caf\ufffd"]
    list_folder.cache_clear()
    (tmp_path / "metadata.csv").unlink()
    files(tmp_path, {"metadata.jsonl": b'{"file_name": "a.jpg", "caption": "\xff"}\n'})
    (result, _), = samples_of(tmp_path)
    assert result[0][4] == "\ufffd"


def test_a_long_name_listed_twice_is_cut_at_200_characters(tmp_path):
    name = "n" * 250 + ".jpg"
    files(tmp_path, {"metadata.jsonl": (json.dumps({"file_name": name}) + "\n") * 2})
    [entry] = list_folder(str(tmp_path))
    assert entry.problem == f"metadata.jsonl row 2: file_name {name[:200]!r} listed twice"


def test_a_broken_csv_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_LINE", 10)
    files(tmp_path, {"a.jpg": b"A", "metadata.csv": "file_name,caption\na.jpg," + "x" * 20 + "\n"})
    with pytest.raises(UserError) as info:
        list_folder(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path / 'metadata.csv'}: not a valid CSV (field larger than field limit")


@pytest.mark.parametrize("errors, why", [
    ([PermissionError(13, "Permission denied", "/r/locked"), OSError(5, "I/O error", "/r/other")],
     "cannot read /r/locked (Permission denied)"),
    ([OSError("odd")], "cannot read None (odd)"),
])
def test_an_unreadable_subdirectory_is_named(tmp_path, monkeypatch, errors, why):
    files(tmp_path, {"a.jpg": b"A"})
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):
        for error in errors:
            onerror(error)
        yield from real_walk(top, followlinks=followlinks)

    monkeypatch.setattr(F.os, "walk", walk)
    with pytest.raises(ShardSpecError) as info:
        list_folder(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: {why}; fix its permissions"


def test_too_many_samples(tmp_path, monkeypatch):
    files(tmp_path, {"a.jpg": b"A", "b.jpg": b"B"})
    monkeypatch.setattr(F, "MAX_FILES", 2)
    assert len(list_folder(str(tmp_path))) == 2
    monkeypatch.setattr(F, "MAX_FILES", 1)
    list_folder.cache_clear()
    with pytest.raises(ShardSpecError) as info:
        list_folder(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: more than 1 samples in one folder; split it"


@pytest.mark.parametrize("relative, why", [
    ("/etc/passwd", "path '/etc/passwd' leaves the folder: not opened"),
    ("\\x.jpg", "path '\\\\x.jpg' leaves the folder: not opened"),
    ("C:x.jpg", "path 'C:x.jpg' leaves the folder: not opened"), ("C:", "path 'C:' leaves the folder: not opened"),
    (":", None), ("a:", "path 'a:' leaves the folder: not opened"), ("ab:c", None),
    ("a/../../x", "path 'a/../../x' leaves the folder: not opened"),
    ("a\\..\\x", "path 'a\\\\..\\\\x' leaves the folder: not opened"),
    ("a/b..c.jpg", None), ("x", None), ("a/./b.jpg", None),
])
def test_outside(tmp_path, relative, why):
    assert outside(str(tmp_path), relative) == why


def test_outside_through_a_symlinked_directory(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "up").symlink_to(tmp_path)
    assert outside(str(tmp_path / "root"), "up/x.jpg") == "path 'up/x.jpg' resolves outside the folder (a symlink): not opened"
    long = outside("/", "/" + "p" * 300)
    assert long == f"path {('/' + 'p' * 300)[:200]!r} leaves the folder: not opened"


def test_long_symlink_names_are_cut_at_200_characters(tmp_path):
    (tmp_path / "root").mkdir()
    name = "s" * 250
    (tmp_path / "root" / name).symlink_to(tmp_path)
    assert outside(str(tmp_path / "root"), name + "/x") == (
        f"path {(name + '/x')[:200]!r} resolves outside the folder (a symlink): not opened")
    (tmp_path / "root" / "t.bin").write_bytes(b"x")
    (tmp_path / "root" / ("l" * 250)).symlink_to(tmp_path / "root" / "t.bin")
    with pytest.raises(PermissionError) as info:
        read_inside(str(tmp_path / "root"), "l" * 250, 9)
    assert str(info.value) == f"{'l' * 200!r} is a symlink: not opened"


def test_read_inside_reads_regular_files_within_the_budget(tmp_path):
    files(tmp_path, {"a.bin": b"x" * 10, "d/b.bin": b"y"})
    assert read_inside(str(tmp_path), "a.bin", 10) == b"x" * 10
    assert read_inside(str(tmp_path), "d/b.bin", 1) == b"y"
    with pytest.raises(OverflowError) as info:
        read_inside(str(tmp_path), "a.bin", 9)
    assert str(info.value) == "'a.bin' is 10 bytes, over the 9-byte limit"
    with pytest.raises(PermissionError) as info:
        read_inside(str(tmp_path), "../a.bin", 9)
    assert str(info.value) == "path '../a.bin' leaves the folder: not opened"
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    with pytest.raises(PermissionError) as info:
        read_inside(str(tmp_path), "link", 99)
    assert str(info.value) == "'link' is a symlink: not opened"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(PermissionError) as info:
        read_inside(str(tmp_path), "fifo", 99)
    assert str(info.value) == "'fifo' is not a regular file: not opened"
    with pytest.raises(FileNotFoundError):
        read_inside(str(tmp_path), "nope", 99)


def test_long_names_in_read_refusals_are_cut_at_200_characters(tmp_path, monkeypatch):
    name = "f" * 250
    files(tmp_path, {name: b"x" * 10})
    with pytest.raises(OverflowError) as info:
        read_inside(str(tmp_path), name, 9)
    assert str(info.value) == f"{'f' * 200!r} is 10 bytes, over the 9-byte limit"
    os.mkfifo(tmp_path / ("p" * 250))
    with pytest.raises(PermissionError) as info:
        read_inside(str(tmp_path), "p" * 250, 9)
    assert str(info.value) == f"{'p' * 200!r} is not a regular file: not opened"
    real_fstat = os.fstat
    monkeypatch.setattr(F.os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 1, *real_fstat(fd)[7:])))
    with pytest.raises(OverflowError) as info:
        read_inside(str(tmp_path), name, 9)
    assert str(info.value) == f"{'f' * 200!r} grew over the 9-byte limit while read"


def test_a_file_is_read_no_further_than_one_byte_past_the_budget(tmp_path, monkeypatch):
    files(tmp_path, {"a.bin": b"x" * 10})
    sizes = []
    real_fdopen = os.fdopen

    class Recording:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self, n=-1):
            sizes.append(n)
            return self.handle.read(n)

    monkeypatch.setattr(F.os, "fdopen", lambda fd, mode: Recording(real_fdopen(fd, mode)))
    assert read_inside(str(tmp_path), "a.bin", 20) == b"x" * 10 and sizes == [21]


def test_a_symlink_swapped_in_after_the_check_is_still_not_followed(tmp_path, monkeypatch):
    import errno

    files(tmp_path, {"secret.bin": b"s"})
    (tmp_path / "race.jpg").symlink_to(tmp_path / "secret.bin")
    monkeypatch.setattr(F.os.path, "islink", lambda path: False)  # the link appeared between check and open
    with pytest.raises(OSError) as info:
        read_inside(str(tmp_path), "race.jpg", 99)
    assert info.value.errno == errno.ELOOP


def test_a_file_that_grows_while_read_is_refused(tmp_path, monkeypatch):
    files(tmp_path, {"a.bin": b"x" * 10})
    real_fstat = os.fstat

    class Small:
        def __init__(self, info):
            self.st_mode, self.st_size = info.st_mode, 5

    monkeypatch.setattr(F.os, "fstat", lambda fd: Small(real_fstat(fd)))
    with pytest.raises(OverflowError) as info:
        read_inside(str(tmp_path), "a.bin", 9)
    assert str(info.value) == "'a.bin' grew over the 9-byte limit while read"


def test_a_refused_or_fifo_caption_is_a_note_and_a_refused_image_a_bad_name(tmp_path):
    files(tmp_path, {"a.jpg": b"A", "b.txt": "cap b"})
    os.mkfifo(tmp_path / "a.txt")
    os.mkfifo(tmp_path / "b.jpg")
    (result, _), = samples_of(tmp_path)
    assert result == [("a", 0, b"A", "jpg", None, None, None, None, ["refused_file:.txt"]),
                      ("b", 1, None, None, "cap b", None, "bad_name", "'b.jpg' is not a regular file: not opened",
                       ["refused_file:.jpg"])]


@pytest.mark.parametrize("layout, labelled", [
    ({"a.jpg": b"A"}, True),
    ({"a.jpg": b"A", "labels.csv": "x"}, False),
    ({"a.jpg": b"A", "labels.jsonl": "x"}, False),
    ({"metadata.jsonl": json.dumps({"file_name": "a.jpg"})}, True),
    ({"metadata.csv": "file_name,label\n"}, True),
    ({"metadata.csv": b"file_name,caf\xe9\n"}, True),
    ({"metadata.csv": "image,label\n", "a.jpg": b"A"}, False),
    ({"metadata.jsonl": "{}", "metadata.csv": "file_name\n"}, False),
    ({"notes.md": "x"}, False),
])
def test_is_labelled_folder(tmp_path, layout, labelled):
    files(tmp_path, layout)
    assert is_labelled_folder(tmp_path) is labelled
    assert is_labelled_folder(tmp_path / "a.jpg") is False


def test_is_image_folder(tmp_path):
    assert not is_image_folder(files(tmp_path / "a", {"x.txt": "t"}))
    assert is_image_folder(files(tmp_path / "b", {"deep/er/x.PNG": b"p"}))
    assert is_image_folder(files(tmp_path / "c", {"metadata.csv": ""}))
    assert not is_image_folder(files(tmp_path / "d", {"metadata.json": "", "x.jpg.txt": ""}))


def test_labelled_records_of_pairs(tmp_path):
    root = files(tmp_path / "pairs", {"a.jpg": b"A", "a.json": json.dumps({"label": "unsafe", "image": "no"}),
                                      "b.png": b"B", "c.txt": "caption only", "d.jpg": b"D", "d.json": "[1]"})
    got = list(labelled_records(root))
    assert got == [({"label": "unsafe", "image": root / "a.jpg"}, "pairs/a"), ({"image": root / "b.png"}, "pairs/b"),
                   ({"image": root / "d.jpg"}, "pairs/d")]
    files(root, {"e.json": json.dumps({"label": "safe"})})
    list_folder.cache_clear()
    with pytest.raises(UserError) as info:
        list(labelled_records(root))
    assert str(info.value) == "pairs/e: no image file"


def test_labelled_records_of_an_imagefolder(tmp_path):
    root = files(tmp_path / "imf", {"a.jpg": b"A", "b.jpg": b"B", "0-unlisted.jpg": b"U",
                                    "metadata.jsonl": json.dumps({"file_name": "a.jpg", "label": 1}) + "\n"
                                    + json.dumps({"file_name": "b.jpg", "label": 0})})
    got = list(labelled_records(root, max_bytes=1))
    assert got == [({"file_name": "a.jpg", "label": 1, "image": root / "a.jpg"}, "imf/a"),
                   ({"file_name": "b.jpg", "label": 0, "image": root / "b.jpg"}, "imf/b")]


@pytest.mark.parametrize("layout, message", [
    ({"a.jpg": b"AA"}, "lab/a: 'a.jpg' is 2 bytes, over the 1-byte limit"),
    ({"metadata.jsonl": json.dumps({"file_name": "../x.jpg"})},
     "lab/metadata.jsonl/1: path '../x.jpg' leaves the folder: not opened"),
    ({"metadata.jsonl": json.dumps({"file_name": "gone.jpg"})}, "lab/gone: cannot read image: No such file or directory"),
    ({"a.jpg": b"A", "a.json": "{broken"}, "lab/a.json: cannot read (JSONDecodeError)"),
])
def test_labelled_records_refusals(tmp_path, layout, message):
    root = files(tmp_path / "lab", layout)
    with pytest.raises(UserError) as info:
        list(labelled_records(root, max_bytes=1))
    assert str(info.value) == message


def test_labelled_records_refuse_symlinks_and_special_files(tmp_path):
    root = files(tmp_path / "lab", {"real.bin": b"A"})
    (root / "a.jpg").symlink_to(root / "real.bin")
    with pytest.raises(UserError) as info:
        list(labelled_records(root))
    assert str(info.value) == "lab/a: 'a.jpg' is a symlink: not opened"
    (root / "a.jpg").unlink()
    os.mkfifo(root / "a.jpg")
    list_folder.cache_clear()
    with pytest.raises(UserError) as info:
        list(labelled_records(root))
    assert str(info.value) == "lab/a: 'a.jpg' is not a regular file: not opened"


def test_labelled_refusals_cut_long_names_at_200_characters(tmp_path):
    root = files(tmp_path / "lab", {"real.bin": b"AA", "b" * 250 + ".jpg": b"AA"})
    long = "a" * 250 + ".jpg"
    (root / long).symlink_to(root / "real.bin")
    with pytest.raises(UserError) as info:
        list(labelled_records(root, max_bytes=1))
    assert str(info.value) == f"lab/{'a' * 250}: {long[:200]!r} is a symlink: not opened"
    (root / long).unlink()
    list_folder.cache_clear()
    with pytest.raises(UserError) as info:
        list(labelled_records(root, max_bytes=1))
    assert str(info.value) == f"lab/{'b' * 250}: {('b' * 250 + '.jpg')[:200]!r} is 2 bytes, over the 1-byte limit"
    (root / ("b" * 250 + ".jpg")).unlink()
    os.mkfifo(root / long)
    list_folder.cache_clear()
    with pytest.raises(UserError) as info:
        list(labelled_records(root, max_bytes=1))
    assert str(info.value) == f"lab/{'a' * 250}: {long[:200]!r} is not a regular file: not opened"
