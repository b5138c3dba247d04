"""Which samples matched a bank: read by everything that shows, thumbnails or copies images, so a
matched image is never decoded again, shown or written."""

from __future__ import annotations

from pathlib import Path

MATCH_DIR = "matches"
MATCH_FILE = "matches.parquet"
MAX_MATCH_ROWS = 50_000_000


def read_matches(report_dir, columns: list[str]):
    """COLUMNS of REPORT_DIR/matches/matches.parquet (checked: size, readability), or None when
    `match` has not been run there."""
    from vlmaudit.storage.location import is_url

    if report_dir is None or is_url(str(report_dir)):
        return None
    path = Path(report_dir) / MATCH_DIR / MATCH_FILE
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    from vlmaudit.errors import UserError

    try:
        parquet = pq.ParquetFile(path)
        if parquet.metadata.num_rows > MAX_MATCH_ROWS:
            raise UserError(f"{path}: over {MAX_MATCH_ROWS:,} rows")
        return parquet.read(columns=columns)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: refuse in one line, never show images
        raise UserError(f"{path}: not a readable match output ({type(exc).__name__}); "
                        "re-run `vlmaudit match` or remove it") from None


def known_matches(report_dir) -> set[tuple[str, str]]:
    """(shard, key) of every sample in REPORT_DIR/matches/matches.parquet; empty without one."""
    table = read_matches(report_dir, ["shard", "key"])
    if table is None:
        return set()
    return set(zip(table.column("shard").to_pylist(), table.column("key").to_pylist()))
