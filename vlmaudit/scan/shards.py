"""Shard specs -> an ordered list of shard URLs; deterministic partitions and output names."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path

from vlmaudit.errors import ShardSpecError
from vlmaudit.storage.location import is_url

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SHARD_SUFFIXES = TAR_SUFFIXES + (".parquet", ".arrow")
GLOB_CHARS = re.compile(r"[*?\[]")


def is_remote(spec: str) -> bool:
    return spec.startswith("pipe:") or is_url(spec)


def expand_shard_specs(specs: list[str], hub=None, folder_shard_size: int | None = None) -> list[str]:
    """Expand braces, globs, directories and hf://datasets/ names (`hub`: a scan.hfhub.HubSelection);
    a directory of loose images becomes shards of `folder_shard_size` samples (scan.folder_source);
    fail on anything that names no shard."""
    from braceexpand import braceexpand

    shards: list[str] = []
    for spec in specs:
        if spec.startswith("hf://datasets/"):
            from vlmaudit.scan.hfhub import HubSelection, list_hub_dataset

            shards.extend(list_hub_dataset(spec, hub or HubSelection()))
            continue
        for item in braceexpand(spec):
            shards.extend(_expand_one(item, folder_shard_size))
    if not shards:
        raise ShardSpecError("no shards given")
    return list(dict.fromkeys(shards))


def _expand_one(item: str, folder_shard_size: int | None = None) -> list[str]:
    from vlmaudit.scan.folder_source import DEFAULT_SHARD_SIZE, expand_folder, is_folder_shard, is_image_folder

    if item.startswith("pipe:") or is_folder_shard(item):
        return [item]
    if is_url(item):
        return _expand_remote_glob(item) if GLOB_CHARS.search(item) or item.endswith("/") else [item]
    if GLOB_CHARS.search(item):
        found = _without_sidecars(sorted(p for p in glob.glob(item) if _is_shard_file(Path(p))))
        if not found:
            raise ShardSpecError(f"{item}: no shard files match this pattern")
        return found
    path = Path(item)
    if path.is_dir():
        found = _without_sidecars(_walk_shards(item))
        if not found and is_image_folder(path):
            return expand_folder(item, folder_shard_size or DEFAULT_SHARD_SIZE)
        if not found:
            raise ShardSpecError(f"{item}: directory holds no .tar/.tar.gz/.tgz/.parquet/.arrow shards "
                                 "and no images (jpg, png, webp, ...)")
        return found
    if not path.exists():
        raise ShardSpecError(f"{item}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise ShardSpecError(f"{item}: not readable (permission denied)")
    return [item]


def _walk_shards(top: str) -> list[str]:
    """Every shard file under `top`, recursively; a subdirectory that cannot be read is an error
    (naming it), not a silent gap in the scan."""
    found, errors = [], []
    for folder, _, files in os.walk(top, onerror=errors.append):
        found += [str(Path(folder) / f) for f in files if _is_shard_file(Path(folder) / f)]
    if errors:
        first = errors[0]
        more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
        raise ShardSpecError(f"{top}: cannot read {first.filename} ({first.strerror or first}){more}; "
                             "fix its permissions or name the shards to scan")
    return sorted(found)


def _is_shard_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SHARD_SUFFIXES)


def _without_sidecars(found: list[str]) -> list[str]:
    """Drop NAME.parquet where NAME.tar is listed too: img2dataset's webdataset output writes a
    metadata Parquet (no image bytes) beside every tar."""
    tars = {_tar_stem(f) for f in found if f.lower().endswith(TAR_SUFFIXES)}
    return [f for f in found if not (f.lower().endswith(".parquet") and f[: -len(".parquet")] in tars)]


def _tar_stem(path: str) -> str:
    return next(path[: -len(s)] for s in TAR_SUFFIXES if path.lower().endswith(s))


def _expand_remote_glob(url: str) -> list[str]:
    """A glob, or a URL ending in / (a prefix listed recursively), on any fsspec filesystem."""
    from vlmaudit.storage.location import filesystem, redact

    fs, path = filesystem(url)
    try:
        paths = fs.find(path) if url.endswith("/") else fs.glob(path)
    except OSError as exc:
        raise ShardSpecError(f"{redact(url)}: cannot list ({type(exc).__name__}: {redact(str(exc))})") from None
    found = _without_sidecars(sorted(fs.unstrip_protocol(p) for p in paths if p.lower().endswith(SHARD_SUFFIXES)))
    if not found:
        raise ShardSpecError(f"{redact(url)}: no shard files match this pattern")
    return found


def select_partition(shards: list[str], num_shards: int, index: int) -> list[str]:
    """The deterministic 1/num_shards of the list that job `index` processes (round-robin)."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ShardSpecError(f"--shard-index must be in [0, {num_shards}), got {index}")
    return shards[index::num_shards]


def shard_stem(spec: str) -> str:
    from vlmaudit.scan.folder_source import folder_shard_name, is_folder_shard

    if is_folder_shard(spec):
        return folder_shard_name(spec)
    base = spec.split("|")[-1] if spec.startswith("pipe:") else spec
    name = re.split(r"[/\s]", base.rstrip("/ "))[-1] or "shard"
    for suffix in SHARD_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "shard"
    return name


def output_names(shards: list[str]) -> dict[str, str]:
    """A report name per shard: its stem, plus a short hash of the spec where stems collide."""
    stems = [re.sub(r"[^A-Za-z0-9._-]", "_", shard_stem(s)) for s in shards]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return {
        shard: stem if counts[stem] == 1 else f"{stem}-{hashlib.sha1(shard.encode()).hexdigest()[:8]}"
        for shard, stem in zip(shards, stems)
    }
