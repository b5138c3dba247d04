"""Parquet budgets from the page headers, before anything is decompressed: a tiny file that declares
a 1.9 GB cell is marked `too_large` without inflating it (peak memory of a fresh interpreter)."""

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq

from vlmaudit.scan.parquet_source import iter_table_samples
from vlmaudit.scan.table_columns import ColumnChoice
from vlmaudit.scan.tario import TarEnd

WRITE_BOMB = textwrap.dedent("""
    import sys
    import pyarrow as pa, pyarrow.parquet as pq
    size = int(sys.argv[2])
    cell = pa.py_buffer(bytes(size))  # zeros: compresses to almost nothing
    image = pa.Array.from_buffers(pa.binary(), 3, [None, pa.py_buffer(pa.array([0, 0, size, size], pa.int32()).buffers()[1]),
                                                   cell])
    table = pa.table({"key": ["a", "bomb", "c"], "jpg": image, "caption": ["x", "y", "z"]})
    pq.write_table(table, sys.argv[1], compression="zstd", compression_level=19, use_dictionary=False)
""")

READ = textwrap.dedent("""
    import json, resource, sys
    from vlmaudit.scan.parquet_source import iter_table_samples
    from vlmaudit.scan.table_columns import ColumnChoice
    from vlmaudit.scan.tario import TarEnd
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    end = TarEnd()
    with open(sys.argv[1], "rb") as stream:
        rows = [(s.key, s.status, s.error, s.image) for s in
                iter_table_samples(stream, sys.argv[1], end, ColumnChoice(), 64 << 20, 10000)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "before_mb": before / 1024, "status": end.status,
                      "rows": [[k, str(s) if s else None, e, None if i is None else len(i)] for k, s, e, i in rows]}))
""")


def test_declared_huge_cell_is_too_large_before_decompression(tmp_path):
    path = tmp_path / "bomb.parquet"
    subprocess.run([sys.executable, "-c", WRITE_BOMB, str(path), str(1_900_000_000)], check=True, timeout=600)
    assert path.stat().st_size < 256 << 10
    out = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["peak_mb"] < 600, result  # inflating the cell alone would take 1.9 GB
    keys = [r[0] for r in result["rows"]]
    assert keys == ["a", "bomb", "c"], result  # every row is reported, its key kept
    assert {r[1] for r in result["rows"]} == {"too_large"} and all(r[3] is None for r in result["rows"]), result
    assert "a page of 19000000" in result["rows"][1][2] and "'jpg'" in result["rows"][1][2], result


def test_row_groups_within_budget_are_read_whole(tmp_path):
    """Pages under the budget: every row read, the big row group's neighbours untouched."""
    path = tmp_path / "mixed.parquet"
    small = pa.table({"key": [f"k{i}" for i in range(40)], "jpg": [bytes([i]) * 1000 for i in range(40)]})
    big = pa.table({"key": ["big"], "jpg": [bytes(3 << 20)]})
    with pq.ParquetWriter(path, small.schema, compression="zstd") as writer:
        writer.write_table(small.slice(0, 20))
        writer.write_table(big)
        writer.write_table(small.slice(20))
    end = TarEnd()
    with open(path, "rb") as stream:
        rows = list(iter_table_samples(stream, str(path), end, ColumnChoice(), 1 << 20, 1000))
    assert [s.key for s in rows] == [f"k{i}" for i in range(20)] + ["big"] + [f"k{i}" for i in range(20, 40)]
    assert [s.status for s in rows].count("too_large") == 1 and rows[20].status == "too_large"
    assert all(s.image == bytes([i]) * 1000 for i, s in enumerate(rows[:20]))
    assert end.status is None or end.status == "complete", end.error
