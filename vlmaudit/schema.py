"""The Parquet report schema (one file per shard) and the run metadata stored in its footer."""

from __future__ import annotations

import json
from enum import Enum


class _Word(str, Enum):
    """A status word: compares, hashes, prints and serialises as its plain string value."""

    __str__ = str.__str__
    __format__ = str.__format__


class SampleStatus(_Word):
    """A report row's `status`."""

    OK = "ok"
    MISSING_IMAGE = "missing_image"
    DECODE_ERROR = "decode_error"
    TOO_LARGE = "too_large"
    BAD_NAME = "bad_name"
    DUPLICATE_KEY = "duplicate_key"
    INFERENCE_ERROR = "inference_error"


class ShardStatus(_Word):
    """A shard's `status` in NAME.stats.json (SKIPPED only in a scan's result and progress: the
    shard was finished before, or is being written by another scan)."""

    COMPLETE = "complete"
    TRUNCATED = "truncated"
    FAILED = "failed"
    SKIPPED = "skipped"


DONE = (ShardStatus.COMPLETE, ShardStatus.TRUNCATED)  # a shard with a finished report file
RECORDED = (*DONE, ShardStatus.FAILED)  # what a stats file may say

STATUSES = {
    SampleStatus.OK: "image decoded and scored; caption scored when present",
    SampleStatus.MISSING_IMAGE: "no image member; the caption is still scored",
    SampleStatus.DECODE_ERROR: "image bytes could not be decoded (empty, truncated, not an image); caption still scored",
    SampleStatus.TOO_LARGE: "image over --max-pixels (from its header) or member over --max-member-bytes; caption still scored",
    SampleStatus.BAD_NAME: "a member name over the length limit (or behind an oversized tar header); shortened key, not scored",
    SampleStatus.DUPLICATE_KEY: "a key that reappears after other keys (non-adjacent members); kept as its own row, not scored",
    SampleStatus.INFERENCE_ERROR: "the model failed on this sample's batch; not scored",
}
META_KEY = b"vlmaudit"
COVERAGE_KEY = b"vlmaudit.coverage"


def report_schema(taxonomy, meta: dict | None = None):
    import pyarrow as pa

    scores = pa.list_(pa.float32())
    fields = [
        ("shard", pa.string()), ("key", pa.string()), ("sample_index", pa.int32()), ("url", pa.string()),
        ("caption", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("status", pa.string()),
        ("error", pa.string()), ("notes", pa.list_(pa.string())),
        ("image_scores", scores), ("caption_scores", scores),
        ("image_top_concept", pa.string()), ("image_top_score", pa.float32()),
        ("caption_top_concept", pa.string()), ("caption_top_score", pa.float32()),
    ]
    for modality in ("image", "caption"):
        fields += [(category_column(modality, c), pa.float32()) for c in taxonomy.category_ids]
    fields += [
        ("image_flagged", pa.bool_()), ("caption_flagged", pa.bool_()), ("flagged", pa.bool_()),
        ("image_flagged_concepts", pa.list_(pa.string())), ("caption_flagged_concepts", pa.list_(pa.string())),
        ("image_flagged_scores", pa.list_(pa.float32())), ("caption_flagged_scores", pa.list_(pa.float32())),
        ("flagged_categories", pa.list_(pa.string())), ("model", pa.string()), ("taxonomy_version", pa.string()),
        # judges and cascades (null where the backend has no such output)
        ("image_unsafe", pa.float32()), ("caption_unsafe", pa.float32()), ("modalities_disagree", pa.bool_()),
        ("decided_by", pa.string()), ("screen_image_scores", scores), ("screen_caption_scores", scores),
        ("rationale", pa.string()),
        # known-content hashes (null with --no-hashes; PDQ null when the image did not decode)
        ("image_sha256", pa.binary(32)), ("image_md5", pa.binary(16)), ("image_pdq", pa.binary(32)),
        ("image_pdq_quality", pa.int16()),
    ]
    metadata = {META_KEY: json.dumps(meta or {}).encode()}
    if (meta or {}).get("coverage") is not None:
        metadata[COVERAGE_KEY] = json.dumps(meta["coverage"]).encode()  # what the model scores (SHARED.md 3)
    return pa.schema([pa.field(n, t) for n, t in fields], metadata=metadata)


def category_column(modality: str, category_id: str) -> str:
    return f"{modality}_cat_{category_id.replace('-', '_')}"


def report_meta(taxonomy, thresholds, model_info: dict) -> dict:
    """What a reader needs to interpret the score lists without the rules or the model."""
    return {
        "concepts": taxonomy.concept_ids,
        "concept_names": [c.name for c in taxonomy.concepts],
        "concept_categories": [c.category for c in taxonomy.concepts],
        "categories": taxonomy.category_ids,
        "category_names": [c.name for c in taxonomy.categories],
        "taxonomy_version": taxonomy.tag,
        "thresholds": {"image": thresholds.image.tolist(), "caption": thresholds.caption.tolist()},
        "model": model_info,
        "coverage": model_info.get("coverage"),  # None: a backend that declares none (everything scored)
    }


def read_meta(schema) -> dict:
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


MAX_FOOTER_BYTES = 64 << 20


def footer_digest(handle) -> str:
    """SHA-256 of a Parquet file's footer bytes (the metadata, its length and the magic), read from
    an open binary file: a shard summary records it, and a report file rewritten since no longer
    matches. Costs two small reads, no parsing. ValueError when the tail is not a Parquet footer."""
    import hashlib
    import struct

    handle.seek(0, 2)
    size = handle.tell()
    if size < 12:
        raise ValueError("too short for a Parquet file")
    handle.seek(size - 8)
    tail = handle.read(8)
    (length,) = struct.unpack("<I", tail[:4])
    if tail[4:] != b"PAR1" or length > min(MAX_FOOTER_BYTES, size - 12):
        raise ValueError("no Parquet footer at the end")
    handle.seek(size - 8 - length)
    footer = handle.read(length)
    if len(footer) != length:
        raise ValueError("truncated Parquet footer")
    return hashlib.sha256(footer + tail).hexdigest()


def meta_digest(raw: bytes) -> str:
    """SHA-256 of the raw vlmaudit metadata in a footer: files of one run share it."""
    import hashlib

    return hashlib.sha256(raw).hexdigest()

