"""hf://datasets/ORG/NAME[/PATH] -> the dataset's Parquet/Arrow files as shard URLs.

Listed through huggingface_hub's fsspec filesystem (HfFileSystem), which the scan then reads the
files through; private datasets use the user's token (HF_TOKEN or `huggingface-cli login`), which
is never printed or recorded. --config keeps the files under that directory (the hub's
`refs/convert/parquet` layout is CONFIG/SPLIT/NNNN.parquet); --split keeps the files whose path
names the split the way `datasets` recognises splits in file names (`data/train-00000-of-00002.parquet`,
`train/0000.parquet`, `mnist-test.parquet`): the split word between non-word characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vlmaudit.errors import ShardSpecError

TABLE_SUFFIXES = (".parquet", ".arrow")
SEPARATORS = "-._ 0-9"  # datasets.data_files.NON_WORDS_CHARS


@dataclass(frozen=True)
class HubSelection:
    split: str | None = None
    config: str | None = None
    revision: str | None = None


def parse_hub_url(url: str) -> tuple[str, str | None, str]:
    """hf://datasets/ORG/NAME[@REV][/PATH] -> (ORG/NAME, REV or None, PATH)."""
    parts = url[len("hf://datasets/"):].strip("/").split("/", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise ShardSpecError(f"{url}: expected hf://datasets/ORG/NAME[/PATH]")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", revision or None, parts[2] if len(parts) > 2 else ""


def list_hub_dataset(url: str, selection: HubSelection) -> list[str]:
    repo, url_revision, sub = parse_hub_url(url)
    revision = selection.revision or url_revision
    root = f"datasets/{repo}" + (f"@{_quote_revision(revision)}" if revision else "")
    files = _find(url, f"{root}/{sub}".rstrip("/"))
    relative = [f[len(root) + 1:] for f in files if f.startswith(root + "/") and f.lower().endswith(TABLE_SUFFIXES)]
    if not relative:
        raise ShardSpecError(f"{url}: no .parquet/.arrow files in this dataset" + (f" at revision {revision}" if revision else ""))
    chosen = select_files(relative, selection.split, selection.config, url)
    return [f"hf://{root}/{path}" for path in sorted(chosen)]


def select_files(paths: list[str], split: str | None, config: str | None, url: str = "") -> list[str]:
    """The paths of one config (first directory) and one split (named in the path)."""
    if config:
        paths, before = [p for p in paths if p.split("/", 1)[0] == config], paths
        if not paths:
            raise ShardSpecError(f"{url}: no files for --config {config!r} (directories: {_dirs(before)})")
    if split:
        pattern = re.compile(rf"(^|[{SEPARATORS}/]){re.escape(split)}([{SEPARATORS}/]|$)")
        paths, before = [p for p in paths if pattern.search(p.rsplit(".", 1)[0])], paths
        if not paths:
            raise ShardSpecError(f"{url}: no files for --split {split!r} (files: {', '.join(before[:5])}"
                                 f"{', ...' if len(before) > 5 else ''})")
    return paths


def _find(url: str, path: str) -> list[str]:
    from huggingface_hub import HfFileSystem

    try:
        fs = HfFileSystem()
        return fs.glob(path) if re.search(r"[*?\[]", path) else fs.find(path)
    except FileNotFoundError:
        raise ShardSpecError(f"{url}: no such dataset or path (or it is private and no token is set)") from None
    except Exception as exc:  # offline, network, auth: one line, never the token
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ShardSpecError(f"{url}: cannot list the dataset: {type(exc).__name__}: {first}".rstrip(": ")) from None


def _quote_revision(revision: str) -> str:
    from urllib.parse import quote

    if re.fullmatch(r"refs/(convert/parquet|pr/\d+)", revision):
        return revision  # HfFileSystem accepts these special refs unquoted
    return quote(revision, safe="")


def _dirs(paths: list[str]) -> str:
    dirs = sorted({p.split("/", 1)[0] for p in paths if "/" in p})
    return ", ".join(dirs[:10]) or "none"
