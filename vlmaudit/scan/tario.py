"""Stream the regular-file members of a (possibly gzipped, possibly damaged) tar shard.

We drive `tarfile` in stream mode ourselves instead of using webdataset's reader: its generic
decoders unpickle `.pyd`/`.pickle` members, and tarfile silently stops at a corrupt header in
the middle of an archive. Here the way the archive ended is recorded, so a damaged shard is
reported as truncated instead of looking complete, and members are only read when wanted.
"""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, NamedTuple

from vlmaudit.scan.lifetime import shell_argv
from vlmaudit.storage.location import is_url
from vlmaudit.schema import ShardStatus

DATA_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)
MAX_IGNORED_KINDS = 64  # distinct kinds listed in a shard's stats; the rest are counted under OTHER_KINDS
OTHER_KINDS = "(other kinds)"
MAX_HEADER_BYTES = 64 << 10  # pax / GNU long-name headers: a long name is a few KiB at most


@dataclass
class TarEnd:
    """How reading a tar ended: complete, truncated (damage after some members), unreadable
    (not a tar at all) or failed (could not be opened or read, after retries). A failure is
    permanent when re-running cannot help (a local file that is missing, unreadable or not a
    tar), else transient (network, a pipe: command, an unexpected error)."""

    status: str = ShardStatus.COMPLETE
    error: str | None = None
    permanent: bool = False
    members_ignored: int = 0
    ignored_kinds: dict[str, int] = field(default_factory=dict)

    def ignore(self, kind: str) -> None:
        """Count an ignored member by kind; past MAX_IGNORED_KINDS distinct kinds the rest are
        counted together, so the stats file stays small whatever a shard holds."""
        self.members_ignored += 1
        if kind not in self.ignored_kinds and len(self.ignored_kinds) >= MAX_IGNORED_KINDS:
            kind = OTHER_KINDS
        self.ignored_kinds[kind] = self.ignored_kinds.get(kind, 0) + 1


class Member(NamedTuple):
    """A regular-file member: its header, its name without './', its bytes (None when not wanted
    or over the size limit) and the reason when it was too big."""

    info: tarfile.TarInfo
    name: str
    data: bytes | None
    problem: str | None


class RecordingTarInfo(tarfile.TarInfo):
    """The TarInfo class every tar reader of the scan passes to tarfile (the scan and its progress
    count). Remembers the header error that made tarfile stop iterating, and skips (never loads)
    pax or GNU long-name headers over MAX_HEADER_BYTES: the member after one keeps its short
    ustar name and carries `vlmaudit_name_problem`."""

    vlmaudit_name_problem = None

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as exc:
            tf.vlmaudit_stop = exc
            raise

    def _proc_gnulong(self, tf):
        if self.size <= MAX_HEADER_BYTES:
            return super()._proc_gnulong(tf)
        return self._skip_oversized(tf, "GNU long-name header")

    def _proc_pax(self, tf):
        if self.size <= MAX_HEADER_BYTES:
            return super()._proc_pax(tf)
        return self._skip_oversized(tf, "pax extended header")

    def _skip_oversized(self, tf, what: str):
        remaining = self._block(self.size)
        while remaining:
            chunk = tf.fileobj.read(min(remaining, 1 << 20))
            if not chunk:
                raise tarfile.ReadError(f"{what} cut short")
            remaining -= len(chunk)
        try:
            member = self.fromtarfile(tf)
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None
        member.offset = self.offset
        member.vlmaudit_name_problem = (f"{what} of {self.size} bytes, over the {MAX_HEADER_BYTES}-byte limit: "
                                        "skipped, name shortened")
        return member


def open_stream(url: str) -> BinaryIO:
    """Open a shard for reading: local path, fsspec URL (http, s3, gs, ...) or pipe:CMD."""
    if url.startswith("pipe:"):
        proc = subprocess.Popen(shell_argv(url[5:]), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return _PipeStream(proc, url)
    if is_url(url):
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(url, "rb")


class _PipeStream:
    """A subprocess's stdout that raises on a non-zero exit when it reaches the end."""

    def __init__(self, proc, url):
        self.proc, self.url = proc, url

    def read(self, n=-1):
        data = self.proc.stdout.read(n)
        if not data and self.proc.wait() != 0:
            err = self.proc.stderr.read().decode("utf-8", "replace").strip()[-300:]
            raise OSError(f"{self.url}: command exited with {self.proc.returncode}: {err}")
        return data

    def close(self):
        self.proc.stdout.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def iter_members(
    stream: BinaryIO, end: TarEnd, wanted: Callable[[str], bool], max_bytes: int
) -> Iterator[Member]:
    """Yield every regular file as a Member; its data is None when not wanted or too big.

    Non-file members (dirs, links, devices) are counted in `end`, never yielded. On damage,
    `end.status` becomes "truncated" and iteration stops after the last intact member.
    """
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*", tarinfo=RecordingTarInfo)
    except DATA_ERRORS as exc:
        end.status, end.error = "unreadable", _describe(exc, "cannot read as tar")
        return
    try:
        for member in tf:
            tf.members = []  # stream mode keeps every header otherwise: memory would grow
            yield from _member(tf, member, end, wanted, max_bytes)
        _record_stop(tf, end)
    except DATA_ERRORS as exc:
        end.status, end.error = ShardStatus.TRUNCATED, _describe(exc, "tar damaged")


def _member(tf, member, end: TarEnd, wanted, max_bytes):
    if not member.isfile():
        end.ignore("non-file member")
        return
    name = member_name(member)
    if not wanted(name):
        yield Member(member, name, None, None)
    elif member.size > max_bytes:
        yield Member(member, name, None, f"member is {member.size} bytes, over the {max_bytes}-byte limit")
    else:
        data = tf.extractfile(member).read()
        if len(data) != member.size:
            raise EOFError("unexpected end of data inside a member")
        yield Member(member, name, data, None)


def member_name(info: tarfile.TarInfo) -> str:
    """A member's name as samples are keyed on: without a leading './'."""
    return info.name[2:] if info.name.startswith("./") else info.name


def _record_stop(tf, end: TarEnd) -> None:
    stop = getattr(tf, "vlmaudit_stop", None)
    if stop is None or isinstance(stop, tarfile.EOFHeaderError):
        return  # clean end-of-archive marker
    if isinstance(stop, tarfile.EmptyHeaderError):
        end.status, end.error = ShardStatus.TRUNCATED, "archive ends without an end-of-archive marker"
    else:
        end.status, end.error = ShardStatus.TRUNCATED, _describe(stop, "corrupt tar header")


def _describe(exc: BaseException, what: str) -> str:
    return f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")
