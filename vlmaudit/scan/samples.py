"""Group tar members into samples (key, image bytes, caption, url) with notes on anything odd.

Key rule (documented in README): a member's extension is the text after the LAST dot of its
file name, lower-cased; its key is everything before that, directories included
(`dir/sub/000.jpg` -> key `dir/sub/000`, `a.b.jpg` -> key `a.b`). Consecutive members with the
same key form one sample. A key that reappears after other keys is never merged into the
earlier sample: its members become a row of their own with status `duplicate_key`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from vlmaudit.scan.tario import Member, TarEnd, iter_members
from vlmaudit.schema import SampleStatus

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TEXT_EXTS = ("txt", "json")
MAX_NAME_CHARS = 4096  # longer member names become a `bad_name` row with a shortened key
KEPT_KEY_CHARS = 200
MAX_EXT_CHARS = 16


@dataclass
class Sample:
    key: str
    index: int
    image: bytes | None = None
    image_ext: str | None = None
    caption: str | None = None
    url: str | None = None
    status: str | None = None  # preset failure (duplicate_key, too_large); None = decide later
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    _members: dict[str, bytes | None] = field(default_factory=dict, repr=False)


def split_name(name: str) -> tuple[str, str]:
    head, slash, base = name.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        return name, ""
    return head + slash + stem, ext.lower()


def member_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name, both within budget: an over-long key keeps its
    first KEPT_KEY_CHARS characters plus a hash of the rest, so distinct keys stay distinct."""
    key, ext = split_name(name)
    if len(ext) > MAX_EXT_CHARS:
        ext = ext[:MAX_EXT_CHARS] + "…"
    if len(name) > MAX_NAME_CHARS:
        key = f"{key[:KEPT_KEY_CHARS]}…{hashlib.sha1(key.encode('utf-8', 'replace')).hexdigest()[:16]}"
    return key, ext


def name_problem(member: Member) -> str | None:
    if len(member.name) > MAX_NAME_CHARS:
        return f"member name of {len(member.name)} characters, over the {MAX_NAME_CHARS}-character limit"
    return getattr(member.info, "vlmaudit_name_problem", None)


def wanted_member(name: str) -> bool:
    return split_name(name)[1] in IMAGE_EXTS + TEXT_EXTS


def group_by_key(members: Iterable[Member]) -> Iterator[tuple[int, str, list[Member]]]:
    """(sample_index, key, members) for each run of consecutive members with the same key: the
    one grouping rule shared by the scanner and the filtered-shard writer."""
    index, key, group = -1, None, []
    for member in members:
        this_key = member_key(member.name)[0]
        if group and this_key != key:
            yield index, key, group
            group = []
        if not group:
            index, key = index + 1, this_key
        group.append(member)
    if group:
        yield index, key, group


def iter_samples(stream, end: TarEnd, max_member_bytes: int, max_caption_chars: int) -> Iterator[Sample]:
    """Yield every sample of a tar stream in order; `end` says how the tar ended."""
    seen: set[str] = set()
    for index, key, members in group_by_key(iter_members(stream, end, wanted_member, max_member_bytes)):
        sample = _new_sample(key, index, seen)
        for member in members:
            _add_member(sample, member_key(member.name)[1], member.data, member.problem, end)
            _check_name(sample, member)
        yield finish_sample(sample, max_caption_chars)


def _new_sample(key: str, index: int, seen: set[str]) -> Sample:
    sample = Sample(key=key, index=index)
    if key in seen:
        sample.status = SampleStatus.DUPLICATE_KEY
        sample.error = f"key {key!r} reappears after other keys (members not adjacent); not merged, not scored"
    seen.add(key)
    return sample


def _check_name(sample: Sample, member: Member) -> None:
    problem = name_problem(member)
    if problem and sample.status is None:
        sample.status, sample.error = SampleStatus.BAD_NAME, problem
        sample.image = None


def _add_member(sample: Sample, ext: str, data: bytes | None, problem: str | None, end: TarEnd) -> None:
    if not (ext in IMAGE_EXTS or ext in TEXT_EXTS):
        end.ignore(f".{ext}" if ext else "no extension")
        sample.notes.append(f"ignored_member:.{ext}" if ext else "ignored_member:no_extension")
        return
    if ext in sample._members or (ext in IMAGE_EXTS and sample.image_ext):
        sample.notes.append(f"extra_member:.{ext}")
        return
    sample._members[ext] = data
    if problem:
        sample.notes.append(f"oversized_member:.{ext}")
        if ext in IMAGE_EXTS and sample.status is None:
            sample.status, sample.error = SampleStatus.TOO_LARGE, problem
    if ext in IMAGE_EXTS:
        sample.image_ext, sample.image = ext, data


def finish_sample(sample: Sample, max_caption_chars: int) -> Sample:
    members = sample._members
    meta = _parse_json(members.get("json"), sample.notes)
    sample.url = _string_field(meta, "url", sample.notes)
    if members.get("txt") is not None:
        sample.caption = _decode_text(members["txt"], sample.notes)
    else:
        sample.caption = _string_field(meta, "caption", sample.notes)
    sample._members = {}
    return cap_caption(sample, max_caption_chars)


def cap_caption(sample: Sample, max_caption_chars: int) -> Sample:
    if sample.caption is not None and len(sample.caption) > max_caption_chars:
        sample.caption = sample.caption[:max_caption_chars]
        sample.notes.append("caption_capped")
    return sample


def _decode_text(data: bytes, notes: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        notes.append("caption_invalid_utf8")
        return data.decode("utf-8", errors="replace")


def _parse_json(data: bytes | None, notes: list[str]) -> dict:
    if data is None:
        return {}
    try:
        value = json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError) as exc:
        notes.append(f"json_malformed:{type(exc).__name__}")
        return {}
    if not isinstance(value, dict):
        notes.append("json_not_an_object")
        return {}
    return value


def _string_field(meta: dict, name: str, notes: list[str]) -> str | None:
    value = meta.get(name)
    if value is None or isinstance(value, str):
        return value
    notes.append(f"json_{name}_not_a_string")
    return None
