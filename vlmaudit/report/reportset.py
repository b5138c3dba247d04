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
    listing: object = None  # reading.ReportDir: the directory's one listing (stats, run.json, claims)
    lazy: bool = False  # only the first footer checked (open_lazy); `checked()` checks them all
    meta_sha256: str | None = None  # schema.meta_digest of the first file's run metadata
    allow_mixed: bool = False
    meta_digests: dict | None = None  # open(): shard name -> schema.meta_digest of its footer

    @classmethod
    def open(cls, location, allow_mixed: bool = False, files: list | None = None, listing=None) -> "ReportSet":
        """Every check a command runs before counting, once: the footers, the stats and run.json, models not mixed."""
        from vlmaudit.report.reading import ReportDir, _shared_meta, check_mixed, check_report_footer

        listing = listing or ReportDir(location)  # the one listing: files, stats, run.json, claims, partial writes
        files = files or listing.report_files()
        footers = [check_report_footer(path) for path in files]
        metas = [m for m, _, _, _ in footers]
        _shared_meta(files, metas)
        check_mixed(files, metas, allow_mixed)
        stats = listing.stats()
        run = listing.run()
        for path in files:
            if stem(path) not in stats:
                raise _never_finished(path)
        return cls(location, files, metas, {stem(f): n for f, (_, n, _, _) in zip(files, footers)}, stats, run,
                   {stem(f): d for f, (_, _, d, _) in zip(files, footers)}, listing=listing, meta_sha256=footers[0][3],
                   allow_mixed=allow_mixed, meta_digests={stem(f): m for f, (_, _, _, m) in zip(files, footers)})

    @classmethod
    def open_lazy(cls, location, allow_mixed: bool = False) -> "ReportSet":
        """For the summary path at any number of files: the directory listed, the first footer
        checked in full, run.json read; each other file is checked against its summary (its footer's
        digest, its stats' row count, the run's metadata digest) while the summaries are folded, and
        `stats` is filled then. Anything else asks `checked()` for every check `open` runs."""
        from vlmaudit.report.reading import ReportDir, check_report_footer

        listing = ReportDir(location)
        files = listing.report_files()
        meta, rows, digest, meta_sha = check_report_footer(files[0])
        for path in files:
            if f"{stem(path)}.stats.json" not in listing.entries:
                check_report_footer(path)  # a damaged file says so first, as `open` does
                raise _never_finished(path)
        return cls(location, files, [meta], {stem(files[0]): rows}, {}, listing.run(), {stem(files[0]): digest},
                   listing=listing, lazy=True, meta_sha256=meta_sha, allow_mixed=allow_mixed)

    def check_footer(self, path) -> None:
        """Lazy: check one more file's footer in full (once)."""
        from vlmaudit.report.reading import check_report_footer

        if stem(path) not in self.footer_rows:
            _, self.footer_rows[stem(path)], self.footer_digests[stem(path)], _ = check_report_footer(path)

    def checked(self) -> "ReportSet":
        """This set with every footer and stats file checked (itself unless lazy)."""
        return ReportSet.open(self.location, self.allow_mixed, self.files, self.listing) if self.lazy else self

    def adopt_stats(self, read: dict) -> None:
        """Lazy: the stats the summary fold read, with the others (shards without a report file,
        files outside --shard) read here; the listing keeps them for later readers."""
        from vlmaudit.report.reading import check_stats

        rest = {n[: -len(".stats.json")]: n for n in self.listing.names(".stats.json")}
        self.stats = dict(read) | {shard: check_stats(self.listing.file(name), self.listing.read_json(name))
                                   for shard, name in rest.items() if shard not in read}
        self.listing.keep_stats(self.stats)

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
        """Every file has a summary and histograms beside it, as listed (else the rows path)."""
        entries = self.listing.entries
        return all(entries.get(f"{stem(f)}.summary.json") == "file" and entries.get(f"{stem(f)}.hist.bin") == "file"
                   for f in files)

    def reader(self):
        """summary_fold.ShardReader of this set (what a worker process needs to check a summary)."""
        from vlmaudit.report.shard_summary import taxonomy_digest
        from vlmaudit.report.summary_fold import ShardReader

        if self._digest is None:
            self._digest = taxonomy_digest(self.meta)
        return ShardReader(self.meta, {"taxonomy": self._digest, "meta": self.meta_sha256})


def _never_finished(path):
    from vlmaudit.report.reading import DamagedReport

    return DamagedReport(f"{path}: no {stem(path)}.stats.json beside it, so the shard never finished "
                         "(re-run the scan, or remove the file)")


def listing_of(where, missing_ok: bool = False):
    """The one listing (reading.ReportDir) of WHERE: an opened ReportSet's, a ReportDir itself, or a
    new one of a path or URL. Readers that take a report directory take any of the three."""
    from vlmaudit.report.reading import ReportDir

    if isinstance(where, ReportSet):
        return where.listing or ReportDir(where.location, missing_ok)
    return where if isinstance(where, ReportDir) else ReportDir(where, missing_ok)


def location_of(where):
    """The path or URL WHERE was opened from (a ReportSet, a reading.ReportDir, or the path itself)."""
    from vlmaudit.report.reading import ReportDir

    return where.location if isinstance(where, (ReportSet, ReportDir)) else where
