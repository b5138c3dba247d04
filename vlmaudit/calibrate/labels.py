"""Human labels for calibration: CSV or Parquet with `key`, `category` or `concept`, `label`.

A row says whether sample KEY shows the category (or concept): label 1/0, true/false, yes/no or
unsafe/safe. Ids or the taxonomy's names are accepted (case-insensitive). The file is untrusted
input: at most MAX_ROWS rows and MAX_BYTES bytes; a bad row is a one-line error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError

MAX_BYTES = 2 << 30
MAX_ROWS = 20_000_000
POSITIVE = {"1", "true", "yes", "unsafe", "positive"}
NEGATIVE = {"0", "false", "no", "safe", "negative"}


@dataclass
class Labels:
    per: str  # "category" or "concept"
    keys: np.ndarray  # object [n]
    targets: np.ndarray  # object [n]: category or concept ids
    values: np.ndarray  # bool [n]: True = shows it
    shards: np.ndarray | None = None  # object [n] when the labels name the shard (needed when keys repeat)


def load_labels(path: Path, per: str, ids: list[str], names: list[str]) -> Labels:
    """Read and validate; IDS / NAMES are the report's category or concept ids and names."""
    table = _read_table(Path(path))
    for column in ("key", per, "label"):
        if column not in table.column_names:
            raise UserError(f"--labels {path}: no {column!r} column (need key, {per}, label; have "
                            f"{', '.join(table.column_names[:10])})")
    keys = np.array([str(k) for k in table.column("key").to_pylist()], dtype=object)
    lookup = {i.lower(): i for i in ids} | {n.lower(): i for n, i in zip(names, ids)}
    targets = np.array([_target(v, lookup, path, per, row) for row, v in enumerate(table.column(per).to_pylist())],
                       dtype=object)
    values = np.array([_label(v, path, row) for row, v in enumerate(table.column("label").to_pylist())], bool)
    shards = (np.array([str(s) for s in table.column("shard").to_pylist()], dtype=object)
              if "shard" in table.column_names else None)
    return Labels(per, keys, targets, values, shards)


def _read_table(path: Path):
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"--labels {path}: larger than {MAX_BYTES >> 20} MiB")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            options = pcsv.ConvertOptions(column_types={"key": "string", "label": "string"}, strings_can_be_null=False)
            table = pcsv.read_csv(path, convert_options=options)
    except Exception as exc:  # pyarrow raises several types for malformed files
        raise UserError(f"--labels {path}: cannot read it as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                        f"({' '.join(str(exc).split())[:200]})") from None
    if table.num_rows > MAX_ROWS:
        raise UserError(f"--labels {path}: more than {MAX_ROWS:,} rows")
    return table


def _target(value, lookup: dict, path, per: str, row: int) -> str:
    found = lookup.get(str(value).strip().lower()) if value is not None else None
    if found is None:
        raise UserError(f"--labels {path} row {row + 1}: unknown {per} {str(value)[:80]!r}")
    return found


def _label(value, path, row: int) -> bool:
    text = str(value).strip().lower()
    if text in POSITIVE:
        return True
    if text in NEGATIVE:
        return False
    raise UserError(f"--labels {path} row {row + 1}: label {text[:40]!r} is not 1/0, true/false, yes/no or unsafe/safe")
