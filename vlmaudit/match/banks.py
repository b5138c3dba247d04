"""Hash banks as the field exchanges them, read strictly: PDQ lists as ThreatExchange / HMA export
them (hex hash per row, optional id / label / source columns, CSV or TSV, header optional), MD5 and
SHA-256 lists (one hex per line) and a previous `vlmaudit match` output (Parquet). The kind comes
from a `KIND:` prefix on the path, the header, or the hex length; a 64-hex list that could be PDQ
or SHA-256 must say which. Bank contents are never printed: errors name the file and line only."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError

KINDS = {"pdq": 32, "md5": 16, "sha256": 32}  # bytes per hash
MAX_BANK_BYTES = 4 << 30
HEX = re.compile(r"[0-9a-fA-F]+")
HASH_COLUMNS = ("hash", "pdq", "md5", "sha256", "signal", "signal_value", "indicator", "image_hash")
ID_COLUMNS = ("id", "bank_entry_id", "content_id", "signal_id", "indicator_id")


@dataclass
class Bank:
    name: str
    kind: str  # pdq | md5 | sha256
    hashes: np.ndarray  # (n, bytes) uint8
    ids: list[str]


def parse_bank_arg(text: str) -> tuple[str | None, Path]:
    """`FILE` or `KIND:FILE` (pdq:, md5:, sha256:)."""
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in KINDS:
        return kind.lower(), Path(rest)
    return None, Path(text)


def read_bank(text: str) -> list[Bank]:
    """The bank(s) in one file: one, or one per hash kind for a previous match output."""
    kind, path = parse_bank_arg(text)
    if not path.is_file():
        raise UserError(f"bank {path}: not a readable file")
    if path.stat().st_size > MAX_BANK_BYTES:
        raise UserError(f"bank {path}: larger than {MAX_BANK_BYTES >> 30} GiB")
    if path.suffix == ".parquet":
        return _previous_output(path, kind)
    return [_text_bank(path, kind)]


def _text_bank(path: Path, kind: str | None) -> Bank:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"bank {path}: not UTF-8 text (byte {exc.start})") from None
    rows = [(n, r) for n, r in enumerate(_rows(text), 1) if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    header, rows = _header(rows)
    hash_col, id_col = _columns(header, path)
    kind = kind or _kind_from(header, hash_col, rows, path)
    width = KINDS[kind]
    hashes = np.zeros((len(rows), width), np.uint8)
    ids = []
    for i, (line, row) in enumerate(rows):
        hashes[i] = _hex(row[hash_col].strip() if hash_col < len(row) else "", width, path, line, kind)
        ids.append(row[id_col].strip()[:256] if id_col is not None and id_col < len(row) else f"{path.name}:{line}")
    if not rows:
        raise UserError(f"bank {path}: no hashes in it (empty)")
    return Bank(path.stem, kind, hashes, ids)


def _rows(text: str):
    sample = text[:4096]
    delimiter = "\t" if "\t" in sample else ","
    return csv.reader(io.StringIO(text), delimiter=delimiter)


def _header(rows: list) -> tuple[list[str] | None, list]:
    if rows and not HEX.fullmatch(rows[0][1][0].strip() or "-"):
        return [c.strip().lower() for c in rows[0][1]], rows[1:]
    return None, rows


def _columns(header, path) -> tuple[int, int | None]:
    if header is None:
        return 0, 1
    hash_col = next((header.index(c) for c in HASH_COLUMNS if c in header), None)
    if hash_col is None:
        raise UserError(f"bank {path}: line 1 is a header without a hash column ({', '.join(HASH_COLUMNS)})")
    return hash_col, next((header.index(c) for c in ID_COLUMNS if c in header), None)


def _kind_from(header, hash_col: int, rows: list, path: Path) -> str:
    named = header[hash_col] if header else ""
    if named in KINDS:
        return named
    lower = path.name.lower()
    for kind in ("sha256", "md5", "pdq"):
        if kind in lower:
            return kind
    first = rows[0][1][hash_col].strip() if rows else ""
    if len(first) == 32:
        return "md5"
    if len(first) == 64 and (header is not None or any(len(r) > 1 for _, r in rows[:10])):
        return "pdq"  # ThreatExchange / HMA rows: hash plus id, label, source columns
    raise UserError(f"bank {path}: cannot tell whether its 64-hex hashes are PDQ or SHA-256; "
                    f"pass --bank pdq:{path} or --bank sha256:{path}")


def _hex(token: str, width: int, path, line: int, kind: str) -> np.ndarray:
    if len(token) != 2 * width or not HEX.fullmatch(token):
        raise UserError(f"bank {path}: line {line}: not a {kind} hash ({2 * width} hex digits expected)")
    return np.frombuffer(bytes.fromhex(token), np.uint8)


def _previous_output(path: Path, kind: str | None) -> list[Bank]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["kind", "image_hash", "bank", "bank_entry_id"])
    except Exception as exc:  # noqa: BLE001 - any reader failure of untrusted bytes: one line
        raise UserError(f"bank {path}: not a vlmaudit match output ({type(exc).__name__})") from None
    rows = table.to_pylist()
    kinds = sorted({r["kind"] for r in rows}) if kind is None else [kind]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not rows:
        raise UserError(f"bank {path}: no hashes in it (empty)" if not rows else f"bank {path}: unknown hash kind in it")
    return [_previous_kind(path, rows, k, len(kinds) > 1) for k in kinds]


def _previous_kind(path: Path, rows: list, kind: str, several: bool) -> Bank:
    chosen = [(line, r) for line, r in enumerate(rows, 2) if r["kind"] == kind]
    if not chosen:
        raise UserError(f"bank {path}: no {kind} hashes in it")
    hashes = np.stack([_hex(r["image_hash"] or "", KINDS[kind], path, line, kind) for line, r in chosen])
    name = f"{path.stem}-{kind}" if several else path.stem
    return Bank(name, kind, hashes, [f"{r['bank']}:{r['bank_entry_id']}"[:256] for _, r in chosen])
