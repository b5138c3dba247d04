"""Cheap sample totals (scan/counting.py): a tar's count equals the number of rows the scan makes
of it, whatever its layout; tables count their rows from footers; anything else is unknown."""

import io
import tarfile
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_tar
from vlmaudit.scan.counting import SampleTotal, count_samples
from vlmaudit.scan.samples import iter_samples
from vlmaudit.scan.tario import TarEnd


def scanned_rows(path) -> int:
    with open(path, "rb") as stream:
        return len(list(iter_samples(stream, TarEnd(), 1 << 20, 100)))


@pytest.mark.parametrize("names", [
    ["a.jpg", "a.txt", "b.jpg", "b.json", "c.png"],
    ["a.jpg", "b.jpg", "a.txt"],                      # a key that comes back is a row of its own
    ["a.jpg", "x.xyz", "a.txt"],                      # an ignored member still ends a run
    ["a.jpg", "noext", "b.jpg"],
    ["./a.jpg", "a.txt", "./b.jpg"],                  # './a' is key 'a'
    ["a.jpg", "A.txt"],
    ["dir/a.jpg", "dir/a.txt", "a.jpg"],
    [],
])
def test_a_tar_counts_as_many_samples_as_the_scan_makes_rows(tmp_path, names):
    path = write_tar(tmp_path / "s.tar", [(name, b"x") for name in names])
    assert count_samples(str(path)) == scanned_rows(path)


def test_directories_and_links_are_not_samples_and_an_uppercase_suffix_is_a_tar(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind in (("a", tarfile.DIRTYPE), ("a.jpg", tarfile.REGTYPE), ("b", tarfile.SYMTYPE),
                           ("a.txt", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            tf.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    path = tmp_path / "S.TAR"
    path.write_bytes(buf.getvalue())
    assert count_samples(str(path)) == scanned_rows(path) == 1


def test_a_member_behind_an_oversized_long_name_counts_as_the_scan_keys_it(tmp_path):
    long = "k" * 70000
    path = write_tar(tmp_path / "s.tar", [(long + ".jpg", b"x"), (long + ".txt", b"y"), ("b.jpg", b"z")])
    assert count_samples(str(path)) == scanned_rows(path) == 2  # both names are cut to the same 100 characters


def test_a_tar_damaged_after_some_members_counts_what_the_scan_reads_and_a_non_tar_is_unknown(tmp_path):
    path = write_tar(tmp_path / "s.tar", [("a.jpg", b"x" * 600), ("b.jpg", b"y")])
    data = path.read_bytes()
    path.write_bytes(data[:1536] + b"\x01" * 512 + data[2048:])
    assert count_samples(str(path)) == scanned_rows(path) == 1
    path.write_bytes(b"\x01" * 2048)
    assert count_samples(str(path)) is None
    assert count_samples(str(tmp_path / "missing.tar")) is None


def test_tables_count_rows_from_their_footers(tmp_path):
    table = pa.table({"x": list(range(12))})
    pq.write_table(table, tmp_path / "a.PARQUET", row_group_size=5)
    assert count_samples(str(tmp_path / "a.PARQUET")) == 12
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=5):
            writer.write_batch(batch)
    assert count_samples(str(tmp_path / "f.arrow")) == 12
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert count_samples(str(tmp_path / "s.arrow")) is None  # a stream has no footer
    (tmp_path / "bad.arrow").write_bytes(b"ARROW1" + b"\x00" * 100)
    assert count_samples(str(tmp_path / "bad.arrow")) is None


def test_a_folder_shard_counts_its_images(tmp_path):
    from vlmaudit.scan.folder_source import expand_folder

    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    urls = expand_folder(str(tmp_path), 10)
    assert [count_samples(url) for url in urls] == [2]


@pytest.mark.parametrize("url", ["s3://b/x.tar", "http://h/x.tar", "pipe:cat x.tar", "x.tar.gz", "x.tgz",
                                 "x.zip", "x", "hf://datasets/o/n/x.parquet"])
def test_anything_else_is_unknown_without_being_opened(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if not url.startswith(("s3:", "http", "pipe:", "hf:")):
        write_tar(tmp_path / url, [("a.jpg", b"x")])
    assert count_samples(url) is None


def test_the_total_is_the_sum_once_every_shard_is_counted():
    calls = []
    total = SampleTotal(["a", "b", "c"], counter=lambda url: calls.append(url) or {"a": 2, "b": 0, "c": 5}[url])
    assert total.wait(30) == 7 and total() == 7 and calls == ["a", "b", "c"]
    assert SampleTotal([], counter=lambda url: 1).wait(30) == 0


def test_one_unknown_shard_makes_the_total_unknown_and_stops_counting():
    calls = []
    total = SampleTotal(["a", "b", "c"], counter=lambda url: calls.append(url) or {"a": 2, "b": None, "c": 5}[url])
    assert total.wait(30) is None and total() is None and calls == ["a", "b"]


def test_the_total_is_none_until_counting_ends_and_counting_runs_in_a_daemon_thread():
    release = threading.Event()
    threads = []

    def counter(url):
        threads.append(threading.current_thread())
        release.wait(30)
        return 3

    total = SampleTotal(["a"], counter=counter)
    assert total() is None and total.wait(0.01) is None
    release.set()
    assert total.wait(30) == 3
    assert threads[0] is not threading.main_thread() and threads[0].daemon


def test_the_default_counter_counts_files(tmp_path):
    path = write_tar(tmp_path / "s.tar", [("a.jpg", b"x"), ("b.jpg", b"y")])
    assert SampleTotal([str(path), str(path)]).wait(30) == 4
