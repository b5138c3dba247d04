"""The review sheet and its design file: written by `sample`, read back (labels filled in) by
`estimate`.

REVIEW/review.csv (and review.parquet, the same rows) holds one row per drawn sample: shard,
key, sample_index, url, stratum, inclusion_probability, weight, top_category, top_score,
score_<category> per category, and the columns the reviewer fills: `labels` and `note`.
`labels` is empty (not reviewed yet, ignored), `safe` (none of the categories), or the
categories the sample shows, comma-separated (ids or names as `vlmaudit concepts` lists them,
case-insensitive), e.g. `sexual, violence`. REVIEW/design.json records how the rows were drawn.

Label files are untrusted: size and row budgets, every problem is one error line naming the row.
Text cells that a spreadsheet would run as a formula (= + - @ first) are written with a leading
apostrophe, which is removed again on reading.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vlmaudit.errors import UserError

SHEET, PARQUET, DESIGN, PAGE = "review.csv", "review.parquet", "design.json", "review.html"
FORMAT = "vlmaudit-review-design"
MAX_BYTES = 256 << 20
MAX_ROWS = 1_000_000
MAX_DESIGN_BYTES = 4 << 20
FORMULA = ("=", "+", "-", "@", "\t", "\r")
SAFE = "safe"


def write_sheet(out: Path, rows: list[dict], design: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmaudit.storage.localfiles import atomic_output, write_text_atomic

    columns = list(rows[0]) if rows else ["shard", "key", "labels", "note"]
    with atomic_output(out / SHEET) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[_cell(row[c]) for c in columns] for row in rows])
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in columns})
    for name in ("labels", "note"):  # empty now, text once filled in
        table = table.set_column(table.column_names.index(name), name, pa.array([None] * table.num_rows, pa.string()))
    with atomic_output(out / PARQUET) as handle:
        pq.write_table(table, handle)
    write_text_atomic(out / DESIGN, json.dumps(design, indent=2))


def _cell(value):
    if isinstance(value, str) and value.startswith(FORMULA):
        return "'" + value
    return "" if value is None else value


def _uncell(value) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA) else text


def locate(labels: Path) -> tuple[Path, Path]:
    """(labels file, design file): a REVIEW directory means REVIEW/review.csv; design.json is
    read from the labels file's directory."""
    labels = Path(labels)
    if labels.is_dir():
        labels = labels / SHEET
    if not labels.is_file():
        raise UserError(f"--labels {labels}: no such file (a review sheet written by `vlmaudit sample`)")
    design = labels.parent / DESIGN
    if not design.is_file():
        raise UserError(f"--labels {labels}: no {DESIGN} beside it (keep the sheet in the folder `vlmaudit sample` wrote)")
    return labels, design


def read_design(path: Path) -> dict:
    if path.stat().st_size > MAX_DESIGN_BYTES:
        raise UserError(f"{path}: larger than {MAX_DESIGN_BYTES >> 20} MiB")
    try:
        design = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON ({str(exc)[:100]})") from None
    params = design.get("params") if isinstance(design, dict) else None
    if design.get("format") != FORMAT or not isinstance(params, dict) or not isinstance(design.get("strata"), list):
        raise UserError(f"{path}: not a design file written by `vlmaudit sample`")
    for name in ("bands", "size", "seed"):
        if not isinstance(params.get(name), int) or isinstance(params.get(name), bool):
            raise UserError(f"{path}: params.{name} must be an integer")
    if params.get("mode") not in ("top", "category"):
        raise UserError(f"{path}: params.mode must be top or category")
    return design


def read_labels(path: Path, categories: list[str], names: list[str]) -> dict:
    """{(shard, key): frozenset of category ids} of the labelled rows (empty `labels`: skipped)."""
    table = _read_table(path)
    for column in ("shard", "key", "labels"):
        if column not in table.column_names:
            raise UserError(f"--labels {path}: no {column!r} column (a review sheet has shard, key, labels)")
    lookup = {c.lower(): c for c in categories} | {n.lower(): c for n, c in zip(names, categories)}
    found, first_row = {}, {}
    columns = [table.column(c).to_pylist() for c in ("shard", "key", "labels")]
    for row, (shard, key, text) in enumerate(zip(*columns), start=2):  # row 1 is the header
        ident = (_uncell(shard) or "", _uncell(key) or "")
        if ident in first_row:
            raise UserError(f"--labels {path} row {row}: duplicate key {_show(ident)} (also row {first_row[ident]})")
        first_row[ident] = row
        parsed = _parse(_uncell(text), lookup, path, row)
        if parsed is not None:
            found[ident] = parsed
    return found


def _parse(text, lookup: dict, path, row: int):
    tokens = [t.strip().lower() for t in (text or "").split(",") if t.strip()]
    if not tokens:
        return None
    if SAFE in tokens:
        if len(tokens) > 1:
            raise UserError(f"--labels {path} row {row}: 'safe' together with categories ({_short(text)})")
        return frozenset()
    unknown = [t for t in tokens if t not in lookup]
    if unknown:
        raise UserError(f"--labels {path} row {row}: {_short(unknown[0])!r} is not a category of the reports' taxonomy "
                        f"(use {', '.join(sorted(set(lookup.values())))} or safe, comma-separated)")
    return frozenset(lookup[t] for t in tokens)


def _short(text) -> str:
    from vlmaudit.report.safetext import safe_text

    return safe_text(str(text))[:60]


def _show(ident) -> str:
    return f"{_short(ident[0])}/{_short(ident[1])}"


def _read_table(path: Path):
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"--labels {path}: larger than {MAX_BYTES >> 20} MiB")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=None)
        else:
            import pyarrow as pa
            import pyarrow.csv as pcsv

            with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
                names = next(csv.reader([handle.readline(1 << 20)]), [])
            options = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True)
            table = pcsv.read_csv(path, convert_options=options)
    except Exception as exc:  # noqa: BLE001 (pyarrow raises several types for malformed files)
        raise UserError(f"--labels {path}: cannot read it ({' '.join(str(exc).split())[:200]})") from None
    if table.num_rows > MAX_ROWS:
        raise UserError(f"--labels {path}: more than {MAX_ROWS:,} rows")
    for column in ("shard", "key", "labels"):
        if column in table.column_names and str(table.schema.field(column).type) not in ("string", "large_string", "null"):
            raise UserError(f"--labels {path}: column {column!r} must hold text")
    return table
