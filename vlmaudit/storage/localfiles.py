"""Local files that concurrent writers cannot corrupt: unique temporary names created exclusively
and never through a symlink, atomic renames, and a per-shard claim (a lock with owner and staleness)."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from pathlib import Path

STALE_SECONDS = 1800.0  # a claim not refreshed for this long is abandoned (its writer hung or is gone)
HEARTBEAT_SECONDS = 30.0
OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9_-]+)~(?P<pid>\d+)~[0-9a-f]+\.(partial|tmp)$")


def host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"


def temp_path(path: Path, kind: str) -> Path:
    """A hidden sibling only this process uses: .NAME.HOST~PID~RANDOM.KIND"""
    return path.with_name(f".{path.name}.{host()}~{os.getpid()}~{secrets.token_hex(4)}.{kind}")


def create_exclusive(path: Path):
    """Open a new file for writing; fails if anything (a file, a planted symlink) is already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path, "tmp")
    try:
        with create_exclusive(tmp) as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: Path):
    """A binary handle whose bytes appear at `path` only when the block ends without error: written
    to a unique temporary sibling created exclusively, then renamed over `path` (a symlink planted
    at `path` is replaced, its target never written)."""
    path = Path(path)
    tmp = temp_path(path, "tmp")
    try:
        with create_exclusive(tmp) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True while the process runs; a killed process not yet reaped (a zombie) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False  # no /proc (not Linux): trust kill(0)


def abandoned(path: Path, owner_host: str | None, pid: int | None) -> bool:
    """A file left by a writer that is gone: its process died on this host, or it went stale."""
    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return False
    if owner_host == host() and pid is not None and pid != os.getpid() and not pid_alive(pid):
        return True
    return age > STALE_SECONDS


class ShardClaim:
    """`.NAME.lock` holds {host, pid, since}: one writer per shard. A claim whose writer died on
    this host, or that was not refreshed for STALE_SECONDS, is taken over."""

    def __init__(self, path: Path, token: str):
        self.path, self.token, self.touched = path, token, time.monotonic()

    @classmethod
    def acquire(cls, out_dir: Path, name: str, takeover: tuple[str, int] | None = None) -> ShardClaim | None:
        """The claim, or None while another live writer holds it. `takeover`: (host, pid) of a
        writer known to be dead, whose claim is broken even if its process has not exited yet."""
        path = out_dir / f".{name}.lock"
        for _ in range(2):
            token = secrets.token_hex(8)
            owner = {"host": host(), "pid": os.getpid(), "since": time.time(), "token": token}
            if _link_new(path, json.dumps(owner).encode()):
                return cls(path, token)
            if not (cls._held_by(path, takeover) or cls._stale(path)):
                return None
            _break(path)
        return None

    @staticmethod
    def _held_by(path: Path, writer: tuple[str, int] | None) -> bool:
        owner = _read_owner(path) if writer else None
        return owner is not None and (owner.get("host"), owner.get("pid")) == tuple(writer)

    @classmethod
    def holder(cls, out_dir: Path, name: str) -> dict | None:
        """The owner ({host, pid, since}) of a live claim on shard NAME, else None."""
        path = Path(out_dir) / f".{name}.lock"
        if not path.is_file() or cls._stale(path):
            return None
        owner = _read_owner(path) or {}
        return {k: owner.get(k) for k in ("host", "pid", "since")}

    @staticmethod
    def _stale(path: Path) -> bool:
        owner = _read_owner(path)
        if owner is None:  # not a regular file, or unreadable: stale once old (it may be mid-write)
            return not path.is_file() or path.is_symlink() or abandoned(path, None, None) or _older(path, 60)
        return abandoned(path, owner.get("host"), owner.get("pid"))

    def heartbeat(self) -> None:
        if time.monotonic() - self.touched > HEARTBEAT_SECONDS:
            self.touched = time.monotonic()
            try:
                os.utime(self.path, follow_symlinks=False)
            except OSError:
                pass

    def release(self) -> None:
        owner = _read_owner(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)


def _link_new(path: Path, data: bytes) -> bool:
    """Create `path` holding `data`, atomically: written under a unique name, then hard-linked
    (fails if anything is at `path`), so a claim is never seen empty or half written."""
    tmp = temp_path(path, "tmp")
    try:
        with create_exclusive(tmp) as handle:
            handle.write(data)
        try:
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: an exclusive create, then the write
            with create_exclusive(path) as handle:
                handle.write(data)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(4096)
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _older(path: Path, seconds: float) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except FileNotFoundError:
        return True


def _break(path: Path) -> None:
    """Move a stale lock aside (rename never follows a symlink) and delete it."""
    aside = temp_path(path, "tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    aside.unlink(missing_ok=True)


def remove_abandoned_temps(out_dir: Path, name: str, dead: tuple[str, int] | None = None) -> int:
    """Delete temporary files of shard NAME left by writers that are gone (or by `dead`, the
    (host, pid) of a writer known to be dead); returns how many."""
    removed = 0
    prefixes = (f".{name}.parquet.", f".{name}.stats.json.", f".{name}.summary.json.", f".{name}.hist.bin.")
    for path in out_dir.iterdir() if out_dir.is_dir() else []:
        match = OWNER.search(path.name)
        if not path.name.startswith(prefixes) or not match:
            continue
        if (match["host"], int(match["pid"])) == tuple(dead or ()) or abandoned(path, match["host"], int(match["pid"])):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def check_writable_dir(path: Path, flag: str = "--out") -> None:
    """Fail in one line, before anything loads or trains, when `path` cannot be a directory we write."""

    from vlmaudit.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temp_path(path / ".write-test", "tmp")
        with create_exclusive(probe) as handle:  # a unique name, never through a planted symlink
            handle.write(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
