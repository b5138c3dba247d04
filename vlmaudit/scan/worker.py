"""DataLoader worker side: shard -> samples -> decoded, preprocessed batches (no model here).

Each worker owns whole shards (round-robin), so rows of one shard arrive in tar order and a
shard's last batch carries how its tar ended. Batches never mix shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vlmaudit.scan.folder_source import is_folder_shard, iter_folder_samples
from vlmaudit.scan.gpu_decode import defer_jpeg
from vlmaudit.scan.hashing import ImageHashes, byte_digests, hashing_draft, pdq_hash
from vlmaudit.scan.imaging import ImageDecodeError, ImageTooLarge, decode_image
from vlmaudit.scan.parquet_source import is_table_shard, iter_table_samples
from vlmaudit.scan.table_columns import ColumnChoice
from vlmaudit.scan.rows import RowMeta
from vlmaudit.scan.samples import iter_samples
from vlmaudit.scan.tario import TarEnd, open_stream
from vlmaudit.schema import SampleStatus, ShardStatus

EXTREME_ASPECT = 20.0
PERMANENT_OPEN_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass
class ScanSettings:
    batch_size: int = 32
    workers: int = 2
    max_pixels: int = 50_000_000
    max_member_bytes: int = 64 << 20
    max_caption_chars: int = 4096
    retries: int = 2
    retry_wait: float = 1.0
    columns: ColumnChoice = field(default_factory=ColumnChoice)  # Parquet/Arrow shards only
    overwrite: bool = False  # rescan a shard that another writer finished while this run was going
    decode: str = "cpu"  # resolved --decode: gpu leaves plain JPEGs to the main process (gpu_decode.py)
    hashes: bool = True  # SHA-256 / MD5 of the bytes and PDQ of the pixels (scan/hashing.py)


@dataclass
class ShardJob:
    url: str
    name: str
    takeover: tuple[str, int] | None = None  # (host, pid) of a writer known dead: its claim is taken over


@dataclass
class PreparedBatch:
    job: ShardJob
    metas: list[RowMeta]
    inputs: dict
    prep_seconds: float
    final: bool = False
    end: TarEnd | None = None
    extra: dict = field(default_factory=dict)

    def pin_memory(self):
        """Called by the DataLoader's pin-memory thread on CUDA: page-locked input tensors make
        the host-to-device copy asynchronous."""
        self.inputs = _pinned(self.inputs)
        return self


def _pinned(value):
    if isinstance(value, dict):
        return {k: _pinned(v) for k, v in value.items()}
    return value.pin_memory() if hasattr(value, "pin_memory") else value


def prepare_shard(job: ShardJob, preprocessor, settings: ScanSettings, select=None):
    """Yield the shard's batches; the last one has final=True and the TarEnd. Whatever goes
    wrong inside one shard ends that shard (truncated or failed), never the run. `select`
    (sample -> bool) keeps only some samples (the cascade's second read)."""
    end, pending, yielded = TarEnd(), [], 0
    try:
        for sample in _samples_with_retries(job, end, settings):
            if select is not None and not select(sample):
                continue
            pending.append(sample)
            if len(pending) >= settings.batch_size:
                yield prepare_batch(job, pending, preprocessor, settings)
                yielded, pending = yielded + len(pending), []
    except Exception as exc:  # a bug or an exotic error: record it on the shard
        end.status = ShardStatus.TRUNCATED if yielded or pending else ShardStatus.FAILED
        end.error = f"unexpected error: {type(exc).__name__}: {exc}"
    yield prepare_batch(job, pending, preprocessor, settings, final=True, end=end)


def _samples_with_retries(job: ShardJob, end: TarEnd, settings: ScanSettings):
    """Retry opening (404, permissions, unreadable archive); damage after the first sample is not retried."""
    if is_folder_shard(job.url):  # files of a local folder, opened one by one: nothing to retry
        yield from iter_folder_samples(job.url, end, settings.max_member_bytes, settings.max_caption_chars)
        return
    for attempt in range(settings.retries + 1):
        end.__init__()
        try:
            stream = open_stream(job.url)
        except Exception as exc:  # fsspec/network errors come in many types
            end.status, end.error = ShardStatus.FAILED, f"cannot open: {type(exc).__name__}: {exc}"
            if _is_local(job.url) and isinstance(exc, PERMANENT_OPEN_ERRORS):
                end.permanent = True
                return
        else:
            yielded = 0
            try:
                for sample in _read_samples(job.url, stream, end, settings):
                    yielded += 1
                    yield sample
            finally:
                _close_quietly(stream)
            if yielded or end.status != "unreadable":
                return
            end.status = ShardStatus.FAILED
            if _is_local(job.url):  # the bytes were read: they are not a tar, and will not become one
                end.permanent = True
                return
        if attempt < settings.retries:
            time.sleep(settings.retry_wait * (2 ** attempt))


def _read_samples(url: str, stream, end: TarEnd, settings: ScanSettings):
    """The samples of a tar, or of a Parquet/Arrow table (one row, one sample)."""
    if is_table_shard(url):
        return iter_table_samples(stream, url, end, settings.columns, settings.max_member_bytes,
                                  settings.max_caption_chars)
    return iter_samples(stream, end, settings.max_member_bytes, settings.max_caption_chars)


def _is_local(url: str) -> bool:
    from vlmaudit.storage.location import is_url

    return not url.startswith("pipe:") and not is_url(url)


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except Exception:
        pass


def prepare_batch(job, samples, preprocessor, settings, final=False, end=None) -> PreparedBatch:
    started = time.perf_counter()
    metas, images, captions, jpegs = [], [], [], []
    for sample in samples:
        meta = _deferred(sample, settings, len(metas), jpegs) or _decode_sample(sample, preprocessor, settings, images)
        if meta.status != SampleStatus.DUPLICATE_KEY and sample.caption is not None:
            meta.caption_row = len(captions)
            captions.append(sample.caption)
        metas.append(meta)
    inputs = _prepare_inputs(preprocessor, metas, images, captions)
    extra = {"jpeg": jpegs} if jpegs else {}
    return PreparedBatch(job, metas, inputs, time.perf_counter() - started, final, end, extra)


def _deferred(sample, settings, position: int, jpegs: list) -> RowMeta | None:
    """--decode gpu: a plain JPEG within budget is left for the GPU (its bytes go in jpegs)."""
    if settings.decode != "gpu" or sample.status is not None or not sample.image:
        return None
    size = defer_jpeg(sample.image, settings.max_pixels, EXTREME_ASPECT)
    if size is None:
        return None
    jpegs.append((position, sample.image))
    meta = RowMeta(sample.key, sample.index, sample.url, sample.caption, SampleStatus.OK, None, *size, notes=list(sample.notes))
    if settings.hashes:  # PDQ needs the pixels, which only the GPU decodes here: exact digests only
        meta.hashes = ImageHashes(*byte_digests(sample.image))
    return meta


def _decode_sample(sample, preprocessor, settings, images: list) -> RowMeta:
    meta = RowMeta(sample.key, sample.index, sample.url, sample.caption, sample.status or SampleStatus.OK,
                   sample.error, notes=list(sample.notes))
    if sample.status is not None:
        return meta
    if sample.image is None:
        meta.status, meta.error = SampleStatus.MISSING_IMAGE, "sample has no image member"
        return meta
    if settings.hashes:
        meta.hashes = ImageHashes(*byte_digests(sample.image))
    try:
        draft = hashing_draft(preprocessor.draft_size, settings.hashes)
        image, (meta.width, meta.height) = decode_image(sample.image, settings.max_pixels, draft)
    except ImageTooLarge as exc:
        meta.status, meta.error = SampleStatus.TOO_LARGE, str(exc)
        return meta
    except ImageDecodeError as exc:
        meta.status, meta.error = SampleStatus.DECODE_ERROR, str(exc)
        return meta
    if settings.hashes:
        meta.hashes.pdq, meta.hashes.pdq_quality = pdq_hash(image)
    meta.image_row = len(images)
    images.append(_guard_aspect(image, meta))
    return meta


def _guard_aspect(image, meta: RowMeta):
    """Center-crop extreme aspect ratios so resizing the short side cannot explode memory."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= EXTREME_ASPECT * short:
        return image
    meta.notes.append("extreme_aspect_cropped")
    keep = int(EXTREME_ASPECT * short)
    left, top = ((width - keep) // 2, 0) if width > height else (0, (height - keep) // 2)
    return image.crop((left, top, left + min(keep, width), top + min(keep, height)))


def _prepare_inputs(preprocessor, metas, images, captions) -> dict:
    try:
        return preprocessor.prepare(images, captions)
    except Exception:
        return _prepare_one_by_one(preprocessor, metas, images, captions)


def _prepare_one_by_one(preprocessor, metas, images, captions) -> dict:
    """A batch failed to preprocess: isolate the bad images, keep the rest."""
    good = []
    for meta in metas:
        if meta.image_row < 0:
            continue
        try:
            preprocessor.prepare([images[meta.image_row]], [])
            meta.image_row, good = len(good), good + [images[meta.image_row]]
        except Exception as exc:
            meta.status, meta.error, meta.image_row = SampleStatus.DECODE_ERROR, f"preprocessing failed: {type(exc).__name__}: {exc}", -1
    return preprocessor.prepare(good, captions)
