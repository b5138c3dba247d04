"""A directory that is a local path or an fsspec URL (s3://, gs://, az://...): the few operations
the scan's writer, run.json and the report readers need, with credentials kept out of messages."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from vlmaudit.errors import DependencyMissing, UserError

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
MAX_JSON_BYTES = 4 << 20
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


def is_url(where) -> bool:
    """A text that starts with SCHEME:// (s3://, hf://, https://...); a Path is always local."""
    return isinstance(where, str) and bool(URL.match(where))


def open_input(path):
    """A binary file object for a local path or an fsspec URL (s3://...)."""
    if is_url(path):
        fs, inner = filesystem(str(path))
        return fs.open(inner, "rb")
    return open(path, "rb")


def redact(text: str) -> str:
    """Drop user:password@ from a URL (credentials never reach logs, reports or run.json)."""
    return USERINFO.sub(r"\1", text)


def filesystem(url: str):
    """(fsspec filesystem, path without protocol); a missing driver names the extra to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        scheme = url.split("://", 1)[0].lower()
        extra = EXTRAS.get(scheme, scheme)
        raise DependencyMissing(f"{scheme}:// needs an fsspec driver: pip install 'vlmaudit[{extra}]' ({exc})") from None
    except ValueError as exc:
        raise UserError(f"{redact(url)}: {exc}") from None


class Location:
    """Files directly inside one directory, local or remote. Names are plain file names."""

    def __init__(self, where: str | Path):
        text = str(where)
        self.remote = is_url(text)
        self.display = redact(text)
        if self.remote:
            self.fs, root = filesystem(text)
            self.root = root.rstrip("/")
        else:
            self.fs, self.root = None, Path(where)

    def __str__(self) -> str:
        return self.display

    def local(self, name: str) -> Path:
        return self.root / name

    def path(self, name: str) -> str:
        """The path of a file here, as the filesystem (local or fsspec) names it."""
        return str(self.local(name)) if not self.remote else f"{self.root}/{name}"

    def url(self, name: str) -> str:
        """Where a file here is, for messages and for readers: a local path or a redacted URL."""
        return self.path(name) if not self.remote else f"{self.display.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        if not self.remote:
            return self.local(name).is_file()
        return self.fs.isfile(self.path(name))

    def read_text(self, name: str, limit: int = MAX_JSON_BYTES) -> str | None:
        """The file's text, or None when it is missing, unreadable or over `limit` bytes."""
        try:
            with self.open(name, "rb") as handle:
                data = handle.read(limit + 1)
        except (OSError, ValueError):
            return None
        return None if len(data) > limit else data.decode("utf-8", "replace")

    def read_json(self, name: str):
        text = self.read_text(name)
        try:
            return None if text is None else json.loads(text)
        except ValueError:
            return None

    def open(self, name: str, mode: str = "rb"):
        return open(self.local(name), mode) if not self.remote else self.fs.open(self.path(name), mode)

    def names(self, suffix: str = "") -> list[str]:
        """Sorted names of the files here that end with `suffix`, dot-named ones included (exactly what
        a local directory lists: a report shard named `.x` counts on S3 as on disk)."""
        if not self.remote:
            if not self.root.is_dir():
                return []
            found = [p.name for p in self.root.iterdir() if p.is_file()]
        else:
            try:
                found = [PurePosixPath(p).name for p in self.fs.find(self.root, maxdepth=1)]
            except (FileNotFoundError, OSError):
                return []
        return sorted(n for n in found if n.endswith(suffix))

    def is_dir(self) -> bool:
        if not self.remote:
            return self.root.is_dir()
        try:
            return self.fs.isdir(self.root) or bool(self.fs.find(self.root, maxdepth=1))
        except OSError:
            return False

    def remove(self, name: str) -> None:
        try:
            self.local(name).unlink(missing_ok=True) if not self.remote else self.fs.rm_file(self.path(name))
        except FileNotFoundError:
            pass

    def write_json(self, name: str, data: dict) -> None:
        """Remote: one PUT (an object appears whole or not at all). Local: see writer.write_json_atomic."""
        text = json.dumps(data, indent=2, sort_keys=True)
        if not self.remote:
            from vlmaudit.storage.localfiles import write_text_atomic

            write_text_atomic(self.local(name), text)
            return
        with self.fs.open(self.path(name), "wb") as handle:
            handle.write(text.encode("utf-8"))
