"""Parquet and Arrow files as shards: one file is one shard, one row is one sample.

Rows are read a few at a time (`ParquetFile.iter_batches`, only the needed columns, unbuffered
column chunks), so memory stays flat however large the row groups are. Each row becomes the same
`Sample` the tar reader yields, so decoding, scoring, report rows, statuses and resume are shared.

Understood layouts: img2dataset `--output_format parquet` (binary `jpg`, `caption`, `url`, `key`,
`status`, `error_message`, ...), the `datasets` Image feature (struct `{bytes, path}`, from
`to_parquet`, the hub's Parquet files, or `save_to_disk`'s Arrow IPC `.arrow` files), and any
table with a binary image column. Paths inside an Image struct are never opened (untrusted data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

from vlmaudit.errors import UserError
from vlmaudit.scan.samples import Sample, cap_caption
from vlmaudit.scan.tario import TarEnd

TABLE_SUFFIXES = (".parquet", ".arrow")
IMAGE_NAMES = ("image", "jpg", "jpeg", "png", "webp", "img")
CAPTION_NAMES = ("caption", "text", "TEXT")
KEY_NAMES = ("key", "id")
URL_NAMES = ("url", "URL")
READ_ROWS = 16  # rows per record batch: memory is about this many images, whatever the row groups
MAX_HF_METADATA = 1 << 20


@dataclass(frozen=True)
class ColumnChoice:
    """--image-column / --caption-column / --key-column (None: detect)."""

    image: str | None = None
    caption: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Columns:
    """The columns a table's samples are read from; image_kind is 'binary' or 'struct'."""

    image: str
    image_kind: str
    caption: str | None = None
    key: str | None = None
    url: str | None = None
    status: str | None = None  # img2dataset's status / error_message pair

    def names(self) -> list[str]:
        extra = [self.caption, self.key, self.url] + ([self.status, "error_message"] if self.status else [])
        return list(dict.fromkeys([self.image] + [c for c in extra if c]))


def is_table_shard(url: str) -> bool:
    return not url.startswith("pipe:") and url.lower().endswith(TABLE_SUFFIXES)


# ---- which columns -------------------------------------------------------------------------------

def resolve_columns(schema, where: str, choice: ColumnChoice) -> Columns:
    """The columns to read, or a UserError of one line naming the file, its columns and the flags."""
    image = _image_column(schema, where, choice.image)
    kind = "binary" if _is_binary(schema.field(image).type) else "struct"
    caption = _typed_column(schema, where, choice.caption, CAPTION_NAMES, _is_string, "a string", "--caption-column")
    key = _typed_column(schema, where, choice.key, KEY_NAMES, _is_key_type, "a string or integer", "--key-column")
    url = next((n for n in URL_NAMES if n in schema.names and _is_string(schema.field(n).type)), None)
    status = "status" if _looks_like_img2dataset(schema) else None
    return Columns(image, kind, caption, key, url, status)


def _image_column(schema, where: str, chosen: str | None) -> str:
    if chosen is not None:
        _require(schema, where, chosen, "--image-column")
        if not _is_image_type(schema.field(chosen).type):
            raise UserError(f"{where}: --image-column {_show(chosen)} is {schema.field(chosen).type}, not image bytes "
                            "(binary, or a struct {bytes, path})")
        return chosen
    named = _hf_image_features(schema) + [n for n in IMAGE_NAMES if n in schema.names]
    usable = [n for n in named if _is_image_type(schema.field(n).type)]
    usable += [f.name for f in schema if _is_image_struct(f.type)]
    if usable:
        return usable[0]
    if named:
        raise UserError(f"{where}: column {_show(named[0])} is {schema.field(named[0]).type}, not image bytes (binary, "
                        f"or a struct {{bytes, path}}); choose the image column with --image-column ({_listing(schema)})")
    raise UserError(_no_image_message(schema, where))


def _no_image_message(schema, where: str) -> str:
    urls = [n for n in schema.names if n.lower() in ("url", "image_url", "img_url")]
    if urls:
        return (f"{where}: no image bytes, only image URLs (column {_show(urls[0])}): this is metadata (LAION-style); "
                "download the images first, e.g. with img2dataset (--output_format parquet or webdataset), "
                "and scan what it writes (for img2dataset's metadata beside a .tar, scan the .tar)")
    return (f"{where}: no image column ({_listing(schema)}); choose one with --image-column "
            "(and --caption-column / --key-column)")


def _typed_column(schema, where, chosen, names, accept, expected: str, flag: str) -> str | None:
    if chosen is not None:
        _require(schema, where, chosen, flag)
    found = chosen or next((n for n in names if n in schema.names), None)
    if found is not None and not accept(schema.field(found).type):
        raise UserError(f"{where}: column {_show(found)} is {schema.field(found).type}, expected {expected} column; "
                        f"choose another with {flag} ({_listing(schema)})")
    return found


def _require(schema, where: str, name: str, flag: str) -> None:
    if name not in schema.names:
        raise UserError(f"{where}: {flag} {_show(name)}: no such column ({_listing(schema)})")


def _hf_image_features(schema) -> list[str]:
    """Columns the `datasets` library declared as Image features in the schema metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw or len(raw) > MAX_HF_METADATA:
        return []
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError, RecursionError):
        return []
    if not isinstance(features, dict):
        return []
    return [n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image" and n in schema.names]


def _looks_like_img2dataset(schema) -> bool:
    return all(n in schema.names and _is_string(schema.field(n).type) for n in ("status", "error_message"))


def _is_binary(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _is_string(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_key_type(t) -> bool:
    import pyarrow as pa

    return _is_string(t) or pa.types.is_integer(t)


def _is_image_struct(t) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and _is_binary(t.field("bytes").type)


def _is_image_type(t) -> bool:
    return _is_binary(t) or _is_image_struct(t)


def _show(name: str) -> str:
    return repr(name[:80])  # column names come from the file: quoted, control characters escaped


def _listing(schema, limit: int = 20) -> str:
    shown = ", ".join(f"{_show(f.name)} {f.type}" for f in list(schema)[:limit])
    more = f", ... ({len(schema.names)} in all)" if len(schema.names) > limit else ""
    return f"its columns: {shown}{more}" if shown else "it has no columns"


# ---- reading --------------------------------------------------------------------------------------

def open_table(stream, url: str):
    """(schema, batches) of a Parquet or Arrow IPC (file or stream) table; batches(columns)
    yields record batches of at most READ_ROWS rows."""
    if url.lower().endswith(".arrow"):
        return _open_ipc(stream)
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(stream, buffer_size=1 << 20, pre_buffer=False)
    return parquet.schema_arrow, lambda columns: parquet.iter_batches(READ_ROWS, columns=columns, use_threads=False)


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


def read_schema(url: str):
    """The table's schema (reads only the footer / first message); errors propagate."""
    from vlmaudit.scan.tario import open_stream

    stream = open_stream(url)
    try:
        return open_table(stream, url)[0]
    finally:
        stream.close()


def iter_table_images(url: str, choice: ColumnChoice = ColumnChoice(), max_bytes: int = 64 << 20):
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
        schema, batches = open_table(stream, url)
    except table_errors() as exc:
        end.status, end.error = "unreadable", f"cannot read as {_format(url)}: {type(exc).__name__}: {exc}"
        return
    try:
        columns = resolve_columns(schema, _file_name(url), choice)
    except UserError as exc:
        end.status, end.error = "failed", str(exc)
        return
    index, stem = 0, _stem(url)
    try:
        for batch in batches(columns.names()):
            for row in batch.to_pylist():
                yield row_sample(row, index, columns, stem, max_bytes, max_caption_chars)
                index += 1
    except table_errors() as exc:
        end.status = "truncated" if index else "unreadable"
        end.error = f"{_format(url)} damaged after {index} rows: {type(exc).__name__}: {exc}"


def row_sample(row: dict, index: int, columns: Columns, stem: str, max_bytes: int, max_caption_chars: int) -> Sample:
    key = row.get(columns.key) if columns.key else None
    sample = Sample(key=f"{stem}/{index}" if key is None else str(key), index=index,
                    url=row.get(columns.url) if columns.url else None,
                    caption=row.get(columns.caption) if columns.caption else None)
    sample.image, sample.status, sample.error = _image(row, columns, max_bytes)
    if sample.image is not None:
        sample.image_ext = "jpg" if columns.image == "jpg" else None
    return cap_caption(sample, max_caption_chars)


def _image(row: dict, columns: Columns, max_bytes: int):
    """(bytes, preset status, error) of a row's image."""
    if columns.status and row.get(columns.status) not in ("success", None):
        message = str(row.get("error_message") or "")[:300]
        return None, "missing_image", f"img2dataset status {row[columns.status]!r}: {message}".rstrip(": ")
    value = row.get(columns.image)
    if columns.image_kind == "struct" and value is not None:
        if value.get("bytes") is None and value.get("path"):
            return None, "missing_image", "the image struct has a path but no bytes (paths in data are never opened)"
        value = value.get("bytes")
    if value is None:
        return None, "missing_image", f"image column {columns.image!r} is null"
    if len(value) > max_bytes:
        return None, "too_large", f"image is {len(value)} bytes, over the {max_bytes}-byte limit"
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
        if "://" in url:
            if remote_seen:
                continue
            remote_seen = True
        try:
            schema = read_schema(url)
        except Exception:  # damaged or unreachable: the scan records it on the shard
            continue
        resolve_columns(schema, url, choice)
