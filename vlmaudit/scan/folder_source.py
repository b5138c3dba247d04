"""Loose image folders as shards: `img.jpg` + `img.txt` / `img.json` pairs (any depth), or a
Hugging Face imagefolder (`metadata.jsonl` / `metadata.csv` at the top with a `file_name` column).

The folder's samples, sorted by key (the path relative to the folder without its extension), are
cut into shards of `--folder-shard-size` samples; shard i is the URL `folder:ROOT#i:SIZE`, named
`FOLDERNAME-0000i`: the same folder and size give the same names, so a scan resumes. Keep the
folder and the size unchanged between runs (add new images in another folder).

Untrusted input: nothing outside the folder is opened. The walk does not follow symlinks; a
symlinked file or a metadata `file_name` that is absolute, has `..`, or resolves outside the
folder becomes a `bad_name` row, never read. Files are opened with O_NOFOLLOW | O_NONBLOCK and
must be regular files within `--max-member-bytes`; metadata lines and files have budgets too.
Each sample becomes the same `Sample` the tar reader yields (statuses, notes, captions shared).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from vlmaudit.errors import ShardSpecError, UserError
from vlmaudit.scan.samples import IMAGE_EXTS, TEXT_EXTS, Sample, finish_sample, split_name

PREFIX = "folder:"
DEFAULT_SHARD_SIZE = 10_000
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
MAX_FILES = 20_000_000  # samples listed in one folder
MAX_METADATA_BYTES = 4 << 30
MAX_LINE = 1 << 20
CAPTION_FIELDS = ("caption", "text", "TEXT", "alt", "prompt")


@dataclass
class Entry:
    """One sample of a folder: its key, member files by extension (relative paths), the metadata
    row (imagefolder), and a problem that makes it a `bad_name` row."""

    key: str
    files: dict[str, str] = field(default_factory=dict)
    record: dict | None = None
    problem: str | None = None
    extra: list[str] = field(default_factory=list)


def is_folder_shard(url: str) -> bool:
    return url.startswith(PREFIX)


def folder_shard_url(root: str, index: int, size: int, keys: list[str]) -> str:
    """`folder:ROOT#INDEX:SIZE:DIGEST`; DIGEST (of the shard's keys) tells a resumed scan whether
    the shard still holds the same files."""
    digest = hashlib.sha256("\n".join(keys).encode("utf-8", "replace")).hexdigest()[:12]
    return f"{PREFIX}{root}#{index}:{size}:{digest}"


def parse_folder_shard(url: str) -> tuple[str, int, int]:
    root, _, where = url[len(PREFIX):].rpartition("#")
    index, size = where.split(":")[:2]
    return root, int(index), int(size)


def changed_since_scanned(recorded, url: str) -> str | None:
    """Why a done folder shard must not be skipped on resume (other files, another size), or None."""
    if not is_folder_shard(url) or recorded == url:
        return None
    return (f"{folder_shard_name(url)} was scanned from other files or another --folder-shard-size "
            f"(recorded {str(recorded)[-40:]!r}, now {url[-40:]!r})")


def folder_shard_name(url: str) -> str:
    root, index, _ = parse_folder_shard(url)
    return f"{Path(root).name or 'folder'}-{index:05d}"


def is_labelled_folder(path: Path) -> bool:
    """`train-head` / `eval --data`: an imagefolder (metadata.jsonl / .csv with file_name) or image +
    .json pairs with no other label table at the top."""
    if not path.is_dir():
        return False
    metadata = [path / name for name in METADATA_FILES if (path / name).is_file()]
    if metadata:  # else a label table of another layout (image / image_filename columns)
        return all(_names_file_name(m) for m in metadata)
    return not any(path.glob("*.csv")) and not any(path.glob("*.jsonl")) and is_image_folder(path)


def _names_file_name(metadata: Path) -> bool:
    with open(metadata, encoding="utf-8", errors="replace") as handle:
        return "file_name" in handle.readline(MAX_LINE)


def is_image_folder(path: Path) -> bool:
    """A directory with imagefolder metadata at its top, or with at least one image file below it."""
    if any((path / name).is_file() for name in METADATA_FILES):
        return True
    for _, _, files in os.walk(path):
        if any(split_name(f)[1] in IMAGE_EXTS for f in files):
            return True
    return False


def expand_folder(path: str, size: int) -> list[str]:
    """The shard URLs of a loose image folder."""
    if size < 1:
        raise ShardSpecError(f"--folder-shard-size must be at least 1, got {size}")
    root = os.path.abspath(path)
    list_folder.cache_clear()  # list afresh at each expansion; workers reuse (or redo) this listing
    entries = list_folder(root)
    if not entries:
        raise ShardSpecError(f"{path}: no images and no metadata rows in this folder")
    return [folder_shard_url(root, i, size, [e.key for e in entries[i * size:(i + 1) * size]])
            for i in range((len(entries) + size - 1) // size)]


def folder_shard_samples(url: str) -> int:
    root, index, size = parse_folder_shard(url)
    total = len(list_folder(root))
    return max(0, min(size, total - index * size))


@functools.lru_cache(maxsize=4)
def list_folder(root: str) -> tuple[Entry, ...]:
    """Every sample of the folder, sorted by key (one listing per process and folder)."""
    metadata = next((root_path for root_path in (Path(root) / n for n in METADATA_FILES) if root_path.is_file()), None)
    entries: dict[str, Entry] = {}
    for relative in _walk(root):
        key, ext = split_name(relative)
        if os.path.isdir(os.path.join(root, relative)):  # only symlinked directories are listed
            entries[relative] = Entry(relative, problem=f"{relative[:200]!r} is a symlinked directory: not followed")
            continue
        if ext not in IMAGE_EXTS + TEXT_EXTS or (metadata is not None and relative in METADATA_FILES):
            continue
        entry = entries.setdefault(key, Entry(key))
        if ext in IMAGE_EXTS and any(e in IMAGE_EXTS for e in entry.files):
            entry.extra.append(f"extra_member:.{ext}")
            continue
        entry.files[ext] = relative
    if metadata is not None:
        _add_metadata(root, metadata, entries)
    if len(entries) > MAX_FILES:
        raise ShardSpecError(f"{root}: more than {MAX_FILES:,} samples in one folder; split it")
    return tuple(entries[k] for k in sorted(entries))


def _walk(root: str):
    """Relative paths (posix) of the files below root; symlinks are listed (and refused later),
    never followed; an unreadable subdirectory is an error naming it."""
    errors = []
    for folder, dirs, files in os.walk(root, onerror=errors.append, followlinks=False):
        dirs.sort()
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in sorted(files) + links:
            yield os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
    if errors:
        first = errors[0]
        raise ShardSpecError(f"{root}: cannot read {first.filename} ({first.strerror or first}); fix its permissions")


def _add_metadata(root: str, metadata: Path, entries: dict[str, Entry]) -> None:
    for number, row in _metadata_rows(metadata):
        origin = f"{metadata.name} row {number}"
        name = row.get("file_name")
        if not isinstance(name, str) or not name:
            raise UserError(f"{metadata}: {origin} has no file_name (Hugging Face imagefolder layout)")
        key, ext = split_name(name.replace("\\", "/"))
        problem = outside(root, name)
        key = key if problem is None else f"{metadata.name}/{number}"
        entry = entries.setdefault(key, Entry(key))
        if entry.record is not None:
            entry.problem = f"{origin}: file_name {name[:200]!r} listed twice"
            continue
        entry.record, entry.problem = row, problem
        if problem is None and ext in IMAGE_EXTS and not any(e in IMAGE_EXTS for e in entry.files):
            entry.files[ext] = name  # listed but absent: a missing_image row


def _metadata_rows(path: Path):
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise UserError(f"{path}: over the {MAX_METADATA_BYTES >> 30} GiB metadata limit")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if path.suffix == ".csv":
            csv.field_size_limit(MAX_LINE)
            try:
                yield from ((i + 1, row) for i, row in enumerate(csv.DictReader(handle)))
            except csv.Error as exc:
                raise UserError(f"{path}: not a valid CSV ({exc})") from None
            return
        number = 0
        while line := handle.readline(MAX_LINE + 1):
            number += 1
            if len(line) > MAX_LINE:
                raise UserError(f"{path} line {number}: longer than {MAX_LINE} characters")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise UserError(f"{path} line {number}: not JSON") from None
            if not isinstance(row, dict):
                raise UserError(f"{path} line {number}: not a JSON object")
            yield number, row


def outside(root: str, relative: str) -> str | None:
    """Why RELATIVE must not be opened (absolute, `..`, or resolving outside ROOT), or None."""
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":") or ".." in parts:
        return f"path {relative[:200]!r} leaves the folder: not opened"
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([real_root, target]) != real_root:
        return f"path {relative[:200]!r} resolves outside the folder (a symlink): not opened"
    return None


def read_inside(root: str, relative: str, max_bytes: int) -> bytes:
    """A regular file below ROOT, at most MAX_BYTES: no symlinks (last component: O_NOFOLLOW;
    others: resolved and checked), no FIFOs or devices (O_NONBLOCK, then fstat)."""
    problem = outside(root, relative)
    if problem:
        raise PermissionError(problem)
    if os.path.islink(os.path.join(root, relative)):
        raise PermissionError(f"{relative[:200]!r} is a symlink: not opened")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(os.path.join(root, relative), flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{relative[:200]!r} is not a regular file: not opened")
        if info.st_size > max_bytes:
            raise OverflowError(f"{relative[:200]!r} is {info.st_size} bytes, over the {max_bytes}-byte limit")
        data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise OverflowError(f"{relative[:200]!r} grew over the {max_bytes}-byte limit while read")
        return data


def iter_folder_samples(url: str, end, max_bytes: int, max_caption_chars: int):
    """The Samples of one folder shard, in key order; its index is the position in the shard."""
    root, index, size = parse_folder_shard(url)
    if not os.path.isdir(root):
        end.status, end.error, end.permanent = "failed", f"cannot open: {root} is not a directory", True
        return
    entries = list_folder(root)[index * size:(index + 1) * size]
    if folder_shard_url(root, index, size, [e.key for e in entries]) != url:
        end.status, end.permanent = "failed", True
        end.error = "the folder's files changed since the shard list was made: scan it again"
        return
    for position, entry in enumerate(entries):
        yield _sample(root, entry, position, max_bytes, max_caption_chars)


def _sample(root: str, entry: Entry, position: int, max_bytes: int, max_caption_chars: int) -> Sample:
    sample = Sample(key=entry.key, index=position, notes=list(entry.extra))
    if entry.problem:  # no file opened; a metadata row's caption is still data
        sample.status, sample.error = "bad_name", entry.problem
        if entry.record is not None:
            _apply_record(sample, entry.record, max_caption_chars)
        return sample
    for ext, relative in entry.files.items():
        try:
            data = read_inside(root, relative, max_bytes)
        except FileNotFoundError:
            sample.notes.append(f"missing_file:.{ext}")
            continue
        except OverflowError as exc:
            sample.notes.append(f"oversized_member:.{ext}")
            if ext in IMAGE_EXTS:
                sample.status, sample.error = "too_large", str(exc)
            continue
        except OSError as exc:
            if ext in IMAGE_EXTS:
                sample.status, sample.error = "bad_name", str(exc)
            sample.notes.append(f"refused_file:.{ext}")
            continue
        if ext in IMAGE_EXTS:
            sample.image, sample.image_ext = data, ext
        else:
            sample._members[ext] = data
    if sample.status == "bad_name":
        sample.image = None
    finish_sample(sample, max_caption_chars)
    if entry.record is not None:
        _apply_record(sample, entry.record, max_caption_chars)
    return sample


def _apply_record(sample: Sample, record: dict, max_caption_chars: int) -> None:
    caption = next((record[f] for f in CAPTION_FIELDS if record.get(f) is not None), None)
    if caption is not None:
        sample.caption = caption if isinstance(caption, str) else None
        if not isinstance(caption, str):
            sample.notes.append("metadata_caption_not_a_string")
        elif len(caption) > max_caption_chars:
            sample.caption = caption[:max_caption_chars]
            sample.notes.append("caption_capped")
    url = record.get("url")
    if isinstance(url, str):
        sample.url = url


def labelled_records(root: Path, max_bytes: int = 64 << 20):
    """(record with `image` = the image's path, origin) of every sample of a labelled folder, for
    `train-head` and `eval`: labels come from the metadata row (imagefolder) or the pair's JSON.
    Paths are checked as the scan checks them (inside the folder, no symlink, a regular file
    within MAX_BYTES); images are read later, one at a time."""
    root_text = os.path.abspath(root)
    has_metadata = any((Path(root_text) / n).is_file() for n in METADATA_FILES)
    for entry in list_folder(root_text):
        origin = f"{root.name}/{entry.key}"
        if entry.problem:
            raise UserError(f"{origin}: {entry.problem}")
        if has_metadata and entry.record is None:
            continue  # an imagefolder's labels are its metadata rows; an unlisted image has none
        image = next((rel for ext, rel in entry.files.items() if ext in IMAGE_EXTS), None)
        record = dict(entry.record or {})
        if "json" in entry.files:
            record = {**_json_fields(root_text, entry.files["json"], origin), **record}
        if image is None:
            if record:
                raise UserError(f"{origin}: no image file")
            continue  # a caption without an image: nothing to learn from
        yield {**record, "image": _checked(root_text, image, max_bytes, origin)}, origin


def _checked(root: str, relative: str, max_bytes: int, origin: str) -> Path:
    path = os.path.join(root, relative)
    problem = outside(root, relative) or (f"{relative[:200]!r} is a symlink: not opened" if os.path.islink(path) else None)
    if problem is None:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise UserError(f"{origin}: cannot read image: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            problem = f"{relative[:200]!r} is not a regular file: not opened"
        elif info.st_size > max_bytes:
            problem = f"{relative[:200]!r} is {info.st_size} bytes, over the {max_bytes}-byte limit"
    if problem:
        raise UserError(f"{origin}: {problem}")
    return Path(path)


def _json_fields(root: str, relative: str, origin: str) -> dict:
    try:
        value = json.load(io.BytesIO(read_inside(root, relative, MAX_LINE)))
    except (OSError, OverflowError, ValueError, RecursionError) as exc:
        raise UserError(f"{origin}.json: cannot read ({type(exc).__name__})") from None
    return value if isinstance(value, dict) else {}
