"""Labelled images in the UnsafeConcepts layouts, read once for `train-head`, `eval` and
`distill`: image + category + unsafe_concept (names as the authors spell them, or our ids), from

  - Parquet (a file, a directory of them, or the Hugging Face hub layout DIR/data/*.parquet),
    e.g. the HF dataset: `image` is bytes or a struct with `bytes` / `path`;
  - the authors' repository layout: DIR/metadata.jsonl (`image_filename`, `category`,
    `unsafe_concept`) and optionally DIR/perception_metadata.jsonl (adds the eval's options);
  - a directory with one CSV or JSONL file (`image` or `file_name` column: a path relative to it);
  - a loose image folder (scan.folder_source): a Hugging Face imagefolder (metadata.jsonl /
    metadata.csv with `file_name` plus the label columns) or `img.jpg` + `img.json` pairs (labels
    in the JSON); paths never leave the folder;

plus, for train-head, optionally `--safe-images DIR` (every image below DIR is safe). A `label`
column of "safe"/"unsafe" (or 0/1, 1 = unsafe) is honoured when present.

Untrusted input: Parquet is streamed in small batches, text lines are at most MAX_LINE bytes, and
every image path must stay inside the data directory.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vlmaudit.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SAFE = -1
MAX_LINE = 1 << 16
BATCH_ROWS = 64  # Parquet rows decoded at a time (rows hold whole images)
AUTHORS_FILES = ("perception_metadata.jsonl", "metadata.jsonl")


@dataclass(frozen=True)
class Example:
    image: Path | bytes
    concept: int  # index into the taxonomy's concepts, or SAFE
    category: int  # index into the taxonomy's categories, or SAFE
    origin: str  # for error messages: file and row


def load_examples(data: Path, taxonomy, safe_images: Path | None = None) -> list[Example]:
    data = Path(data)
    if not data.exists():
        raise UserError(f"--data {data}: no such file or directory")
    from vlmaudit.scan.folder_source import is_labelled_folder, labelled_records

    if parquet_files(data):
        records = parquet_records(data)
    elif is_labelled_folder(data):
        records = labelled_records(data)
    else:
        records = _table_records(data)
    examples = [_example(record, origin, taxonomy) for record, origin in records]
    if safe_images is not None:
        examples += safe_examples(Path(safe_images))
    if not examples:
        raise UserError(f"--data {data}: no labelled images found")
    return examples


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of --data: the file itself, the directory's *.parquet, or, as the Hugging
    Face hub lays a dataset out, DIR/data/*.parquet; empty when --data is none of these."""
    if path.is_file():
        return [path] if path.suffix == ".parquet" else []
    if not path.is_dir():
        return []
    return sorted(path.glob("*.parquet")) or sorted((path / "data").glob("*.parquet"))


def parquet_records(path: Path):
    """(row dict, origin) per Parquet row, a few rows in memory at a time; an image given by path
    is resolved against its file's directory and must stay inside --data."""
    import pyarrow.parquet as pq

    root = path if path.is_dir() else path.parent
    for file in parquet_files(path):
        i = 0
        for batch in pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            for row in batch.to_pylist():
                origin = f"{file.name} row {i}"
                image = row.get("image")
                if isinstance(image, dict):
                    image = image.get("bytes") or (inside(root, file.parent, image["path"], origin)
                                                   if image.get("path") else None)
                elif isinstance(image, str):  # a path column: confined like every other layout's paths
                    image = inside(root, file.parent, image, origin)
                yield {**row, "image": image}, origin
                i += 1


def authors_layout(root: Path) -> bool:
    return root.is_dir() and any((root / name).is_file() for name in AUTHORS_FILES)


def authors_records(root: Path):
    """(row dict, origin) per line of the authors' perception_metadata.jsonl (else metadata.jsonl)."""
    name = next(n for n in AUTHORS_FILES if (root / n).is_file())
    for row, origin in _jsonl_rows(root / name):
        if not isinstance(row.get("image_filename"), str):
            raise UserError(f"{origin}: no image_filename")
        yield {**row, "image": inside(root, root, row["image_filename"], origin)}, origin


def _jsonl_rows(path: Path):
    with open(path, encoding="utf-8") as handle:
        number = 0
        while line := handle.readline(MAX_LINE + 1):
            number += 1
            origin = f"{path.name} line {number}"
            if len(line) > MAX_LINE:
                raise UserError(f"{origin}: longer than {MAX_LINE} characters")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UserError(f"{origin}: not JSON") from None
            if not isinstance(row, dict):
                raise UserError(f"{origin}: not a JSON object")
            yield row, origin


def inside(root: Path, base: Path, relative, origin: str) -> Path:
    """BASE / RELATIVE, refused unless it stays inside ROOT (the --data directory)."""
    relative = str(relative)
    path = (base / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(root.resolve()):
        raise UserError(f"{origin}: image path {relative[:100]!r} leaves the data directory")
    return path


def _table_records(path: Path):
    if not path.is_dir():
        raise UserError(f"--data {path}: expected a Parquet file, a directory of Parquet files, or a directory "
                        "with a CSV/JSONL file of labels")
    tables = sorted(path.glob("*.csv")) + sorted(path.glob("*.jsonl"))
    if len(tables) != 1:
        raise UserError(f"--data {path}: expected exactly one .csv or .jsonl label file, found {len(tables)}")
    table = tables[0]
    rows = _csv_rows(table) if table.suffix == ".csv" else _jsonl_rows(table)
    for row, origin in rows:  # "labels.csv row N" / "labels.jsonl line N"
        name = row.get("image") or row.get("file_name") or row.get("image_filename")
        if not name:
            raise UserError(f"{origin}: no image / file_name column")
        yield {**row, "image": inside(path, path, name, origin)}, origin


def _csv_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        try:
            for i, row in enumerate(csv.DictReader(handle)):
                yield row, f"{path.name} row {i + 1}"
        except csv.Error as exc:
            raise UserError(f"{path.name}: not a readable CSV file ({exc})") from None


def _example(record: dict, origin: str, taxonomy) -> Example:
    if record.get("image") is None:
        raise UserError(f"{origin}: no image")
    if _is_safe_label(record.get("label")) or not record.get("unsafe_concept"):
        return Example(record["image"], SAFE, SAFE, origin)
    concept = _concept_index(str(record["unsafe_concept"]), taxonomy, origin)
    category = taxonomy.concept_category_index()[concept]
    given = record.get("category")
    if given and _category_index(str(given), taxonomy, origin) != category:
        raise UserError(f"{origin}: concept {record['unsafe_concept']!r} is not in category {given!r}")
    return Example(record["image"], concept, category, origin)


def _is_safe_label(label) -> bool:
    return label is not None and str(label).strip().lower() in ("safe", "0", "false")


def _concept_index(value: str, taxonomy, origin: str) -> int:
    return _index_of(value, taxonomy.concepts, "unsafe_concept", origin)


def _category_index(value: str, taxonomy, origin: str) -> int:
    return _index_of(value, taxonomy.categories, "category", origin)


def _index_of(value: str, items, field: str, origin: str) -> int:
    """Position of the item whose id or name (case-insensitive) is VALUE."""
    key = value.strip().lower()
    for i, item in enumerate(items):
        if key in (item.id, item.name.lower()):
            return i
    raise UserError(f"{origin}: unknown {field} {value!r} (not a {field} name or id of the taxonomy)")


def safe_examples(directory: Path) -> list[Example]:
    if not directory.is_dir():
        raise UserError(f"--safe-images {directory}: not a directory")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--safe-images {directory}: no images in it")
    return [Example(path, SAFE, SAFE, str(path)) for path in files]


MAX_IMAGE_FILE_BYTES = 64 << 20


def _read_file(path: Path) -> bytes:
    """A regular image file of at most MAX_IMAGE_FILE_BYTES (never a device, FIFO or directory)."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            raise OSError(f"{path.name} is {info.st_size} bytes, over the {MAX_IMAGE_FILE_BYTES >> 20} MiB limit")
        return handle.read(MAX_IMAGE_FILE_BYTES + 1)


def read_image(example: Example, max_pixels: int = 50_000_000):
    """Decode with the scanner's hardened decoder (format allow-list, pixel limit, EXIF, modes)."""
    from vlmaudit.scan.imaging import ImageDecodeError, ImageTooLarge, decode_image

    try:
        data = example.image if isinstance(example.image, bytes) else _read_file(Path(example.image))
        return decode_image(data, max_pixels, None)[0]
    except (OSError, ImageDecodeError, ImageTooLarge) as exc:
        raise UserError(f"{example.origin}: cannot read image: {exc}") from None
