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

    @classmethod
    def open(cls, location, allow_mixed: bool = False, files: list | None = None) -> "ReportSet":
        """Every check a command runs before counting, once: the footers, the stats and run.json, models not mixed."""
        from vlmaudit.report.reading import DamagedReport, ReportDir, _shared_meta, check_mixed, check_report_footer

        listing = ReportDir(location)  # the one listing: files, stats, run.json, claims, partial writes
        files = files or listing.report_files()
        footers = [check_report_footer(path) for path in files]
        metas = [m for m, _, _ in footers]
        _shared_meta(files, metas)
        check_mixed(files, metas, allow_mixed)
        stats = listing.stats()
        run = listing.run()
        for path in files:
            if stem(path) not in stats:
                raise DamagedReport(f"{path}: no {stem(path)}.stats.json beside it, so the shard never finished "
                                    "(re-run the scan, or remove the file)")
        return cls(location, files, metas, {stem(f): n for f, (_, n, _) in zip(files, footers)}, stats, run,
                   {stem(f): d for f, (_, _, d) in zip(files, footers)}, listing=listing)

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

    def summary(self, path) -> dict:
        """The checked summary of one report file (read each time: callers fold and forget it)."""
        from vlmaudit.report.shard_summary import check, taxonomy_digest
        from vlmaudit.scan.summary import SUMMARY_SUFFIX

        if self._digest is None:
            self._digest = taxonomy_digest(self.meta)
        where = self._sibling(path, SUMMARY_SUFFIX)
        return check(_read_json(where), self.meta, where, self.footer_rows.get(stem(path)), self._digest,
                     (self.footer_digests or {}).get(stem(path)))

    def hist(self, path, sha256: str, concepts: list[int] | None = None) -> dict:
        """One file's histograms, concept index -> [modality, bin], if its digest is the summary's
        (only the given concepts are inflated)."""
        import hashlib

        from vlmaudit.report.reading import DamagedReport
        from vlmaudit.report.shard_summary import decode_hist
        from vlmaudit.scan.summary import HIST_SUFFIX

        where = self._sibling(path, HIST_SUFFIX)
        data = _read_bytes(where, 64 << 20)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DamagedReport(f"{where}: does not match its summary (digest differs)")
        return decode_hist(data, len(self.meta["concepts"]), where, concepts)


def _read_bytes(where, limit: int) -> bytes:
    from vlmaudit.report.reading import DamagedReport
    from vlmaudit.storage.location import open_input

    try:
        with open_input(where) if isinstance(where, str) else open(where, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise DamagedReport(f"{where}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise DamagedReport(f"{where}: over the {limit}-byte limit for this file")
    return data


def _read_json(where):
    import json

    from vlmaudit.report.reading import DamagedReport
    from vlmaudit.report.shard_summary import MAX_SUMMARY_BYTES

    try:
        return json.loads(_read_bytes(where, MAX_SUMMARY_BYTES))
    except (ValueError, RecursionError) as exc:
        raise DamagedReport(f"{where}: not valid JSON ({str(exc)[:200]})") from None


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
