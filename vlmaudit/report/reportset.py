"""One object for a set of report files: the files, their footers, the stats and run info, and the
per-shard summaries, each listed, read and validated once and passed down to the summary, the
exports and the comparison (instead of every step listing the directory again)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from vlmaudit.report.engine import stem


@dataclass
class ReportSet:
    location: object
    files: list
    metas: list[dict]
    footer_rows: dict  # shard name -> rows in its Parquet footer
    stats: dict  # shard name -> stats
    run: dict
    footer_digests: dict | None = None  # shard name -> schema.footer_digest of its Parquet footer
    _digest: str | None = None  # taxonomy_digest(meta), computed once
    lazy: bool = False  # only the first footer checked (open_lazy); `checked()` checks them all
    names: set | None = None  # lazy: every file name in the location (one listing)
    meta_sha256: str | None = None  # schema.meta_digest of the first file's run metadata
    allow_mixed: bool = False
    meta_digests: dict | None = None  # open(): shard name -> schema.meta_digest of its footer

    @classmethod
    def open(cls, location, allow_mixed: bool = False, files: list | None = None) -> "ReportSet":
        """Every check a command runs before counting (reading.validate_reports), once."""
        from vlmaudit.report.reading import (DamagedReport, _shared_meta, check_mixed, check_report_footer,
                                             read_run_file, read_stats, report_files)

        files = files or report_files(location)
        footers = [check_report_footer(path) for path in files]
        metas = [m for m, _, _, _ in footers]
        _shared_meta(files, metas)
        check_mixed(files, metas, allow_mixed)
        stats = read_stats(location)
        run = read_run_file(location)
        for path in files:
            if stem(path) not in stats:
                raise DamagedReport(f"{path}: no {stem(path)}.stats.json beside it, so the shard never finished "
                                    "(re-run the scan, or remove the file)")
        return cls(location, files, metas, {stem(f): n for f, (_, n, _, _) in zip(files, footers)}, stats, run,
                   {stem(f): d for f, (_, _, d, _) in zip(files, footers)}, meta_sha256=footers[0][3],
                   allow_mixed=allow_mixed, meta_digests={stem(f): m for f, (_, _, _, m) in zip(files, footers)})

    @classmethod
    def open_lazy(cls, location, allow_mixed: bool = False) -> "ReportSet":
        """For the summary path at any number of files: the directory listed, the first footer
        checked in full, run.json read; each other file is checked against its summary (its footer's
        digest, its stats' row count, the run's metadata digest) while the summaries are folded, and
        `stats` is filled then. Anything else asks `checked()` for every check `open` runs."""
        from vlmaudit.report.reading import check_report_footer, read_run_file, report_files

        from vlmaudit.report.reading import DamagedReport

        files = report_files(location)
        meta, _, _, meta_sha = check_report_footer(files[0])
        names = _listing(location)
        for path in files:
            if f"{stem(path)}.stats.json" not in names:
                check_report_footer(path)  # a damaged file says so first, as `open` does
                raise DamagedReport(f"{path}: no {stem(path)}.stats.json beside it, so the shard never finished "
                                    "(re-run the scan, or remove the file)")
        return cls(location, files, [meta], {}, {}, read_run_file(location), lazy=True, names=names,
                   meta_sha256=meta_sha, allow_mixed=allow_mixed)

    def checked(self) -> "ReportSet":
        """This set with every footer and stats file checked (itself unless lazy)."""
        return ReportSet.open(self.location, self.allow_mixed, self.files) if self.lazy else self

    def unpaired_stats(self) -> dict:
        """Lazy: the stats of shards without a report file (failed shards), read on their own."""
        from vlmaudit.report.reading import DamagedReport, check_stats
        from vlmaudit.report.summary_fold import read_json

        stems = {stem(f) for f in self.files}
        out = {}
        for name in sorted(self.names or ()):
            shard = name[: -len(".stats.json")] if name.endswith(".stats.json") else ""
            if shard and shard not in stems:
                where = _child(self.location, name)
                out[shard] = check_stats(where, read_json(where, DamagedReport))
        return out

    @property
    def meta(self) -> dict:
        return self.metas[0]

    def select(self, shard_glob: str | None) -> list:
        if not shard_glob:
            return self.files
        files = [f for f in self.files if fnmatch.fnmatch(stem(f), shard_glob)]
        if not files:
            from vlmaudit.errors import UserError

            raise UserError(f"--shard {shard_glob!r}: no shard report matches")
        return files

    def selected_stats(self, shard_glob: str | None) -> dict:
        return {n: s for n, s in self.stats.items() if not shard_glob or fnmatch.fnmatch(n, shard_glob)}

    def has_summaries(self, files: list) -> bool:
        """Every file has a summary beside it (else the rows path)."""
        if self.names is not None:
            return all(f"{stem(f)}.summary.json" in self.names and f"{stem(f)}.hist.bin" in self.names for f in files)
        return all(self._summary_exists(f) for f in files)

    def _sibling(self, path, suffix: str):
        text = str(path)
        return (text[: -len(".parquet")] + suffix) if isinstance(path, str) else path.with_name(stem(path) + suffix)

    def _summary_exists(self, path) -> bool:
        from vlmaudit.scan.summary import SUMMARY_SUFFIX

        sibling = self._sibling(path, SUMMARY_SUFFIX)
        if isinstance(sibling, str):
            from vlmaudit.storage.location import filesystem

            fs, where = filesystem(sibling)
            return fs.exists(where)
        return sibling.exists()

    def reader(self):
        """summary_fold.ShardReader of this set (what a worker process needs to check a summary)."""
        from vlmaudit.report.shard_summary import taxonomy_digest
        from vlmaudit.report.summary_fold import ShardReader

        if self._digest is None:
            self._digest = taxonomy_digest(self.meta)
        return ShardReader(self.meta, {"taxonomy": self._digest, "meta": self.meta_sha256})

    def summary(self, path) -> dict:
        """The checked summary of one report file (checked against its footer and stats)."""
        reader = self.reader()
        name = stem(path)
        rows = self.footer_rows.get(name, (self.stats.get(name) or {}).get("rows"))
        return reader.summary(path, rows)


def _listing(location) -> set:
    """Every file name in a report location, in one listing."""
    import os

    from vlmaudit.storage.location import Location, is_url

    if is_url(str(location)):
        return set(Location(str(location)).names(""))
    with os.scandir(location) as entries:
        return {e.name for e in entries}


def _child(location, name: str):
    from pathlib import Path

    from vlmaudit.storage.location import is_url

    return f"{str(location).rstrip('/')}/{name}" if is_url(str(location)) else Path(location) / name
