"""Which columns of a Parquet/Arrow table hold a sample's image, caption, key and url.

Detection (README "Parquet and Hugging Face datasets"): a column declared as an Image feature in
the `huggingface` schema metadata, else the first usable of IMAGE_NAMES, else the first struct
with binary `bytes`; `--image-column` / `--caption-column` / `--key-column` override. Problems
are UserErrors of one line naming the file, its columns and the flag that fixes it; column names
come from the file, so they are shown quoted with control characters escaped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vlmaudit.errors import UserError

IMAGE_NAMES = ("image", "jpg", "jpeg", "png", "webp", "img")
CAPTION_NAMES = ("caption", "text", "TEXT")
KEY_NAMES = ("key", "id")
URL_NAMES = ("url", "URL")
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
