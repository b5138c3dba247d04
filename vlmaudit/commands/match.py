"""`vlmaudit match REPORTS --bank FILE ...`: stored hashes against hash banks (never the images);
writes the removal list to OUT (default REPORTS/matches) and prints counts per bank only."""

from __future__ import annotations

import os
from pathlib import Path

from vlmaudit.commands.options import MatchRequest
from vlmaudit.errors import UserError
from vlmaudit.match.banks import read_bank
from vlmaudit.match.known import MATCH_DIR, MATCH_FILE
from vlmaudit.match.run import COLUMNS, MatchOptions, match_batches


def run_match(request: MatchRequest) -> int:
    from vlmaudit.report import engine
    from vlmaudit.report.reportset import ReportSet
    from vlmaudit.storage.localfiles import check_writable_dir

    report_dir, banks, out, options, quiet = (request.report_dir, request.banks, request.out, request.match_options(),
                                              request.quiet)
    if not banks:
        raise UserError("match: pass at least one --bank FILE")
    loaded = [bank for text in banks for bank in read_bank(text)]  # refuse a bad bank before reading reports
    _unique_names(loaded)
    reports = ReportSet.open(report_dir)  # listed, footers and stats read once
    files, meta = reports.files, reports.meta
    engine.check_values(files, len(meta["concepts"]), str(report_dir))  # score types, ranges, NaN: as `report`
    out = Path(out) if out else Path(report_dir) / MATCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out, "--out")
    from vlmaudit.progress import start_progress

    with start_progress("match", quiet=quiet, flagged="matched") as progress:
        result = match_batches(_batches(files, options.batch_rows), loaded, options, progress.batch)
    write_outputs(result.table(), out)
    _print(result, loaded, out)
    return 0


def match_files(files, banks, options: MatchOptions | None = None, progress=None):
    """The removal list (an Arrow table) of report FILES against BANKS."""
    options = options or MatchOptions()
    _unique_names(banks)
    return match_batches(_batches(files, options.batch_rows), banks, options, progress).table()


def _unique_names(banks) -> None:
    seen = set()
    for bank in banks:
        if bank.name in seen:
            raise UserError(f"two banks are named {bank.name!r} (the file name): rename one")
        seen.add(bank.name)


def _batches(files, batch_rows: int):
    import pyarrow.parquet as pq

    from vlmaudit.report.reading import open_report

    for path in files:
        parquet = pq.ParquetFile(open_report(path))
        columns = [c for c in COLUMNS if c in parquet.schema_arrow.names]
        yield from parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)


def write_outputs(table, out: Path) -> None:
    """matches.parquet and matches.csv, each through an exclusive temporary name and a rename."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from vlmaudit.storage.localfiles import create_exclusive, temp_path

    for name, write in ((MATCH_FILE, pq.write_table), ("matches.csv", pacsv.write_csv)):
        target = out / name
        tmp = temp_path(target, "tmp")
        try:
            with create_exclusive(tmp) as handle:
                write(table, handle)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _print(result, banks, out: Path) -> None:
    from vlmaudit.report.safetext import safe_text

    counts = result.counts()
    print(f"rows scanned {result.scanned:,}; without the hash a bank needs {result.no_hashes:,}; "
          f"PDQ below --min-quality {result.low_quality:,}")
    for bank in banks:
        print(f"bank {safe_text(bank.name)} ({bank.kind}, {len(bank.ids):,} entries): {counts.get(bank.name, 0):,} matches")
    print(f"removal list: {safe_text(str(out / MATCH_FILE))} and matches.csv")
