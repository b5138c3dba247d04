"""Find, validate and read a report directory: Parquet files, their footer metadata, per-shard
stats, run.json.

Report directories come from other people: every file is checked before it is counted, and a
damaged or foreign one ends the command with one line naming it (a UserError), never a
traceback. The checks here read footers and small files only; the score values themselves are
checked as they are read (`score_matrix`), and `locate_damage` names the file afterwards.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.storage.location import is_url, open_input
from vlmaudit.schema import RECORDED

MAX_JSON_BYTES = 4 << 20  # stats, run and footer metadata: a few KiB in practice
MAX_FILES = 1_000_000
REQUIRED_COLUMNS = {"shard": "string", "key": "string", "sample_index": "int", "status": "string",
                    "url": "string", "image_scores": "list<float>", "caption_scores": "list<float>"}
OPTIONAL_COLUMNS = {"caption": "string", "image_flagged_concepts": "list<string>",
                    "caption_flagged_concepts": "list<string>", "image_flagged_scores": "list<float>",
                    "caption_flagged_scores": "list<float>"}
SCALAR_SCORES = {"image_top_score", "caption_top_score", "image_unsafe", "caption_unsafe"}
SCORE_LEAVES = ("image_scores.list.element", "caption_scores.list.element",
                "image_flagged_scores.list.element", "caption_flagged_scores.list.element")


class DamagedReport(UserError):
    """A report file is damaged, foreign or inconsistent with the others."""


class ReportDir:
    """One listing of a report directory, a local path or an fsspec URL (s3://bucket/prefix), and
    the one reader of what it holds: the Parquet files, *.stats.json, run.json, partial writes and
    claims. Local and remote go through the same names, limits, checks and messages; the
    directory is listed once and each small file read once (then kept)."""

    def __init__(self, location, missing_ok: bool = False):
        from vlmaudit.storage.location import Location

        self.location = location
        self.where = Location(location)
        self.entries = _list_entries(self.where, missing_ok)  # name -> "file" | "dir" | "other"
        self._stats: dict | None = None
        self._run: dict | None = None

    def __str__(self) -> str:
        return str(self.where)  # credentials redacted

    @property
    def remote(self) -> bool:
        return self.where.remote

    def file(self, name: str):
        """A file here as the readers take it: a Path locally, a redacted URL string remotely."""
        return self.where.url(name) if self.remote else self.where.local(name)

    def names(self, suffix: str) -> list[str]:
        """Sorted names here ending with SUFFIX and something before it."""
        return sorted(n for n in self.entries if n.endswith(suffix) and len(n) > len(suffix))

    def report_files(self) -> list:
        """The reports' Parquet files: Paths for a local directory, redacted URL strings for an
        fsspec URL; open them with `open_report`."""
        names = self.names(".parquet")
        if len(names) > MAX_FILES:
            raise UserError(f"{self}: {len(names)} Parquet files, over the {MAX_FILES} limit")
        for name in names:
            if self.entries[name] != "file":
                raise DamagedReport(f"{self.file(name)}: not a regular file")
        if not names:
            raise UserError(f"{self}: no Parquet reports here (run `vlmaudit scan ... --out {self}` first)")
        return [self.file(n) for n in names]

    def shard_names(self) -> set[str]:
        """The shard names of the Parquet files here (none: empty, never an error)."""
        return {n[: -len(".parquet")] for n in self.names(".parquet")}

    def stats(self) -> dict[str, dict]:
        """{shard name: stats} of every *.stats.json; a damaged one is refused, naming it."""
        if self._stats is None:
            self._stats = {n[: -len(".stats.json")]: check_stats(self.file(n), self.read_json(n))
                           for n in self.names(".stats.json")}
        return self._stats

    def keep_stats(self, stats: dict) -> None:
        """Stats read and checked elsewhere (the summary fold): later readers take these."""
        self._stats = stats

    def run(self) -> dict:
        """run.json (absent: {}); a damaged one is refused, naming it."""
        if self._run is None:
            self._run = check_run(self.file("run.json"), self.read_json("run.json")) if "run.json" in self.entries else {}
        return self._run

    def partial_names(self) -> list[str]:
        """Writes in progress or abandoned (.NAME.parquet.*.partial)."""
        return [n for n in sorted(self.entries) if n.startswith(".") and n.endswith(".partial")]

    def has_claim(self, shard: str) -> bool:
        """A claim file (.NAME.lock) was here when listed (live or stale: ShardClaim.holder says)."""
        return f".{shard}.lock" in self.entries

    def read_json(self, name: str):
        if self.entries.get(name) != "file":
            raise DamagedReport(f"{self.file(name)}: not a regular file")
        return read_json_file(self.file(name))


def _list_entries(where, missing_ok: bool) -> dict[str, str]:
    """{name: kind} of the entries directly in WHERE (dot-named ones included, as on disk)."""
    if where.remote:
        return _remote_entries(where, missing_ok)
    try:
        with os.scandir(where.root) as listing:
            return {e.name: _kind_of(e) for e in listing}
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return {}
        raise UserError(f"{where}: not a directory") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot list ({exc.strerror or exc})") from None


def _kind_of(entry) -> str:
    try:
        return "file" if entry.is_file() else "dir" if entry.is_dir() else "other"  # symlinks followed
    except OSError:
        return "other"


def _remote_entries(where, missing_ok: bool) -> dict[str, str]:
    from pathlib import PurePosixPath

    try:
        found = where.fs.find(where.root, maxdepth=1, detail=True)
    except FileNotFoundError:
        found = {}
    except OSError as exc:
        raise UserError(f"{where}: cannot list ({exc.strerror or exc})") from None
    entries = {PurePosixPath(p).name: "file" if info.get("type", "file") == "file" else "dir"
               for p, info in found.items() if p.rstrip("/") != where.root}
    if not entries and not missing_ok and not where.is_dir():
        raise UserError(f"{where}: not a directory")
    return entries


def report_files(report_dir) -> list:
    """The reports' Parquet files (see ReportDir.report_files); REPORT_DIR: a path, URL or ReportDir."""
    return _listing(report_dir).report_files()


def _listing(report_dir, missing_ok: bool = False) -> ReportDir:
    return report_dir if isinstance(report_dir, ReportDir) else ReportDir(report_dir, missing_ok)


def open_report(path):
    """A pyarrow-readable source for one report file: the path itself, or an fsspec file."""
    return open_input(path) if is_url(path) else path


def file_stem(path) -> str:
    """The shard name of a report file (local Path or URL string)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1][: -len(".parquet")]


def read_report_meta(files: list[Path]) -> dict:
    """The run metadata shared by every file, after checking each file's footer: a readable
    Parquet written by vlmaudit, the columns with the right types, one shard per file, scores
    within [0, 1] where the footer has statistics, and the same taxonomy in every file."""
    return _shared_meta(files, [check_report_file(path) for path in files])


def _shared_meta(files: list[Path], metas: list[dict]) -> dict:
    first = metas[0]
    for path, meta in zip(files[1:], metas[1:]):
        for key in ("concepts", "concept_categories", "categories"):
            if meta[key] != first[key]:
                raise DamagedReport(f"{path}: written with another taxonomy than {file_stem(files[0])} ({key} differ)")
    return first


def check_mixed(files: list[Path], metas: list[dict], allow_mixed: bool) -> None:
    """Refuse reports of different models or thresholds in one directory unless asked to mix."""
    if allow_mixed:
        return
    first = metas[0]
    for path, meta in zip(files[1:], metas[1:]):
        for key, what in (("model", "model"), ("thresholds", "thresholds"), ("taxonomy_version", "taxonomy version")):
            if meta.get(key) != first.get(key):
                raise DamagedReport(f"{path}: another {what} than {file_stem(files[0])}; reports of different runs "
                                    "are not summed together (pass --allow-mixed to do it anyway)")


def check_report_file(path: Path) -> dict:
    return check_report_footer(path)[0]


def check_report_footer(path: Path) -> tuple[dict, int, str, str]:
    """check_report_file's checks; returns (footer metadata, row count, schema.footer_digest,
    schema.meta_digest). Local and remote files are read the same way: one file object, one
    footer read."""
    from vlmaudit.schema import META_KEY, meta_digest

    try:
        handle = open_input(path)
    except OSError as exc:
        raise DamagedReport(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        parquet, meta = _file_meta(path, handle)
        _check_meta(path, meta)
        _check_columns(path, parquet.schema_arrow)
        _check_statistics(path, parquet)
        return (meta, parquet.metadata.num_rows, _footer_digest(path, handle),
                meta_digest(parquet.schema_arrow.metadata[META_KEY]))


def raw_footer_digest(path) -> str:
    """schema.footer_digest of a local or remote report file; a damaged tail is refused naming it."""
    try:
        with open_input(path) as handle:
            return _footer_digest(path, handle)
    except OSError as exc:
        raise DamagedReport(f"{path}: cannot read ({exc.strerror or exc})") from None


def _footer_digest(path, handle) -> str:
    from vlmaudit.schema import footer_digest

    try:
        return footer_digest(handle)
    except (OSError, ValueError) as exc:
        raise DamagedReport(f"{path}: not a readable Parquet file (truncated or damaged?): {_short(exc)}") from None


def _file_meta(path: Path, handle):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmaudit.schema import META_KEY

    try:
        parquet = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedReport(f"{path}: not a readable Parquet file (truncated or damaged?): {_short(exc)}") from None
    raw = (parquet.schema_arrow.metadata or {}).get(META_KEY)
    if not raw:
        raise DamagedReport(f"{path}: not a vlmaudit report (no vlmaudit metadata in its footer)")
    if len(raw) > MAX_JSON_BYTES:
        raise DamagedReport(f"{path}: vlmaudit metadata of {len(raw)} bytes, over the {MAX_JSON_BYTES}-byte limit")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DamagedReport(f"{path}: vlmaudit metadata is not valid JSON ({_short(exc)})") from None
    if not isinstance(meta, dict):
        raise DamagedReport(f"{path}: vlmaudit metadata is not a JSON object")
    return parquet, meta


def _check_meta(path: Path, meta: dict) -> None:
    if not meta.get("concepts"):
        raise DamagedReport(f"{path}: not a vlmaudit report (no taxonomy in its metadata)")
    n = len(_str_list(path, meta, "concepts"))
    for key in ("concept_categories", "concept_names"):
        if key in meta or key == "concept_categories":
            if len(_str_list(path, meta, key)) != n:
                raise DamagedReport(f"{path}: metadata field {key} has {len(meta[key])} entries, not {n}")
    categories = _str_list(path, meta, "categories")
    if "category_names" in meta and len(_str_list(path, meta, "category_names")) != len(categories):
        raise DamagedReport(f"{path}: metadata field category_names does not match categories")
    unknown = sorted(set(meta["concept_categories"]) - set(categories))
    if unknown:
        raise DamagedReport(f"{path}: metadata names unknown categories {unknown[:3]}")
    if len(set(meta["concepts"])) != n:
        raise DamagedReport(f"{path}: metadata lists a concept twice")
    if not isinstance(meta.get("model", {}), dict) or not isinstance(meta.get("taxonomy_version", ""), (str, type(None))):
        raise DamagedReport(f"{path}: metadata fields model (an object) or taxonomy_version (a string) malformed")
    thresholds = meta.get("thresholds")
    if not isinstance(thresholds, dict):
        raise DamagedReport(f"{path}: metadata field thresholds is missing or not an object")
    for modality in ("image", "caption"):
        values = thresholds.get(modality)
        if not isinstance(values, list) or len(values) != n or not all(_unit(v) for v in values):
            raise DamagedReport(f"{path}: metadata thresholds.{modality} must be {n} numbers between 0 and 1")


def _str_list(path: Path, meta: dict, key: str) -> list:
    value = meta.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DamagedReport(f"{path}: metadata field {key} must be a list of strings")
    return value


def _unit(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def scalar_score_column(name: str) -> bool:
    """A float32 score column outside the lists: top score, per-category score, judge P(unsafe)."""
    return name in SCALAR_SCORES or name.startswith(("image_cat_", "caption_cat_"))


def _check_columns(path: Path, schema) -> None:
    for name in REQUIRED_COLUMNS:
        if name not in schema.names:
            raise DamagedReport(f"{path}: column {name!r} is missing (not a vlmaudit report?)")
    expected = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS, **{n: "float" for n in schema.names if scalar_score_column(n)}}
    for name, kind in expected.items():
        if name in schema.names and _kind(schema.field(name).type) != kind:
            raise DamagedReport(f"{path}: column {name!r} has type {schema.field(name).type}, expected {kind}")


def _kind(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_list(arrow_type):
        inner = _kind(arrow_type.value_type)
        return f"list<{inner}>"
    if pa.types.is_float32(arrow_type):
        return "float"
    return str(arrow_type)


def _check_statistics(path: Path, parquet) -> None:
    """From the footer: one shard per file (its name), no null status, scores in [0, 1]. Where
    a row group has no statistics, the shard and status columns are read instead (small)."""
    metadata = parquet.metadata
    leaves = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    complete = True
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        shard, status = _stats(row_group, leaves.get("shard")), _stats(row_group, leaves.get("status"))
        complete &= shard is not None and shard.has_min_max and status is not None
        if shard is not None and shard.has_min_max:
            _check_shard_names(path, shard.min, shard.max)
        if status is not None and status.null_count:
            raise DamagedReport(f"{path}: {status.null_count} row(s) have no status")
        for leaf in SCORE_LEAVES:
            stats = _stats(row_group, leaves.get(leaf))
            if stats is not None and stats.has_min_max and not (0 <= stats.min and stats.max <= 1):
                raise DamagedReport(f"{path}: {leaf.split('.')[0]} holds values outside [0, 1] "
                                    f"({stats.min} .. {stats.max})")
    if not complete:
        _check_columns_read(path, parquet)


def _check_shard_names(path: Path, low, high) -> None:
    if not low == high == file_stem(path):
        shown = low if low != file_stem(path) else high
        raise DamagedReport(f"{path}: rows of shard {shown!r} in the report of {file_stem(path)!r}")


def _check_columns_read(path: Path, parquet) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = parquet.read(columns=["shard", "status"], use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedReport(f"{path}: cannot read its shard and status columns: {_short(exc)}") from None
    if table.column("status").null_count:
        raise DamagedReport(f"{path}: {table.column('status').null_count} row(s) have no status")
    if table.num_rows:
        if table.column("shard").null_count:
            raise DamagedReport(f"{path}: rows without a shard name")
        low_high = pc.min_max(table.column("shard"))
        _check_shard_names(path, low_high["min"].as_py(), low_high["max"].as_py())


def _stats(row_group, index):
    if index is None:
        return None
    stats = row_group.column(index).statistics
    return stats if stats is not None and stats.has_null_count else None


def read_stats(report_dir) -> dict[str, dict]:
    """{shard name: stats} of every *.stats.json (none where there is no directory)."""
    return _listing(report_dir, missing_ok=True).stats()


def read_limited(path, limit: int) -> bytes:
    """A small file, local (Path) or remote (URL), read up to `limit` bytes; one that cannot be read
    or is over the limit is refused, naming it."""
    try:
        with open_input(path) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise DamagedReport(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise DamagedReport(f"{path}: over the {limit}-byte limit for this file")
    return data


def read_json_file(path):
    """A small JSON file, local (Path) or remote (URL), read up to the size limit through one reader."""
    data = read_limited(path, MAX_JSON_BYTES)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DamagedReport(f"{path}: not valid JSON ({_short(exc)})") from None


def check_stats(path: Path, stats) -> dict:
    if not isinstance(stats, dict):
        raise DamagedReport(f"{path}: expected a JSON object")
    if stats.get("status") not in RECORDED:
        raise DamagedReport(f"{path}: status {stats.get('status')!r} is not one of {', '.join(RECORDED)}")
    if not isinstance(stats.get("url"), (str, type(None))):
        raise DamagedReport(f"{path}: url must be a string")
    for key in ("started_at", "finished_at", "judged", "rows"):
        value = stats.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value)):
            raise DamagedReport(f"{path}: {key} must be a finite number")
    if ("started_at" in stats) != ("finished_at" in stats):
        raise DamagedReport(f"{path}: has only one of started_at / finished_at")
    return stats


def read_run_file(report_dir) -> dict:
    """run.json (absent: {}); a damaged one is refused, naming it."""
    return _listing(report_dir, missing_ok=True).run()


def check_run(path, run) -> dict:
    if not isinstance(run, dict):
        raise DamagedReport(f"{path}: expected a JSON object")
    planned = run.get("planned_shards", [])
    if not isinstance(planned, list) or not all(isinstance(p, str) for p in planned):
        raise DamagedReport(f"{path}: planned_shards must be a list of shard names")
    return run


def iter_batches(files: list[Path], columns: list[str], batch_size: int = 131072):
    import pyarrow.parquet as pq

    for path in files:
        yield from pq.ParquetFile(open_report(path)).iter_batches(batch_size=batch_size, columns=columns,
                                                                  use_threads=False)


class BadScores(DamagedReport):
    """Score lists of the wrong length, or values that are NaN, infinite or outside [0, 1]."""


def score_matrix(column, n_concepts: int) -> np.ndarray:
    """list<float32> column -> float32 [n, C] with NaN rows where the list is null (zero-copy
    when no list is null). Raises BadScores for lists of another length or values outside [0, 1]."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = np.asarray(column.offsets)
    values = np.asarray(column.values)[offsets[0]: offsets[-1]]
    valid = np.asarray(column.is_valid()) if column.null_count else None
    n_valid = len(column) if valid is None else int(valid.sum())
    if values.size != n_valid * n_concepts or (valid is not None and (np.diff(offsets)[~valid] != 0).any()):
        raise BadScores(f"score lists do not have {n_concepts} entries: report written with another taxonomy?")
    if values.size and not (values.min() >= 0 and values.max() <= 1):  # NaN fails both comparisons
        raise BadScores("a report holds scores that are NaN, infinite or outside [0, 1]")
    if valid is None:
        return values.reshape(-1, n_concepts)
    out = np.full((len(column), n_concepts), np.nan, np.float32)
    out[valid] = values.reshape(-1, n_concepts)
    return out


def locate_damage(files: list[Path], n_concepts: int) -> str | None:
    """After a failure while counting: read every file in full and name the first damaged one
    (slow; only called on the error path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            table = pq.read_table(open_report(path), use_threads=False)
            for name in ("image_scores", "caption_scores"):
                score_matrix(table.column(name), n_concepts)
        except (pa.ArrowException, OSError, ValueError, DamagedReport) as exc:
            return f"{path}: {_short(exc)}"
    return None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


@contextmanager
def naming_damage(files: list[Path], n_concepts: int):
    """Turn a failure while counting (bad score values, a corrupt page) into one line that
    names the damaged file."""
    import pyarrow as pa

    try:
        yield
    except (BadScores, pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException) and exc.errno is not None:
            raise  # the machine (disk full, permissions), not the data
        where = locate_damage(files, n_concepts)
        raise DamagedReport(where or f"a report file is damaged: {_short(exc)}") from None
