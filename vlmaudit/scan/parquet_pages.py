"""Parquet page headers read before any page is decompressed: the declared (uncompressed) size
and value count of every page of a column chunk, from the Thrift compact-encoded headers that
precede each page. Lets the table reader refuse a row group whose pages would not fit the budget
(a 64 KB file can declare a 1.9 GB cell) before pyarrow inflates it."""

from __future__ import annotations

HEADER_READ = 64 << 10  # a page header with its statistics (capped at a few KiB by writers)
MAX_PAGES = 1_000_000


class BadHeader(ValueError):
    """A page header that cannot be parsed: the file is damaged."""


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise BadHeader("page header runs past its bytes")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise BadHeader("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 32:
            raise BadHeader("page header nested too deep")
        if kind in (1, 2):
            return
        if kind == 3:
            self.byte()
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.pos += 8
        elif kind == 8:
            length = self.varint()  # read before pos is: `self.pos += self.varint()` loses the advance
            self.pos += length
        elif kind in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self.skip(head & 0x0F, depth + 1)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == 12:
            self.struct(lambda fid, k: self.skip(k, depth + 1))
        else:
            raise BadHeader(f"unknown Thrift type {kind}")

    def struct(self, field) -> None:
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, kind = head >> 4, head & 0x0F
            fid = last + delta if delta else self.zigzag()
            field(fid, kind)
            last = fid


def parse_header(data: bytes) -> tuple[int, int, int, int]:
    """(header length, uncompressed page size, compressed page size, values in the page)."""
    reader, out = _Reader(data), {"values": 0}

    def nested(fid, kind):
        if fid == 1 and kind == 5:
            out["values"] = reader.zigzag()
        else:
            reader.skip(kind)

    def top(fid, kind):
        if fid in (2, 3) and kind == 5:
            out[fid] = reader.zigzag()
        elif fid in (5, 7, 8) and kind == 12:
            reader.struct(nested)
        else:
            reader.skip(kind)

    reader.struct(top)
    if 2 not in out or 3 not in out or out[2] < 0 or out[3] < 0:
        raise BadHeader("page header without its sizes")
    return reader.pos, out[2], out[3], out["values"]


def page_sizes(stream, chunk) -> list[tuple[int, int]]:
    """[(uncompressed size, values)] of every page (dictionary page included) of one column chunk
    (a pyarrow ColumnChunkMetaData), reading only the headers."""
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page and chunk.dictionary_page_offset else chunk.data_page_offset
    end, pages = start + chunk.total_compressed_size, []
    position = start
    while position < end:
        if len(pages) >= MAX_PAGES:
            raise BadHeader(f"over {MAX_PAGES} pages in one column chunk")
        stream.seek(position)
        length, uncompressed, compressed, values = parse_header(stream.read(HEADER_READ))
        pages.append((uncompressed, values))
        position += length + compressed
    return pages


def oversized_pages(stream, metadata, group: int, columns: list[str], limit: int) -> dict[str, int]:
    """{top-level column: declared uncompressed bytes of its largest page} for the columns of one
    row group that hold a page over `limit`. A column chunk declaring at most `limit` bytes in all
    is not walked (no page of it can be larger)."""
    found = {}
    row_group = metadata.row_group(group)
    for i in range(row_group.num_columns):
        chunk = row_group.column(i)
        name = chunk.path_in_schema.split(".", 1)[0]
        if name not in columns or chunk.total_uncompressed_size <= limit:
            continue
        size = max((u for u, _ in page_sizes(stream, chunk)), default=0)
        if size > limit:
            found[name] = max(size, found.get(name, 0))
    return found
