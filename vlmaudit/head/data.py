"""Labelled images for `vlmaudit train-head`, in the UnsafeConcepts layout: image + category +
unsafe_concept (names as the authors spell them, or our ids), from

  - Parquet (a file or a directory of them), e.g. the HF dataset exported with
    `load_dataset(...).to_parquet(...)`: `image` is bytes or a struct with `bytes` / `path`;
  - a directory with one CSV or JSONL file (`image` or `file_name` column: a path relative to it);
  - a loose image folder (scan.folder_source): a Hugging Face imagefolder (metadata.jsonl /
    metadata.csv with `file_name` plus the label columns) or `img.jpg` + `img.json` pairs (labels
    in the JSON); paths never leave the folder;

plus, optionally, `--safe-images DIR` (every image below DIR is safe). A `label` column of
"safe"/"unsafe" (or 0/1, 1 = unsafe) is honoured when present.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from vlmaudit.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SAFE = -1


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

    if _is_parquet(data):
        records = _parquet_records(data)
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


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")))


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    for file in files:
        for i, row in enumerate(pq.read_table(file).to_pylist()):
            image = row.get("image")
            if isinstance(image, dict):
                image = image.get("bytes") or (file.parent / image["path"] if image.get("path") else None)
            yield {**row, "image": image}, f"{file.name} row {i}"


def _table_records(path: Path):
    if not path.is_dir():
        raise UserError(f"--data {path}: expected a Parquet file, a directory of Parquet files, or a directory "
                        "with a CSV/JSONL file of labels")
    tables = sorted(path.glob("*.csv")) + sorted(path.glob("*.jsonl"))
    if len(tables) != 1:
        raise UserError(f"--data {path}: expected exactly one .csv or .jsonl label file, found {len(tables)}")
    table = tables[0]
    with open(table, newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle) if table.suffix == ".csv" else (json.loads(line) for line in handle if line.strip())
        for i, row in enumerate(rows):
            name = row.get("image") or row.get("file_name") or row.get("image_filename")
            if not name:
                raise UserError(f"{table} row {i + 1}: no image / file_name column")
            yield {**row, "image": path / name}, f"{table.name} row {i + 1}"


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


def read_image(example: Example, max_pixels: int = 50_000_000):
    """Decode with the scanner's hardened decoder (format allow-list, pixel limit, EXIF, modes)."""
    from vlmaudit.scan.imaging import ImageDecodeError, ImageTooLarge, decode_image

    try:
        data = example.image if isinstance(example.image, bytes) else Path(example.image).read_bytes()
        return decode_image(data, max_pixels, None)[0]
    except (OSError, ImageDecodeError, ImageTooLarge) as exc:
        raise UserError(f"{example.origin}: cannot read image: {exc}") from None
