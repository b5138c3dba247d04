"""Parquet and Arrow files as shards: one file is one shard, one row is one sample.

Rows are read a few at a time (`ParquetFile.iter_batches`, only the needed columns, column chunks
read through a 1 MiB buffer instead of whole), so memory stays flat however large the row groups are. Each row becomes the same
`Sample` the tar reader yields, so decoding, scoring, report rows, statuses and resume are shared.

Understood layouts: img2dataset `--output_format parquet` (binary `jpg`, `caption`, `url`, `key`,
`status`, `error_message`, ...), the `datasets` Image feature (struct `{bytes, path}`, from
`to_parquet`, the hub's Parquet files, or `save_to_disk`'s Arrow IPC `.arrow` files), and any
table with a binary image column. Paths inside an Image struct are never opened (untrusted data).
"""

from __future__ import annotations

from typing import Iterator

from vlmaudit.errors import UserError
from vlmaudit.scan.samples import KEPT_KEY_CHARS, MAX_NAME_CHARS, Sample, cap_caption
from vlmaudit.scan.table_columns import ColumnChoice, Columns, resolve_columns
from vlmaudit.scan.tario import TarEnd
from vlmaudit.storage.location import is_url
from vlmaudit.schema import SampleStatus, ShardStatus

TABLE_SUFFIXES = (".parquet", ".arrow")
READ_ROWS = 16  # rows per record batch: memory is about this many images, whatever the row groups


def is_table_shard(url: str) -> bool:
    return not url.startswith("pipe:") and url.lower().endswith(TABLE_SUFFIXES)


class Oversized:
    """Rows of a row group or record batch that are not read: its metadata declares more bytes
    than the budget. `known` holds the columns that fit (keys, URLs, ...), or None."""

    def __init__(self, rows: int, why: str, known=None):
        self.num_rows, self.why, self.known = rows, why, known

    def to_pylist(self) -> list[dict]:
        return self.known.to_pylist() if self.known is not None else [{} for _ in range(self.num_rows)]

    def error(self) -> str:
        return f"not read: {self.why}"


def page_limit(max_bytes: int) -> int:
    """The largest page a table reader decompresses: one image at the budget, plus room."""
    return max_bytes + (1 << 20)


def open_table(stream, url: str, max_bytes: int | None = None):
    """(schema, batches) of a Parquet or Arrow IPC (file or stream) table; batches(columns)
    yields record batches of at most READ_ROWS rows. With `max_bytes`, a Parquet row group whose
    page headers declare a page over page_limit(max_bytes) comes as one Oversized instead (its
    big columns never decompressed); an Arrow batch whose body is over it is refused."""
    if url.lower().endswith(".arrow"):
        return _open_ipc(stream) if max_bytes is None else _open_ipc_budgeted(stream, page_limit(max_bytes))
    import pyarrow.parquet as pq

    from vlmaudit.scan.parquet_pages import oversized_pages

    parquet = pq.ParquetFile(stream, buffer_size=1 << 20, pre_buffer=False)

    def batches(columns):  # row group by row group: damage in one loses no row of the groups before it
        for group in range(parquet.num_row_groups):
            big = {} if max_bytes is None else oversized_pages(stream, parquet.metadata, group, columns,
                                                               page_limit(max_bytes))
            if big:
                yield _oversized(parquet, group, columns, big, page_limit(max_bytes))
                continue
            yield from parquet.iter_batches(READ_ROWS, row_groups=[group], columns=columns, use_threads=False)

    return parquet.schema_arrow, batches


def _oversized(parquet, group: int, columns: list[str], big: dict[str, int], limit: int) -> Oversized:
    rows = parquet.metadata.row_group(group).num_rows
    small = [c for c in columns if c not in big]
    known = parquet.read_row_group(group, columns=small, use_threads=False) if small else None
    name, size = max(big.items(), key=lambda item: item[1])
    return Oversized(rows, f"its row group's column {name!r} has a page of {size} bytes uncompressed, "
                           f"over the {limit}-byte budget", known)


def _open_ipc(stream):
    import pyarrow as pa

    magic = stream.read(6)
    stream.seek(0)
    if magic == b"ARROW1":
        reader = pa.ipc.open_file(stream)
        whole = lambda: (reader.get_batch(i) for i in range(reader.num_record_batches))  # noqa: E731
    else:
        reader = pa.ipc.open_stream(stream)
        whole = lambda: iter(reader)  # noqa: E731

    def batches(columns):
        for batch in whole():
            batch = batch.select(columns)
            for start in range(0, batch.num_rows, READ_ROWS):
                yield batch.slice(start, READ_ROWS)

    return reader.schema, batches


def _open_ipc_budgeted(stream, limit: int):
    """_open_ipc, but every message's declared size is read first (arrow_messages.walk) and a record
    batch over `limit` is never read: it comes as one Oversized, the others through a stream of the
    kept messages."""
    import pyarrow as pa

    from vlmaudit.scan.arrow_messages import DICTIONARY, RECORD_BATCH, Kept, walk

    start = 8 if stream.read(6) == b"ARROW1" else 0
    messages = walk(stream, start)
    for kind, _, _, _, declared in messages:
        if kind == DICTIONARY and declared > limit:
            raise ValueError(f"a dictionary batch declares {declared} bytes, over the {limit}-byte budget")
    big = {i for i, m in enumerate(messages) if m[0] == RECORD_BATCH and m[4] > limit}
    reader = pa.ipc.open_stream(Kept(stream, [(m[1], m[2]) for i, m in enumerate(messages) if i not in big]))

    def batches(columns):
        kept = iter(reader)
        for i, (kind, _, _, rows, declared) in enumerate(messages):
            if kind != RECORD_BATCH:
                continue
            if i in big:
                yield Oversized(rows, f"its record batch declares {declared} bytes, over the {limit}-byte budget")
                continue
            batch = next(kept, None)
            if batch is None:
                raise ValueError("the Arrow stream ends before its declared record batches")
            batch = batch.select(columns)
            for first in range(0, batch.num_rows, READ_ROWS):
                yield batch.slice(first, READ_ROWS)

    return reader.schema, batches


def read_schema(url: str):
    """The table's schema (reads only the footer / first message); errors propagate."""
    from vlmaudit.scan.tario import open_stream

    stream = open_stream(url)
    try:
        return open_table(stream, url)[0]
    finally:
        stream.close()


def iter_table_images(url: str, choice: ColumnChoice = ColumnChoice(), max_bytes: int = 64 << 20):  # noqa: B008 (frozen)
    """(key, image bytes) of every row that has an image: the report gallery's thumbnails."""
    from vlmaudit.scan.tario import open_stream

    stream = open_stream(url)
    try:
        for sample in iter_table_samples(stream, url, TarEnd(), choice, max_bytes, 0):
            if sample.image is not None:
                yield sample.key, sample.image
    finally:
        stream.close()


def iter_table_samples(stream, url: str, end: TarEnd, choice: ColumnChoice, max_bytes: int,
                       max_caption_chars: int) -> Iterator[Sample]:
    """Yield one Sample per row, in order. A file that cannot be read is `unreadable`; damage after
    some rows is `truncated`; a file without usable columns `failed` (the message says why)."""
    try:
        schema, batches = open_table(stream, url, max_bytes)
    except table_errors() as exc:
        end.status, end.error = "unreadable", f"cannot read as {_format(url)}: {type(exc).__name__}: {exc}"
        return
    try:
        columns = resolve_columns(schema, _file_name(url), choice)
    except UserError as exc:
        end.status, end.error = ShardStatus.FAILED, str(exc)
        return
    index, stem = 0, _stem(url)
    try:
        for batch in batches(columns.names()):
            for row in batch.to_pylist():
                sample = row_sample(row, index, columns, stem, max_bytes, max_caption_chars)
                if isinstance(batch, Oversized):
                    sample.image, sample.status, sample.error = None, SampleStatus.TOO_LARGE, batch.error()
                yield sample
                index += 1
    except table_errors() as exc:
        end.status = ShardStatus.TRUNCATED if index else "unreadable"
        end.error = f"{_format(url)} damaged after {index} rows: {type(exc).__name__}: {exc}"


def row_sample(row: dict, index: int, columns: Columns, stem: str, max_bytes: int, max_caption_chars: int) -> Sample:
    key = row.get(columns.key) if columns.key else None
    key = f"{stem}/{index}" if key is None else str(key)
    url = row.get(columns.url) if columns.url else None
    url = None if url is None else str(url)
    sample = Sample(key=_capped_key(key), index=index, url=url if url is None or len(url) <= MAX_NAME_CHARS
                    else url[:MAX_NAME_CHARS], caption=row.get(columns.caption) if columns.caption else None)
    if url is not None and len(url) > MAX_NAME_CHARS:
        sample.notes.append("url_capped")
    sample.image, sample.status, sample.error = _image(row, columns, max_bytes)
    if len(key) > MAX_NAME_CHARS:  # like an over-long tar member name: a row of its own, not scored
        sample.image, sample.status = None, SampleStatus.BAD_NAME
        sample.error = f"key of {len(key)} characters, over the {MAX_NAME_CHARS}-character limit"
    if sample.image is not None:
        sample.image_ext = "jpg" if columns.image == "jpg" else None
    return cap_caption(sample, max_caption_chars)


def _capped_key(key: str) -> str:
    """An over-long key keeps its first KEPT_KEY_CHARS characters plus a hash of the whole, as
    tar member names do, so distinct keys stay distinct."""
    if len(key) <= MAX_NAME_CHARS:
        return key
    import hashlib

    return f"{key[:KEPT_KEY_CHARS]}…{hashlib.sha1(key.encode('utf-8', 'replace')).hexdigest()[:16]}"


def _image(row: dict, columns: Columns, max_bytes: int):
    """(bytes, preset status, error) of a row's image."""
    if columns.status and row.get(columns.status) not in ("success", None):
        message = str(row.get("error_message") or "")[:300]
        return None, SampleStatus.MISSING_IMAGE, f"img2dataset status {row[columns.status]!r}: {message}".rstrip(": ")
    value = row.get(columns.image)
    if columns.image_kind == "struct" and value is not None:
        if value.get("bytes") is None and value.get("path"):
            return None, SampleStatus.MISSING_IMAGE, "the image struct has a path but no bytes (paths in data are never opened)"
        value = value.get("bytes")
    if value is None:
        return None, SampleStatus.MISSING_IMAGE, f"image column {columns.image!r} is null"
    if len(value) > max_bytes:
        return None, SampleStatus.TOO_LARGE, f"image is {len(value)} bytes, over the {max_bytes}-byte limit"
    return value, None, None


def table_errors() -> tuple:
    import pyarrow as pa

    return (OSError, ValueError, EOFError, pa.ArrowException)


def _file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _stem(url: str) -> str:
    name = _file_name(url)
    for suffix in TABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _format(url: str) -> str:
    return "Arrow IPC" if url.lower().endswith(".arrow") else "Parquet"


def check_table_shards(urls: list[str], choice: ColumnChoice) -> None:
    """Before loading a model: every local Parquet/Arrow shard (and the first remote one) must have
    usable columns, else one UserError line. Files that cannot be read are left to the scan, where
    they become failed shards like any damaged shard."""
    remote_seen = False
    for url in filter(is_table_shard, urls):
        if is_url(url):
            if remote_seen:
                continue
            remote_seen = True
        try:
            schema = read_schema(url)
        except Exception:  # damaged or unreachable: the scan records it on the shard
            continue
        resolve_columns(schema, url, choice)
