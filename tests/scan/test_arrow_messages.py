"""Arrow IPC message walking (scan/arrow_messages.py): declared sizes of real streams (plain,
compressed, legacy), and each kind of damaged metadata refused with its own message."""

import io
import struct

import pyarrow as pa
import pytest

from vlmaudit.scan.arrow_messages import (DICTIONARY, MAX_METADATA, RECORD_BATCH, SCHEMA, BadMessage, Kept, _Table,
                                          walk)

TABLE = pa.table({"image": [b"abc", b"defgh"], "cap": pa.array(["x", "y"]).dictionary_encode()})
TWO = (TABLE, TABLE.slice(1))


def stream_bytes(tables=TWO, **options) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, tables[0].schema, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        for table in tables:
            writer.write_table(table)
    return sink.getvalue()


def walked(data: bytes, start=0):
    return walk(io.BytesIO(data), start)


def refusal(data: bytes) -> str:
    with pytest.raises(BadMessage) as info:
        walked(data)
    return str(info.value)


def test_kinds_are_the_ipc_message_header_types():
    assert (SCHEMA, DICTIONARY, RECORD_BATCH) == (1, 2, 3)


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_every_message_with_its_rows_and_declared_bytes(compression):
    data = stream_bytes(compression=compression)
    messages = walked(data)
    assert [(kind, rows, declared) for kind, _, _, rows, declared in messages] == [
        (SCHEMA, 0, 0), (DICTIONARY, 2, 14), (RECORD_BATCH, 2, 28), (RECORD_BATCH, 1, 17)]
    assert messages[0][1] == 0 and all(a[2] == b[1] for a, b in zip(messages, messages[1:]))
    assert messages[-1][2] == len(data) - 8  # the end-of-stream marker follows the last message


def test_a_compressed_buffer_declares_its_uncompressed_size():
    table = pa.table({"image": [bytes(100_000)]})
    plain, packed = stream_bytes([table]), stream_bytes([table], compression="zstd")
    assert len(packed) < 2000 < len(plain)
    assert walked(packed)[1][3:] == walked(plain)[1][3:] == (1, 100_008)  # 8 bytes of offsets + the cell


def test_the_legacy_format_without_continuation_markers():
    legacy = stream_bytes(use_legacy_format=True)
    assert [(k, r, d) for k, _, _, r, d in walked(legacy)] == [(k, r, d) for k, _, _, r, d in walked(stream_bytes())]
    assert walked(legacy)[-1][2] == len(legacy) - 4


def test_walking_starts_where_told_and_stops_at_the_end_of_the_data():
    data = stream_bytes()
    whole = walked(data)
    assert walked(data, whole[1][1]) == whole[1:]
    assert walked(data[:-8]) == whole
    assert walked(data[:-8] + b"\xff\xff\xff") == whole  # under 4 bytes left
    assert walked(data[:-8] + b"\xff\xff\xff\xff") == whole  # a marker without its length
    assert walked(b"") == [] and walked(b"\x00\x00\x00\x00") == []


@pytest.mark.parametrize("size", [-5, MAX_METADATA + 1])
def test_metadata_sizes_out_of_range_are_refused(size):
    assert refusal(b"\xff\xff\xff\xff" + struct.pack("<i", size) + bytes(64)) == f"message metadata of {size} bytes"
    assert refusal(struct.pack("<i", size) + bytes(64)) == f"message metadata of {size} bytes"


def test_metadata_cut_short():
    assert refusal(b"\xff\xff\xff\xff" + struct.pack("<i", MAX_METADATA) + bytes(64)) == (
        "message metadata runs past the end of the file")
    data = stream_bytes()
    assert refusal(data[:100]) == "message metadata runs past the end of the file"


def test_a_root_offset_outside_the_metadata():
    assert refusal(b"\xff\xff\xff\xff" + struct.pack("<i", 16) + struct.pack("<I", 1000) + bytes(12)) == (
        "message metadata points outside itself")
    negative_vtable = struct.pack("<I", 4) + struct.pack("<i", 100)  # vtable at 4 - 100
    assert refusal(b"\xff\xff\xff\xff" + struct.pack("<i", 8) + negative_vtable) == (
        "message metadata points outside itself")


def patched(data: bytes, message_index: int, find, value: bytes) -> bytes:
    """`data` with `value` written where `find(table of the message)` points (an offset into the
    message metadata)."""
    start = walked(data)[message_index][1]
    size = struct.unpack_from("<i", data, start + 4)[0]
    meta = data[start + 8:start + 8 + size]
    at = find(_Table(meta, struct.unpack_from("<I", meta)[0]))
    out = bytearray(data)
    out[start + 8 + at:start + 8 + at + len(value)] = value
    return bytes(out)


def body_length(message):
    return message.pos + message._slot(3)


def buffers(message):
    return message.table(2).target(2)


def test_a_negative_body_length_is_refused():
    assert refusal(patched(stream_bytes(), 2, body_length, struct.pack("<q", -1))) == "negative message body length"


def test_a_buffer_vector_longer_than_the_metadata_is_refused():
    assert refusal(patched(stream_bytes(), 2, buffers, struct.pack("<I", 10**6))) == (
        "message metadata vector runs past its end")


@pytest.mark.parametrize("field, value", [(0, -1), (8, -1)])
def test_negative_buffer_offsets_and_lengths_are_refused(field, value):
    data = patched(stream_bytes(), 2, lambda m: buffers(m) + 4 + 16 + field, struct.pack("<q", value))
    assert refusal(data) == "negative buffer offset or length"


def test_a_compressed_buffer_whose_prefix_is_past_the_end():
    table = pa.table({"image": [bytes(100_000)]})
    data = stream_bytes([table], compression="zstd")
    batch = walked(data)[1]
    assert refusal(data[:batch[1] + 8 + 200]) == "buffer runs past the end of the file"


def test_kept_reads_the_ranges_then_an_end_of_stream_marker():
    source = io.BytesIO(bytes(range(20)))
    kept = Kept(source, [(0, 3), (5, 5), (10, 14)])
    assert kept.readable()
    assert kept.read() == bytes([0, 1, 2, 10, 11, 12, 13]) + b"\xff\xff\xff\xff\x00\x00\x00\x00"
    small = Kept(io.BytesIO(bytes(range(20))), [(2, 7)])
    assert [small.read(2) for _ in range(8)] == [bytes([2, 3]), bytes([4, 5]), bytes([6]), b"\xff\xff",
                                                 b"\xff\xff", b"\x00\x00", b"\x00\x00", b""]


def test_kept_refuses_a_range_past_the_end_of_the_file():
    kept = Kept(io.BytesIO(bytes(10)), [(0, 4), (8, 20)])
    with pytest.raises(BadMessage, match="^message body runs past the end of the file$"):
        kept.read()


def test_kept_messages_are_what_pyarrow_reads():
    data = stream_bytes()
    messages = walked(data)
    reader = pa.ipc.open_stream(Kept(io.BytesIO(data), [(m[1], m[2]) for i, m in enumerate(messages) if i != 2]))
    assert reader.read_all().to_pylist() == TABLE.slice(1).to_pylist()
