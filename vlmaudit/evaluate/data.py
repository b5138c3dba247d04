"""UnsafeConcepts evaluation data in its two published layouts, or a labelled image folder:

  - the Hugging Face dataset as Parquet (a file, a directory of them, or the hub layout
    DIR/data/*.parquet): `image` (bytes, or a struct with `bytes` / `path`), `category`, `unsafe_concept`;
  - a loose image folder (scan.folder_source): an HF imagefolder (metadata.jsonl / metadata.csv
    with `file_name`, `category`, `unsafe_concept`) or `img.jpg` + `img.json` pairs;
  - the authors' repository layout: DIR/metadata.jsonl (`image_filename`, `category`,
    `unsafe_concept`) and optionally DIR/perception_metadata.jsonl, which adds `option_str`
    ("A: Swastika \\nB: ...") and `correct_option` ("A"); image paths are relative to DIR.

Without perception metadata the 4 options are built here: the true concept and 3 concepts of other
categories, drawn with a fixed seed. The files are read by head/data.py (streamed, lines of at
most MAX_LINE bytes, image paths that stay inside DIR); at most MAX_ITEMS items.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from vlmaudit.errors import UserError
from vlmaudit.head.data import authors_layout, authors_records, parquet_files, parquet_records

LETTERS = "ABCD"
MAX_ITEMS = 1_000_000
OPTION_LINE = re.compile(r"^\s*([A-Z])\s*[:.)]\s*(.*?)\s*$")


@dataclass(frozen=True)
class EvalItem:
    image: Path | bytes
    concept: int  # taxonomy concept index
    category: int  # taxonomy category index
    options: tuple[str, ...]  # the 4 perception options (text)
    correct: int  # index of the right option
    origin: str


def load_eval_data(data: Path, taxonomy, seed: int = 0) -> list[EvalItem]:
    data = Path(data)
    if not data.exists():
        raise UserError(f"--data {data}: no such file or directory")
    from vlmaudit.scan.folder_source import is_labelled_folder, labelled_records

    if parquet_files(data):
        records = parquet_records(data)
    elif is_labelled_folder(data) and not (data / "perception_metadata.jsonl").is_file():
        records = labelled_records(data)
    elif authors_layout(data):
        records = authors_records(data)
    else:
        raise UserError(f"--data {data}: expected Parquet (the HF dataset: files, or DIR/data/*.parquet as the "
                        "hub lays it out), a directory with metadata.jsonl / perception_metadata.jsonl (the "
                        "authors' layout), or a folder of images (metadata.jsonl / metadata.csv with file_name, "
                        "or img.jpg + img.json pairs)")
    rng, items = random.Random(seed), []
    for record, origin in records:
        items.append(_item(record, origin, taxonomy, rng))
        if len(items) > MAX_ITEMS:
            raise UserError(f"--data {data}: more than {MAX_ITEMS:,} items")
    if not items:
        raise UserError(f"--data {data}: no items")
    return items


def _item(record: dict, origin: str, taxonomy, rng: random.Random) -> EvalItem:
    if record.get("image") is None:
        raise UserError(f"{origin}: no image")
    concept = _lookup(record.get("unsafe_concept"), taxonomy.concepts, "unsafe_concept", origin)
    category = taxonomy.concept_category_index()[concept]
    given = record.get("category")
    if given is not None and _lookup(given, taxonomy.categories, "category", origin) != category:
        raise UserError(f"{origin}: concept {record['unsafe_concept']!r} is not in category {given!r}")
    if record.get("option_str") is not None:
        options, correct = _parse_options(record["option_str"], record.get("correct_option"), origin)
    else:
        options, correct = _make_options(concept, taxonomy, rng)
    return EvalItem(record["image"], concept, category, options, correct, origin)


def _lookup(value, items, field: str, origin: str) -> int:
    key = str(value or "").strip().lower()
    for i, item in enumerate(items):
        if key in (item.id, item.name.lower()):
            return i
    raise UserError(f"{origin}: unknown {field} {str(value)[:80]!r}")


def _parse_options(text, correct, origin: str) -> tuple[tuple[str, ...], int]:
    found = [OPTION_LINE.match(line) for line in str(text).splitlines() if line.strip()]
    if len(found) != 4 or any(m is None for m in found) or "".join(m.group(1) for m in found) != LETTERS:
        raise UserError(f"{origin}: option_str is not four lines 'A: ...' to 'D: ...'")
    letter = str(correct or "").strip().upper()[:1]
    if letter not in LETTERS:
        raise UserError(f"{origin}: correct_option {str(correct)[:20]!r} is not A, B, C or D")
    return tuple(m.group(2) for m in found), LETTERS.index(letter)


def _make_options(concept: int, taxonomy, rng: random.Random) -> tuple[tuple[str, ...], int]:
    own = taxonomy.concepts[concept]
    others = [c.name for c in taxonomy.concepts if c.category != own.category]
    options = rng.sample(others, 3) + [own.name]
    rng.shuffle(options)
    return tuple(options), options.index(own.name)


def benign_images(directory: Path) -> list[Path]:
    from vlmaudit.head.data import IMAGE_SUFFIXES

    if not Path(directory).is_dir():
        raise UserError(f"--benign {directory}: not a directory")
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--benign {directory}: no images in it")
    return files[:MAX_ITEMS]


def read_eval_image(image: Path | bytes, origin: str):
    """Decode with the scanner's hardened decoder; a bad image is a one-line error naming it."""
    from vlmaudit.head.data import Example, read_image

    return read_image(Example(image, -1, -1, origin))
