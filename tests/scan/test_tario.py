"""Tar member streaming (scan/tario.py) on hand-built archives: how each kind of damage ends the
shard (exact status and error), size limits at their boundary, long-name headers, pipe streams."""

import io
import tarfile

import pytest

from conftest import write_tar
from vlmaudit.scan.tario import (MAX_HEADER_BYTES, MAX_IGNORED_KINDS, OTHER_KINDS, TarEnd, iter_members,
                                 open_stream)


def members(data: bytes, max_bytes=1 << 20, wanted=lambda name: True):
    end = TarEnd()
    got = [(m.name, m.data, m.problem, m.info.vlmaudit_name_problem)
           for m in iter_members(io.BytesIO(data), end, wanted, max_bytes)]
    return got, end


def tar_bytes(entries, format=tarfile.PAX_FORMAT) -> bytes:
    """entries: (name, data) for files, (name, [type]) for other members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format) as tf:
        for name, what in entries:
            info = tarfile.TarInfo(name)
            if isinstance(what, bytes):
                info.size = len(what)
                tf.addfile(info, io.BytesIO(what))
            else:
                info.type = what[0]
                info.linkname = "a.jpg" if what[0] == tarfile.SYMTYPE else ""
                tf.addfile(info)
    return buf.getvalue()


def test_a_new_tar_end_is_complete_and_owns_its_counts():
    first, second = TarEnd(), TarEnd()
    assert (first.status, first.error, first.permanent, first.members_ignored, first.ignored_kinds) == (
        "complete", None, False, 0, {})
    first.ignore("x")
    assert second.ignored_kinds == {} and second.members_ignored == 0


def test_ignored_kinds_are_listed_up_to_the_limit_then_counted_together():
    end = TarEnd()
    for i in range(MAX_IGNORED_KINDS):
        end.ignore(f".k{i}")
    end.ignore(".k0")
    assert len(end.ignored_kinds) == MAX_IGNORED_KINDS == 64 and OTHER_KINDS not in end.ignored_kinds
    end.ignore(".new")
    end.ignore(".newer")
    end.ignore(".k1")
    assert end.members_ignored == MAX_IGNORED_KINDS + 4
    assert end.ignored_kinds[OTHER_KINDS] == 2 and end.ignored_kinds[".k0"] == 2 and end.ignored_kinds[".k1"] == 2
    assert ".new" not in end.ignored_kinds and OTHER_KINDS == "(other kinds)"


def test_members_are_read_up_to_exactly_the_size_limit():
    data = tar_bytes([("./a.jpg", b"x" * 10), ("b.jpg", b"y" * 11), ("c.txt", b"zz")])
    got, end = members(data, max_bytes=10, wanted=lambda name: name != "c.txt")
    assert got == [("a.jpg", b"x" * 10, None, None),
                   ("b.jpg", None, "member is 11 bytes, over the 10-byte limit", None),
                   ("c.txt", None, None, None)]
    assert end == TarEnd()


def test_non_file_members_are_counted_never_yielded():
    data = tar_bytes([("d", [tarfile.DIRTYPE]), ("a.jpg", b"A"), ("l", [tarfile.SYMTYPE]), ("f", [tarfile.FIFOTYPE])])
    got, end = members(data)
    assert got == [("a.jpg", b"A", None, None)]
    assert end.status == "complete" and end.members_ignored == 3 and end.ignored_kinds == {"non-file member": 3}


WHOLE = tar_bytes([("a.jpg", b"x" * 600), ("b.jpg", b"y" * 600)])  # a: 512 + 1024, b: 512 + 1024, then zeros


@pytest.mark.parametrize("data, names, error", [
    (WHOLE, ["a.jpg", "b.jpg"], None),
    (WHOLE[:1536], ["a.jpg"], "archive ends without an end-of-archive marker"),
    (WHOLE[:3072], ["a.jpg", "b.jpg"], "archive ends without an end-of-archive marker"),
    (WHOLE[:1536 + 612], ["a.jpg"], "tar damaged: ReadError: unexpected end of data"),
    (WHOLE[:1536] + b"\x01" * 512 + WHOLE[1536:], ["a.jpg"], "corrupt tar header: InvalidHeaderError: invalid header"),
    (WHOLE[:3072] + b"\x00" * 512, ["a.jpg", "b.jpg"], None),  # one zero block ends an archive too
])
def test_how_an_archive_ends(data, names, error):
    got, end = members(data)
    assert [name for name, *_ in got] == names
    assert (end.status, end.error) == ("complete" if error is None else "truncated", error)


def test_a_stream_that_is_no_tar_is_unreadable():
    got, end = members(b"not a tar at all" * 64)
    assert got == [] and (end.status, end.error) == ("unreadable", "cannot read as tar: ReadError: invalid header")
    got, end = members(b"")
    assert got == [] and (end.status, end.error) == ("unreadable", "cannot read as tar: ReadError: empty file")


def test_long_names_up_to_the_header_limit_are_kept():
    exact = "n" * (MAX_HEADER_BYTES - 1)  # GNU long-name data: the name and a NUL = exactly the limit
    got, end = members(tar_bytes([(exact, b"A")], tarfile.GNU_FORMAT))
    assert got == [(exact, b"A", None, None)] and end.status == "complete"
    got, end = members(tar_bytes([("p" * 60000, b"B")]))
    assert got == [("p" * 60000, b"B", None, None)] and end.status == "complete"


def test_an_oversized_gnu_long_name_is_skipped_and_the_member_keeps_its_short_name():
    name = "n" * MAX_HEADER_BYTES  # one over the limit with its NUL
    got, end = members(tar_bytes([(name, b"A"), ("b.txt", b"B")], tarfile.GNU_FORMAT))
    assert got == [("n" * 100, b"A", None, "GNU long-name header of 65537 bytes, over the 65536-byte limit: "
                                           "skipped, name shortened"), ("b.txt", b"B", None, None)]
    assert end.status == "complete"


def test_an_oversized_pax_header_is_skipped_and_what_follows_is_read():
    data = tar_bytes([("a.txt", b"a"), ("n" * 70000 + ".jpg", b"abc"), ("c.txt", b"hi")])
    got, end = members(data)
    assert got == [("a.txt", b"a", None, None),
                   ("n" * 100, b"abc", None, "pax extended header of 70016 bytes, over the 65536-byte limit: "
                                             "skipped, name shortened"),
                   ("c.txt", b"hi", None, None)]
    assert end == TarEnd()


def test_an_oversized_header_cut_short():
    data = tar_bytes([("a.txt", b"a"), ("n" * 70000, b"abc")])
    got, end = members(data[:1024 + 5000])
    assert [name for name, *_ in got] == ["a.txt"]
    assert (end.status, end.error) == ("truncated", "tar damaged: ReadError: pax extended header cut short")
    got, end = members(data[1024:1024 + 5000])
    assert got == [] and (end.status, end.error) == ("unreadable", "cannot read as tar: ReadError: pax extended "
                                                                   "header cut short")


def test_a_bad_header_after_an_oversized_one_truncates():
    data = tar_bytes([("a.txt", b"a"), ("n" * 70000, b"abc")])
    pax_end = 1024 + 512 + 70016 + (-70016 % 512)  # a.txt, the pax header block and its data
    damaged = data[:pax_end] + b"\x01" * 512 + data[pax_end + 512:]
    got, end = members(damaged)
    assert [name for name, *_ in got] == ["a.txt"]
    assert (end.status, end.error) == ("truncated", "tar damaged: ReadError: invalid header")


def test_members_of_a_gzipped_tar(tmp_path):
    path = write_tar(tmp_path / "a.tar.gz", [("a.jpg", b"A")], gz=True)
    with open_stream(str(path)) as stream:
        end = TarEnd()
        assert [(m.name, m.data) for m in iter_members(stream, end, lambda n: True, 10)] == [("a.jpg", b"A")]
    assert end.status == "complete"


def test_a_pipe_stream_reports_the_exit_status_and_the_end_of_stderr():
    stream = open_stream("pipe:printf abc; printf '%0400d' 7 >&2; echo ' last ' >&2; exit 5")
    try:
        assert stream.read(2) == b"ab" and stream.read() == b"c"
        with pytest.raises(OSError) as info:
            stream.read()
    finally:
        stream.close()
    tail = ("0" * 400 + "7 last")[-300:]
    assert str(info.value) == f"pipe:printf abc; printf '%0400d' 7 >&2; echo ' last ' >&2; exit 5: command exited with 5: {tail}"
    ok = open_stream("pipe:printf abc")
    assert ok.read() == b"abc" and ok.read() == b"" and ok.read(1) == b""
    ok.close()
    assert ok.proc.returncode == 0


def test_closing_a_pipe_stream_ends_a_command_still_running():
    stream = open_stream("pipe:printf x; exec sleep 600")
    assert stream.read(1) == b"x"
    stream.close()
    assert stream.proc.returncode == -9 and stream.proc.stdout.closed
