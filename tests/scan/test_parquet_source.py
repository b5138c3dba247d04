"""Parquet/Arrow rows as samples (scan/parquet_source.py) on small in-memory tables: every field
of a sample, every preset status and its exact error, batch sizes, budgets at their boundary."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlmaudit.errors import UserError
from vlmaudit.scan import parquet_source as P
from vlmaudit.scan.parquet_source import (READ_ROWS, Oversized, check_table_shards, is_table_shard,
                                          iter_table_images, iter_table_samples, open_table, page_limit, read_schema,
                                          row_sample)
from vlmaudit.scan.samples import KEPT_KEY_CHARS, MAX_NAME_CHARS
from vlmaudit.scan.table_columns import ColumnChoice, Columns
from vlmaudit.scan.tario import TarEnd

IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def parquet_bytes(table, **kw) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kw)
    return sink.getvalue()


def arrow_bytes(tables, file=False, **kw) -> bytes:
    sink = io.BytesIO()
    new = pa.ipc.new_file if file else pa.ipc.new_stream
    with new(sink, tables[0].schema, **kw) as writer:
        for table in tables:
            writer.write_table(table)
    return sink.getvalue()


def samples(data: bytes, url="dir/t.parquet", max_bytes=1 << 20, chars=100):
    end = TarEnd()
    got = list(iter_table_samples(io.BytesIO(data), url, end, ColumnChoice(), max_bytes, chars))
    return got, end


def fields(sample) -> tuple:
    return (sample.key, sample.index, sample.image, sample.image_ext, sample.caption, sample.url, sample.status,
            sample.error, sample.notes)


@pytest.mark.parametrize("url, table", [
    ("a.parquet", True), ("A.PARQUET", True), ("x.arrow", True), ("x.Arrow", True), ("pipe:cat a.parquet", False),
    ("a.tar", False), ("a.parquet.gz", False), ("s3://b/a.parquet", True),
])
def test_is_table_shard(url, table):
    assert is_table_shard(url) is table


def test_page_limit_is_one_image_plus_a_mebibyte():
    assert page_limit(0) == 1 << 20 and page_limit(5) == 5 + (1 << 20)


def test_oversized_rows_carry_their_known_columns_or_nothing():
    assert Oversized(2, "why").to_pylist() == [{}, {}]
    assert Oversized(1, "why", pa.table({"key": ["k"]})).to_pylist() == [{"key": "k"}]
    assert Oversized(0, "because").error() == "not read: because"


COLUMNS = Columns("jpg", "binary", "caption", "key", "url")


@pytest.mark.parametrize("row, expected", [
    ({"jpg": b"J", "caption": "c", "key": "k", "url": "http://u"}, ("k", 4, b"J", "jpg", "c", "http://u", None, None, [])),
    ({"jpg": b"J", "caption": None, "key": None, "url": None}, ("stem/4", 4, b"J", "jpg", None, None, None, None, [])),
    ({"jpg": b"J", "key": 17, "url": 5}, ("17", 4, b"J", "jpg", None, "5", None, None, [])),
    ({"jpg": None, "key": "k"}, ("k", 4, None, None, None, None, "missing_image", "image column 'jpg' is null", [])),
    ({"jpg": b"x" * 11, "key": "k"},
     ("k", 4, None, None, None, None, "too_large", "image is 11 bytes, over the 10-byte limit", [])),
    ({"jpg": b"x" * 10, "caption": "abcdefgh"}, ("stem/4", 4, b"x" * 10, "jpg", "abcde", None, None, None,
                                                 ["caption_capped"])),
])
def test_row_sample(row, expected):
    assert fields(row_sample(row, 4, COLUMNS, "stem", 10, 5)) == expected


def test_row_sample_of_a_column_not_named_jpg_has_no_extension_and_no_columns_no_fields():
    sample = row_sample({"image": b"I", "caption": "c"}, 0, Columns("image", "binary"), "s", 10, 5)
    assert fields(sample) == ("s/0", 0, b"I", None, None, None, None, None, [])


@pytest.mark.parametrize("value, expected", [
    ({"bytes": b"B", "path": "x.jpg"}, (b"B", None, None)),
    ({"bytes": None, "path": "/etc/passwd"},
     (None, "missing_image", "the image struct has a path but no bytes (paths in data are never opened)")),
    ({"bytes": None, "path": ""}, (None, "missing_image", "image column 'img' is null")),
    ({"bytes": None, "path": None}, (None, "missing_image", "image column 'img' is null")),
    (None, (None, "missing_image", "image column 'img' is null")),
])
def test_image_structs(value, expected):
    sample = row_sample({"img": value}, 0, Columns("img", "struct"), "s", 10, 5)
    assert (sample.image, sample.status, sample.error) == expected


@pytest.mark.parametrize("status, message, expected", [
    ("success", "ignored", (b"J", None, None)),
    (None, None, (b"J", None, None)),
    ("failed_to_download", "HTTP 404", (None, "missing_image", "img2dataset status 'failed_to_download': HTTP 404")),
    ("failed_to_resize", None, (None, "missing_image", "img2dataset status 'failed_to_resize'")),
    ("x", "e" * 400, (None, "missing_image", "img2dataset status 'x': " + "e" * 300)),
])
def test_img2dataset_statuses(status, message, expected):
    columns = Columns("jpg", "binary", None, None, None, "status")
    sample = row_sample({"jpg": b"J", "status": status, "error_message": message}, 0, columns, "s", 10, 5)
    assert (sample.image, sample.status, sample.error) == expected


def test_long_urls_and_keys_are_capped():
    url = "http://" + "u" * MAX_NAME_CHARS
    sample = row_sample({"jpg": b"J", "url": url, "key": "k" * MAX_NAME_CHARS}, 0, COLUMNS, "s", 10, 5)
    assert sample.url == url[:MAX_NAME_CHARS] and sample.notes == ["url_capped"]
    assert sample.key == "k" * MAX_NAME_CHARS and sample.status is None and sample.image == b"J"
    exact = "http://" + "u" * (MAX_NAME_CHARS - 7)
    assert row_sample({"jpg": b"J", "url": exact}, 0, COLUMNS, "s", 10, 5).notes == []
    long = "k" * (MAX_NAME_CHARS + 1)
    sample = row_sample({"jpg": b"J", "key": long}, 0, COLUMNS, "s", 10, 5)
    assert (sample.image, sample.status, sample.error) == (
        None, "bad_name", f"key of {MAX_NAME_CHARS + 1} characters, over the {MAX_NAME_CHARS}-character limit")
    assert sample.key.startswith("k" * KEPT_KEY_CHARS + "…") and len(sample.key) == KEPT_KEY_CHARS + 1 + 16
    other = row_sample({"jpg": b"J", "key": long[:-1] + "x"}, 0, COLUMNS, "s", 10, 5)
    assert other.key != sample.key and other.key[:KEPT_KEY_CHARS] == sample.key[:KEPT_KEY_CHARS]


def test_a_parquet_file_becomes_samples_in_order():
    table = pa.table({"key": ["a", None, "c"], "jpg": [b"A", b"B", None], "caption": ["x", "y", "z"]})
    got, end = samples(parquet_bytes(table), "dir/sub/T.PARQUET")
    assert [fields(s) for s in got] == [
        ("a", 0, b"A", "jpg", "x", None, None, None, []), ("T/1", 1, b"B", "jpg", "y", None, None, None, []),
        ("c", 2, None, None, "z", None, "missing_image", "image column 'jpg' is null", [])]
    assert (end.status, end.error) == ("complete", None)


@pytest.mark.parametrize("url, stem", [("x/.parquet", ".parquet"), ("a.arrow", "a"), ("s3://b/p/n.parquet/", "n")])
def test_keys_of_rows_without_one_come_from_the_file_stem(url, stem):
    data = arrow_bytes([pa.table({"image": [b"A"]})]) if ".arrow" in url else parquet_bytes(pa.table({"image": [b"A"]}))
    got, _ = samples(data, url)
    assert got[0].key == f"{stem}/0"


def test_many_rows_come_in_batches_of_read_rows():
    table = pa.table({"image": [bytes([i % 256]) for i in range(READ_ROWS * 2 + 3)]})
    for data, url in ((parquet_bytes(table, row_group_size=1000), "t.parquet"), (arrow_bytes([table]), "t.arrow"),
                      (arrow_bytes([table], file=True), "t.arrow")):
        schema, batches = open_table(io.BytesIO(data), url)
        assert [b.num_rows for b in batches(["image"])] == [READ_ROWS, READ_ROWS, 3], url
        schema, batches = open_table(io.BytesIO(data), url, 1 << 20)
        assert [b.num_rows for b in batches(["image"])] == [READ_ROWS, READ_ROWS, 3], url
        assert schema.names == ["image"]


def test_an_unreadable_file_and_a_file_without_an_image_column():
    got, end = samples(b"not parquet at all", "t.parquet")
    assert got == [] and end.status == "unreadable"
    assert end.error.startswith("cannot read as Parquet: ArrowInvalid: ")
    got, end = samples(b"not arrow at all", "t.arrow")
    assert got == [] and end.status == "unreadable" and end.error.startswith("cannot read as Arrow IPC: ")
    got, end = samples(parquet_bytes(pa.table({"n": [1]})), "d/t.parquet")
    assert got == [] and end.status == "failed"
    assert end.error == ("t.parquet: no image column (its columns: 'n' int64); choose one with --image-column "
                         "(and --caption-column / --key-column)")


def test_damage_after_some_rows_truncates_and_before_any_is_unreadable(monkeypatch):
    table = pa.table({"image": [b"A"] * 40})
    data = parquet_bytes(table, row_group_size=20)

    def failing_after(n):
        real = P.row_sample

        def sample(row, index, *args):
            if index == n:
                raise OSError("disk gone")
            return real(row, index, *args)
        return sample

    monkeypatch.setattr(P, "row_sample", failing_after(20))
    got, end = samples(data)
    assert len(got) == 20 and (end.status, end.error) == ("truncated", "Parquet damaged after 20 rows: OSError: disk gone")
    monkeypatch.setattr(P, "row_sample", failing_after(0))
    got, end = samples(data)
    assert got == [] and (end.status, end.error) == ("unreadable", "Parquet damaged after 0 rows: OSError: disk gone")


def test_a_parquet_page_over_the_budget_makes_its_row_group_too_large_keeping_known_columns(monkeypatch):
    table = pa.table({"key": ["a", "b", "c", "d"], "jpg": [b"x" * 10, b"y" * 10, b"z" * 3000, b"w" * 10]})
    data = parquet_bytes(table, row_group_size=2, compression="none", use_dictionary=False)
    limit = page_limit(0)
    got, end = samples(data, max_bytes=0)
    assert [s.status for s in got] == ["too_large"] * 4  # the 1 MiB room: every page fits, every image is over 0
    monkeypatch.setattr(P, "page_limit", lambda max_bytes: max_bytes)  # a budget without room: pages are checked
    got, end = samples(data, max_bytes=100)
    assert [(s.key, s.status, s.image) for s in got] == [("a", None, b"x" * 10), ("b", None, b"y" * 10),
                                                        ("c", "too_large", None), ("d", "too_large", None)]
    assert got[2].error.startswith("not read: its row group's column 'jpg' has a page of ")
    assert got[2].error.endswith(" bytes uncompressed, over the 100-byte budget") and limit == 1 << 20
    assert end.status == "complete"


def test_an_arrow_batch_over_the_budget_is_one_oversized_item_and_the_rest_is_read():
    small = pa.table({"image": [b"a", b"b"]})
    big = pa.table({"image": [b"x" * 2000]})
    data = arrow_bytes([small, big, small])
    schema, batches = P._open_ipc_budgeted(io.BytesIO(data), 1000)
    got = list(batches(["image"]))
    assert [type(b).__name__ for b in got] == ["RecordBatch", "Oversized", "RecordBatch"]
    assert got[1].num_rows == 1 and got[1].why.startswith("its record batch declares ")
    assert got[1].why.endswith(" bytes, over the 1000-byte budget")
    declared = int(got[1].why.split()[4])
    assert 2000 <= declared < 2100
    exact = list(P._open_ipc_budgeted(io.BytesIO(data), declared)[1](["image"]))
    assert [type(b).__name__ for b in exact] == ["RecordBatch"] * 3  # a batch exactly at the budget is read
    assert [type(b).__name__ for b in P._open_ipc_budgeted(io.BytesIO(data), declared - 1)[1](["image"])] == [
        "RecordBatch", "Oversized", "RecordBatch"]


def test_an_arrow_file_read_as_a_shard_leaves_out_the_batch_over_its_budget():
    small = pa.table({"key": ["a"], "image": [b"a"]})
    big = pa.table({"key": ["big"], "image": [bytes(2 << 20)]})
    for file in (False, True):
        got, end = samples(arrow_bytes([small, big, small], file=file), "t.arrow", max_bytes=10)
        assert [(s.key, s.status, s.image) for s in got] == [("a", None, b"a"), ("t/1", "too_large", None),
                                                            ("a", None, b"a")]
        assert got[1].error.startswith("not read: its record batch declares ")
        assert got[1].error.endswith(f" bytes, over the {page_limit(10)}-byte budget") and end.status == "complete"


def test_an_arrow_dictionary_over_the_budget_refuses_the_file():
    table = pa.table({"image": [b"a"], "caption": pa.array(["c" * 3000]).dictionary_encode()})
    with pytest.raises(ValueError) as info:
        P._open_ipc_budgeted(io.BytesIO(arrow_bytes([table])), 1000)
    assert str(info.value).startswith("a dictionary batch declares ")
    assert str(info.value).endswith(" bytes, over the 1000-byte budget")
    P._open_ipc_budgeted(io.BytesIO(arrow_bytes([table])), 100_000)


def test_an_arrow_stream_without_its_end_marker_is_read_whole():
    table = pa.table({"image": [b"a"]})
    got, end = samples(arrow_bytes([table, table])[:-8], "t.arrow")
    assert [s.key for s in got] == ["t/0", "t/1"] and end.status == "complete"


def test_images_of_a_table_for_the_gallery(tmp_path):
    table = pa.table({"key": ["a", "b", "c"], "jpg": [b"A", None, b"C" * 20]})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    assert list(iter_table_images(str(path))) == [("a", b"A"), ("c", b"C" * 20)]
    assert list(iter_table_images(str(path), max_bytes=10)) == [("a", b"A")]
    assert list(iter_table_images(str(path), ColumnChoice(key="jpg"))) == []  # unusable columns: nothing
    assert read_schema(str(path)).names == ["key", "jpg"]


def test_check_table_shards_refuses_unusable_local_tables_and_only_the_first_remote(tmp_path, monkeypatch):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    pq.write_table(pa.table({"jpg": [b"x"]}), good)
    pq.write_table(pa.table({"n": [1]}), bad)
    (tmp_path / "broken.parquet").write_bytes(b"junk")
    check_table_shards([str(good), str(tmp_path / "broken.parquet"), str(tmp_path / "x.tar")], ColumnChoice())
    with pytest.raises(UserError, match="bad.parquet: no image column"):
        check_table_shards([str(good), str(bad)], ColumnChoice())
    with pytest.raises(UserError, match="--caption-column 'nope'"):
        check_table_shards([str(good)], ColumnChoice(caption="nope"))
    read = []
    schemas = {"s3://b/1.parquet": pa.schema([("jpg", pa.binary())]), "s3://b/2.parquet": pa.schema([("n", pa.int8())])}
    monkeypatch.setattr(P, "read_schema", lambda url: read.append(url) or schemas[url])
    check_table_shards(["s3://b/1.parquet", "s3://b/2.parquet", "pipe:cat x.parquet"], ColumnChoice())
    assert read == ["s3://b/1.parquet"]
    schemas[str(bad)] = pq.read_schema(bad)
    with pytest.raises(UserError, match="bad.parquet: no image column"):
        check_table_shards(["s3://b/1.parquet", "s3://b/2.parquet", str(bad)], ColumnChoice())
    with pytest.raises(UserError, match="s3://b/2.parquet: no image column"):
        check_table_shards(["s3://b/2.parquet", "s3://b/1.parquet"], ColumnChoice())
