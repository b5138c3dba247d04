"""Which shards a report may re-read (the HTML gallery's thumbnails, filter --write-shards), and
reading their raw samples.

Which shards are re-read is decided by the command line, never by the report: the shards named
with `--shards`, else the source recorded in a shard's stats only when it is a local regular
file or uses a URL scheme allowed with `--allow-scheme`. A recorded `pipe:` is never run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlmaudit.report.reportset import listing_of
from vlmaudit.scan.samples import group_by_key
from vlmaudit.scan.tario import TarEnd, iter_members, open_stream
from vlmaudit.storage.location import is_url


@dataclass
class ReReadOptions:
    """Where shards may be re-read from and how big a member may be."""

    shards: list[str] = field(default_factory=list)
    allow_schemes: list[str] = field(default_factory=list)
    max_member_bytes: int = 64 << 20


def shard_sources(report_dir: Path, names: list[str], options: ReReadOptions) -> tuple[dict, dict]:
    """({report name: source to open}, {report name: why it is not opened}) for `names`.
    REPORT_DIR: a path, or an opened ReportSet or reading.ReportDir (its stats are reused)."""
    given = _named_on_command_line(options.shards)
    stats = listing_of(report_dir, missing_ok=True).stats()
    sources, refused = {}, {}
    for name in names:
        if name in given:
            sources[name] = given[name]
            continue
        recorded = stats.get(name, {}).get("url")
        problem = recorded_source_problem(recorded, options.allow_schemes)
        if problem:
            refused[name] = problem
        else:
            sources[name] = recorded
    return sources, refused


def _named_on_command_line(specs: list[str]) -> dict[str, str]:
    if not specs:
        return {}
    from vlmaudit.scan.shards import expand_shard_specs, output_names

    return {name: url for url, name in output_names(expand_shard_specs(specs)).items()}


def recorded_source_problem(url, allow_schemes: list[str]) -> str | None:
    """None when a source recorded in a report may be opened, else the reason it is not."""
    if not isinstance(url, str) or not url:
        return "no source recorded"
    from vlmaudit.scan.folder_source import is_folder_shard, parse_folder_shard

    if is_folder_shard(url):  # a loose image folder: its files are re-read under the scan's containment rules
        return None if Path(parse_folder_shard(url)[0]).is_dir() else "recorded image folder is not a local directory"
    if url.startswith("pipe:"):
        return "recorded source is a pipe: command; never run from a report (name the shards with --shards)"
    if is_url(url):
        scheme = url.split("://", 1)[0].lower()
        if scheme in {s.lower() for s in allow_schemes}:
            return None
        return f"recorded source uses {scheme}://; allow it with --allow-scheme {scheme} or name the shards with --shards"
    if not Path(url).is_file():
        return "recorded source is not a regular local file (name the shards with --shards)"
    return None


def iter_raw_samples(url: str, max_member_bytes: int, end: TarEnd | None = None):
    """(sample_index, key, members) with every member's header and bytes, grouped exactly as the
    scanner groups them; a member over `max_member_bytes` has data None; a damaged tar ends the
    iteration after its last intact member (`end` says how reading ended)."""
    stream = open_stream(url)
    try:
        yield from group_by_key(iter_members(stream, end or TarEnd(), lambda name: True, max_member_bytes))
    finally:
        stream.close()
