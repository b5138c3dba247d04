"""Parquet page headers (scan/parquet_pages.py): hand-encoded Thrift compact headers with every
field type to skip (each skip must land exactly on the next field), the depth and varint limits
at their bounds, every refusal, and page sizes of real files."""

import io
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlmaudit.scan import parquet_pages as P
from vlmaudit.scan.parquet_pages import BadHeader, oversized_pages, page_sizes, parse_header


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def zz(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63))


def field(delta: int, kind: int, body: bytes = b"") -> bytes:
    return bytes([(delta << 4) | kind]) + body


def header(*extra: bytes, uncompressed=100, compressed=40, values=7) -> bytes:
    """type (1), sizes (2, 3), the EXTRA field (id 4) if any, then a data page header (field 5)
    with its value count."""
    data = field(1, 5, zz(0)) + field(1, 5, zz(uncompressed)) + field(1, 5, zz(compressed))
    assert len(extra) <= 1
    data += b"".join(extra)
    return data + field(2 - len(extra), 12, field(1, 5, zz(values)) + b"\x00") + b"\x00"


def parsed(*extra, **kw):
    data = header(*extra, **kw)
    return parse_header(data + b"\xaa" * 10), len(data)


def test_a_plain_header():
    (length, uncompressed, compressed, values), size = parsed()
    assert (length, uncompressed, compressed, values) == (size, 100, 40, 7)


@pytest.mark.parametrize("item", [
    field(1, 1), field(1, 2), field(1, 3, b"\x7f"), field(1, 4, zz(-300)), field(1, 5, zz(1 << 20)),
    field(1, 6, zz(-(1 << 40))), field(1, 7, struct.pack("<d", 2.5)), field(1, 8, varint(3) + b"abc"),
    field(1, 8, varint(200) + b"x" * 200),
    field(1, 9, bytes([(3 << 4) | 5]) + zz(1) + zz(2) + zz(3)),
    field(1, 9, bytes([0xF0 | 8]) + varint(16) + (varint(1) + b"z") * 16),
    field(1, 10, bytes([(2 << 4) | 3]) + b"\x01\x02"),
    field(1, 11, varint(0)),
    field(1, 11, varint(2) + bytes([(5 << 4) | 8]) + zz(1) + varint(2) + b"ab" + zz(2) + varint(1) + b"c"),
    field(1, 12, field(1, 5, zz(99)) + field(2, 12, field(1, 8, varint(2) + b"hi") + b"\x00") + b"\x00"),
    field(1, 9, bytes([(2 << 4) | 12]) + field(1, 5, zz(1)) + b"\x00" + field(1, 2) + b"\x00"),
])
def test_every_thrift_type_is_skipped_exactly(item):
    (length, uncompressed, compressed, values), size = parsed(item)
    assert (length, uncompressed, compressed, values) == (size, 100, 40, 7)


def test_a_long_form_field_id_and_the_other_page_header_kinds():
    long_id = bytes([5]) + zz(2) + zz(55) + bytes([5]) + zz(3) + zz(22)  # delta 0: the id follows, zigzag
    data = field(1, 5, zz(0)) + long_id + field(4, 12, field(1, 5, zz(9)) + b"\x00") + b"\x00"
    assert parse_header(data) == (len(data), 55, 22, 9)  # field 7: dictionary page header
    data = field(2, 5, zz(5)) + field(1, 5, zz(6)) + bytes([12]) + zz(8) + field(1, 5, zz(4)) + b"\x00" + b"\x00"
    assert parse_header(data) == (len(data), 5, 6, 4)  # field 8: data page header v2
    data = field(2, 5, zz(5)) + field(1, 5, zz(6)) + field(2, 5, zz(123)) + b"\x00"
    assert parse_header(data) == (len(data), 5, 6, 0)  # field 5 not a struct: skipped, no count


def test_only_i32_sizes_count():
    data = field(2, 6, zz(5)) + field(1, 5, zz(6)) + b"\x00"
    with pytest.raises(BadHeader, match="^page header without its sizes$"):
        parse_header(data)
    with pytest.raises(BadHeader, match="^page header without its sizes$"):
        parse_header(field(2, 5, zz(5)) + b"\x00")
    with pytest.raises(BadHeader, match="^page header without its sizes$"):
        parse_header(field(3, 5, zz(6)) + b"\x00")


@pytest.mark.parametrize("sizes", [(-1, 5), (5, -1)])
def test_negative_sizes_are_refused(sizes):
    with pytest.raises(BadHeader, match="^page header without its sizes$"):
        parse_header(field(2, 5, zz(sizes[0])) + field(1, 5, zz(sizes[1])) + b"\x00")
    assert parse_header(field(2, 5, zz(0)) + field(1, 5, zz(0)) + b"\x00")[1:3] == (0, 0)


def nested(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = field(1, 12, inner + b"\x00")
    return inner


def test_nesting_is_refused_past_32_levels():
    assert parsed(nested(33))[0][1] == 100
    with pytest.raises(BadHeader, match="^page header nested too deep$"):
        parse_header(header(nested(34)))


def test_nested_lists_count_towards_the_depth():
    list_of_structs = field(1, 9, bytes([(1 << 4) | 12]) + nested(32)[1:])
    assert parsed(list_of_structs)[0][1] == 100
    with pytest.raises(BadHeader, match="nested too deep"):
        parse_header(header(field(1, 9, bytes([(1 << 4) | 12]) + nested(33)[1:])))
    map_deep = field(1, 11, varint(1) + bytes([(12 << 4) | 1]) + nested(33)[1:])
    with pytest.raises(BadHeader, match="nested too deep"):
        parse_header(header(map_deep))
    map_values = field(1, 11, varint(1) + bytes([(1 << 4) | 12]) + nested(33)[1:])
    with pytest.raises(BadHeader, match="nested too deep"):
        parse_header(header(map_values))


def test_varints_are_limited_to_eleven_bytes():
    ok = field(1, 6, b"\x80" * 10 + b"\x00")
    assert parsed(ok)[0][1] == 100
    with pytest.raises(BadHeader, match="^varint too long$"):
        parse_header(header(field(1, 6, b"\x80" * 11 + b"\x00")))


@pytest.mark.parametrize("cut", [1, 3, 5, 8])
def test_a_header_cut_short_is_refused(cut):
    data = header()
    with pytest.raises(BadHeader, match="^page header runs past its bytes$"):
        parse_header(data[:-cut])


@pytest.mark.parametrize("kind", [0, 13, 15])
def test_unknown_types_are_refused(kind):
    with pytest.raises(BadHeader) as info:
        parse_header(header(field(1, 9, bytes([(1 << 4) | kind]))))
    assert str(info.value) == f"unknown Thrift type {kind}"


def test_a_binary_running_past_the_data_is_noticed_at_the_next_read():
    with pytest.raises(BadHeader, match="runs past"):
        parse_header(header(field(1, 8, varint(1000))))


# ---- real files -----------------------------------------------------------------------------------

def parquet(table, **kw) -> io.BytesIO:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kw)
    sink.seek(0)
    return sink


def test_page_sizes_of_a_real_column_chunk_with_and_without_a_dictionary():
    table = pa.table({"x": pa.array([i % 7 for i in range(3000)], pa.int64()), "b": [bytes(100)] * 3000})
    stream = parquet(table, data_page_size=2000, compression="zstd", use_dictionary=["x"], write_batch_size=10)
    metadata = pq.ParquetFile(stream).metadata
    x, b = metadata.row_group(0).column(0), metadata.row_group(0).column(1)
    pages_x, pages_b = page_sizes(stream, x), page_sizes(stream, b)
    assert x.has_dictionary_page and pages_x[0] == (7 * 8, 7)  # the dictionary page: 7 int64 values
    assert sum(v for _, v in pages_x[1:]) == 3000 and sum(v for _, v in pages_b) == 3000
    assert len(pages_b) > 10 and all(size > 0 for size, _ in pages_b)


def test_oversized_pages_names_the_top_level_column_of_its_largest_page():
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"key": ["a", "b", "c"], "img": pa.array([{"bytes": bytes(5000), "path": "p"},
                                                               {"bytes": bytes(10), "path": "q"},
                                                               {"bytes": bytes(7000), "path": "r"}], image)})
    stream = parquet(table, data_page_size=1, compression="zstd", use_dictionary=False, write_batch_size=1)
    metadata = pq.ParquetFile(stream).metadata
    found = oversized_pages(stream, metadata, 0, ["key", "img"], 6000)
    assert list(found) == ["img"] and 7000 <= found["img"] < 7100
    assert oversized_pages(stream, metadata, 0, ["key"], 100) == {}
    assert oversized_pages(stream, metadata, 0, ["key", "img"], found["img"]) == {}  # a page at the limit fits
    assert oversized_pages(stream, metadata, 0, ["img"], found["img"] - 1) == {"img": found["img"]}


def test_a_chunk_declaring_no_more_than_the_limit_is_not_walked(monkeypatch):
    stream = parquet(pa.table({"b": [bytes(100)] * 10}), compression="none")
    metadata = pq.ParquetFile(stream).metadata
    total = metadata.row_group(0).column(0).total_uncompressed_size
    walked = []
    monkeypatch.setattr(P, "page_sizes", lambda s, chunk: walked.append(chunk) or [(total, 10)])
    assert oversized_pages(stream, metadata, 0, ["b"], total) == {} and walked == []
    assert oversized_pages(stream, metadata, 0, ["b"], total - 1) == {"b": total} and len(walked) == 1


def test_too_many_pages_in_one_chunk(monkeypatch):
    table = pa.table({"b": [bytes(100)] * 50})
    stream = parquet(table, data_page_size=200, use_dictionary=False)
    chunk = pq.ParquetFile(stream).metadata.row_group(0).column(0)
    count = len(page_sizes(stream, chunk))
    monkeypatch.setattr(P, "MAX_PAGES", count)
    assert len(page_sizes(stream, chunk)) == count
    monkeypatch.setattr(P, "MAX_PAGES", count - 1)
    with pytest.raises(BadHeader) as info:
        page_sizes(stream, chunk)
    assert str(info.value) == f"over {count - 1} pages in one column chunk"
