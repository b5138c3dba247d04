"""Arrow IPC messages walked before any body is read: the declared size of every record batch
(its buffers, decompressed sizes for LZ4/ZSTD-compressed bodies) from the message metadata
(flatbuffers), so the table reader refuses a batch over the budget without reading it, and reads
the others through a stream that leaves the refused ones out."""

from __future__ import annotations

import io
import struct

MAX_MESSAGES = 10_000_000
MAX_METADATA = 16 << 20
SCHEMA, DICTIONARY, RECORD_BATCH = 1, 2, 3


class BadMessage(ValueError):
    """An IPC message whose metadata cannot be parsed: the file is damaged."""


class _Table:
    """One flatbuffers table inside `data`."""

    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos
        self.vtable = pos - self._unpack("<i", pos)
        self.vsize = self._unpack("<H", self.vtable)

    def _unpack(self, fmt: str, at: int):
        if at < 0 or at + struct.calcsize(fmt) > len(self.data):
            raise BadMessage("message metadata points outside itself")
        return struct.unpack_from(fmt, self.data, at)[0]

    def _slot(self, index: int) -> int:
        at = 4 + 2 * index
        return self._unpack("<H", self.vtable + at) if at < self.vsize else 0

    def scalar(self, index: int, fmt: str, default=0):
        slot = self._slot(index)
        return self._unpack(fmt, self.pos + slot) if slot else default

    def target(self, index: int) -> int | None:
        slot = self._slot(index)
        return self.pos + slot + self._unpack("<I", self.pos + slot) if slot else None

    def table(self, index: int):
        at = self.target(index)
        return None if at is None else _Table(self.data, at)

    def structs(self, index: int, size: int) -> list[int]:
        """Positions of the items of a vector of structs of `size` bytes."""
        at = self.target(index)
        if at is None:
            return []
        count = self._unpack("<I", at)
        if at + 4 + count * size > len(self.data):
            raise BadMessage("message metadata vector runs past its end")
        return [at + 4 + i * size for i in range(count)]


def _declared(stream, body_start: int, batch: _Table) -> int:
    """Bytes the batch takes once read: its buffers, at their decompressed size when compressed
    (each compressed buffer starts with its uncompressed length, -1 for "stored as is")."""
    compressed = batch.target(3) is not None
    total = 0
    for at in batch.structs(2, 16):
        offset, length = struct.unpack_from("<qq", batch.data, at)
        if offset < 0 or length < 0:
            raise BadMessage("negative buffer offset or length")
        if compressed and length >= 8:
            stream.seek(body_start + offset)
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise BadMessage("buffer runs past the end of the file")
            size = struct.unpack("<q", prefix)[0]
            total += length - 8 if size < 0 else size
        else:
            total += length
    return total


def walk(stream, start: int):
    """[(kind, message start, message end, rows, declared bytes)] of every message from `start` to
    the end-of-stream marker or the end of the file."""
    out, position = [], start
    while len(out) < MAX_MESSAGES:
        stream.seek(position)
        head = stream.read(8)
        if len(head) < 4:
            break
        first = struct.unpack_from("<I", head)[0]
        if first == 0xFFFFFFFF:
            if len(head) < 8:
                break
            size, header = struct.unpack_from("<i", head, 4)[0], 8
        else:
            size, header = struct.unpack_from("<i", head)[0], 4  # pre-1.0 format: no continuation marker
        if size == 0:
            break
        if not 0 < size <= MAX_METADATA:
            raise BadMessage(f"message metadata of {size} bytes")
        stream.seek(position + header)
        data = stream.read(size)
        if len(data) < size:
            raise BadMessage("message metadata runs past the end of the file")
        message = _Table(data, struct.unpack_from("<I", data)[0])
        kind, body = message.scalar(1, "<B"), message.scalar(3, "<q")
        if body < 0:
            raise BadMessage("negative message body length")
        body_start = position + header + size
        rows = declared = 0
        inner = message.table(2)
        if kind == DICTIONARY and inner is not None:
            inner = inner.table(1)
        if kind in (DICTIONARY, RECORD_BATCH) and inner is not None:
            rows, declared = inner.scalar(0, "<q"), _declared(stream, body_start, inner)
        out.append((kind, position, body_start + body, rows, declared))
        position = body_start + body
    return out


class Kept(io.RawIOBase):
    """A read-only stream of some byte ranges of `stream`, one after the other (the kept messages,
    then an end-of-stream marker): what pa.ipc.open_stream reads."""

    def __init__(self, stream, ranges: list[tuple[int, int]]):
        self.stream, self.ranges, self.index, self.offset = stream, ranges, 0, 0
        self.tail = b"\xff\xff\xff\xff\x00\x00\x00\x00"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.index < len(self.ranges):
            start, end = self.ranges[self.index]
            if start + self.offset >= end:
                self.index, self.offset = self.index + 1, 0
                continue
            self.stream.seek(start + self.offset)
            data = self.stream.read(min(len(buffer), end - start - self.offset))
            if not data:
                raise BadMessage("message body runs past the end of the file")
            buffer[: len(data)] = data
            self.offset += len(data)
            return len(data)
        data, self.tail = self.tail[: len(buffer)], self.tail[len(buffer):]
        buffer[: len(data)] = data
        return len(data)
