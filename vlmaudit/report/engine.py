"""The columnar engine behind `report` and `filter`: a DuckDB connection with bounded memory that
reads local Parquet files and fsspec URLs (s3://, gs://, ...) in place, and SQL literal helpers.

DuckDB's httpfs extension is never loaded (it would be downloaded); object storage goes through
the fsspec filesystem registered for the URL's protocol instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

from vlmaudit.storage.location import is_url

MEMORY_LIMIT = "640MB"  # DuckDB's own buffers; with Python and Arrow the process stays under 1 GB
MAX_THREADS = 16


def connect(files=(), temp_dir: str | None = None):
    """A fresh in-memory DuckDB connection: bounded threads and memory, spills to `temp_dir` (a
    private directory made with mkdtemp: unique name, mode 0700, never a planted symlink; session()
    makes and removes one) or nowhere, and the fsspec filesystems the given URLs need."""
    import duckdb

    con = duckdb.connect(config={"threads": min(os.cpu_count() or 1, MAX_THREADS), "memory_limit": MEMORY_LIMIT,
                                 "temp_directory": os.path.join(temp_dir, "spill") if temp_dir else "",
                                 "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET enable_progress_bar = false")  # stderr belongs to the command, not to DuckDB
    for protocol in sorted({str(f).split("://", 1)[0] for f in files if is_url(f)}):
        import fsspec

        con.register_filesystem(fsspec.filesystem(protocol))
    return con


@contextmanager
def session(files, what: str):
    """connect() for a with-block: a DuckDB error (damaged or mismatched report files, storage
    unreachable, out of memory) becomes one UserError line naming what was being read."""
    import duckdb

    from vlmaudit.errors import UserError

    spill = tempfile.mkdtemp(prefix="vlmaudit-duckdb-")
    con = connect(files, spill)
    try:
        yield con
    except duckdb.Error as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in first)  # data never reaches the terminal raw
        raise UserError(f"{what}: cannot read the reports: {shown}") from None
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


GLOB_CHARS = set("*?[")


def stem(path) -> str:
    """A report file's shard name: its file name without .parquet (paths and URLs alike)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".parquet")] if name.endswith(".parquet") else name


def literal_glob(name: str) -> str:
    """NAME as a DuckDB glob pattern that matches only itself: each of * ? [ becomes a
    one-character class ([*], [?], [[]); ] outside a class is an ordinary character."""
    return "".join(f"[{ch}]" if ch in GLOB_CHARS else ch for ch in name)


def source(files, filename: bool = False) -> str:
    """read_parquet over exactly these files. DuckDB expands glob characters even in a list of
    names, so a local name holding one is escaped to match only itself; a URL holding one (its
    filesystem's glob rules differ) is refused."""
    from vlmaudit.errors import UserError

    if not files:
        raise ValueError("no files")
    patterns = []
    for name in map(str, files):
        if GLOB_CHARS & set(name.split("://", 1)[-1]) and is_url(name):
            raise UserError(f"{ascii(name)}: report URLs with *, ? or [ are not supported; rename the file")
        patterns.append(name if is_url(name) else literal_glob(name))
    names = ", ".join(text(p) for p in patterns)
    return f"read_parquet([{names}], filename = true)" if filename else f"read_parquet([{names}])"


def check_scores(con, files, n_concepts: int) -> None:
    """Refuse score lists of another length, and any score (the lists, the top and per-category
    columns, a judge's P(unsafe)) that is NaN, infinite or outside [0, 1] (DuckDB orders NaN
    above every number), naming the first damaged file: one pass over the score columns, before
    anything is counted from them."""
    from vlmaudit.report.reading import BadScores

    columns = [d[0] for d in con.execute(f"SELECT * FROM {source(files)} LIMIT 0").description]
    bad = bad_score_conditions(columns, n_concepts)
    which = "CASE " + " ".join(f"WHEN {cond} THEN {text(c)}" for c, cond in bad.items()) + " END"
    found = con.execute(f"SELECT filename, {which} FROM {source(files, filename=True)} "
                        f"WHERE {' OR '.join(bad.values())} LIMIT 1").fetchone()
    if found and found[1] in ("image_scores", "caption_scores"):
        raise BadScores(f"{found[0]}: holds score lists that are NaN, infinite, outside [0, 1] or not "
                        f"{n_concepts} long")
    if found:
        raise BadScores(f"{found[0]}: column {found[1]} holds scores that are NaN, infinite or outside [0, 1]")


def bad_score_conditions(columns, n_concepts: int) -> dict:
    """column -> SQL that is true on a row whose scores in that column are damaged (a list of
    another length; NaN, infinite or outside [0, 1])."""
    from vlmaudit.report.reading import scalar_score_column

    bad = {side: f"({side} IS NOT NULL AND (len({side}) != {n_concepts} OR list_max({side}) > 1 "
                 f"OR list_min({side}) < 0))" for side in ("image_scores", "caption_scores") if side in columns}
    # a scalar goes through a one-item list: DuckDB judges `x > 1` from the footer's min/max,
    # which leave NaN out, and would skip the row group
    bad |= {c: f'("{c}" IS NOT NULL AND (list_max(["{c}"]) > 1 OR list_min(["{c}"]) < 0))'
            for c in columns if scalar_score_column(c)}
    return bad


def check_values(files, n_concepts: int, what: str) -> None:
    """check_scores in a session of its own: for readers that take other columns than the scores
    (`match`), so a damaged report is refused as `report` refuses it, before any row is used."""
    with session(files, what) as con:
        check_scores(con, files, n_concepts)


def text(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def texts(values) -> str:
    return "([" + ", ".join(text(v) for v in values) + "]::VARCHAR[])"


def floats(values) -> str:
    """A FLOAT[] literal whose items are exactly the given float32 values (repr of the float64
    widening round-trips, and the cast back to FLOAT is exact)."""
    return "([" + ", ".join(repr(float(v)) for v in values) + "]::FLOAT[])"


def ints(values) -> str:
    return "([" + ", ".join(str(int(v)) for v in values) + "]::INTEGER[])"


def bools(values) -> str:
    return "([" + ", ".join("true" if v else "false" for v in values) + "]::BOOLEAN[])"
