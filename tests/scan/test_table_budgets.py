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

# VmHWM: the peak resident memory of this interpreter alone (ru_maxrss would carry over the
# test process's own peak through fork and exec)
READ = textwrap.dedent("""
    import json, sys
    from vlmaudit.scan.parquet_source import iter_table_samples
    from vlmaudit.scan.table_columns import ColumnChoice
    from vlmaudit.scan.tario import TarEnd
    def peak_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    before = peak_mb()
    end = TarEnd()
    with open(sys.argv[1], "rb") as stream:
        rows = [(s.key, s.status, s.error, s.image) for s in
                iter_table_samples(stream, sys.argv[1], end, ColumnChoice(), 64 << 20, 10000)]
    print(json.dumps({"peak_mb": peak_mb(), "before_mb": before, "status": end.status,
                      "rows": [[k, str(s) if s else None, e, None if i is None else len(i)] for k, s, e, i in rows]}))
""")


def bomb_read_in_a_fresh_interpreter(writer: str, path, most_bytes: int) -> dict:
    """PATH written by the WRITER script with a 1.9 GB cell (at most MOST_BYTES on disk), then read
    by READ in an interpreter of its own: its peak memory and rows."""
    subprocess.run([sys.executable, "-c", writer, str(path), str(1_900_000_000)], check=True, timeout=600)
    assert path.stat().st_size < most_bytes
    out = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_declared_huge_cell_is_too_large_before_decompression(tmp_path):
    result = bomb_read_in_a_fresh_interpreter(WRITE_BOMB, tmp_path / "bomb.parquet", 256 << 10)
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


WRITE_ARROW_BOMB = textwrap.dedent("""
    import sys
    import pyarrow as pa
    size = int(sys.argv[2])
    offsets = pa.py_buffer(pa.array([0, size], pa.int32()).buffers()[1])
    image = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(bytes(size))])
    small = pa.table({"key": ["a", "b"], "image": [b"x", b"y"]})
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sys.argv[1], small.schema, options=options) as writer:
        writer.write_table(small.slice(0, 1))
        writer.write_table(pa.table({"key": ["bomb"], "image": image}))
        writer.write_table(small.slice(1))
""")


def arrow_rows(path, max_bytes):
    end = TarEnd()
    with open(path, "rb") as stream:
        rows = list(iter_table_samples(stream, str(path), end, ColumnChoice(), max_bytes, 1000))
    return rows, end


def test_arrow_batch_declaring_a_huge_cell_is_never_read(tmp_path):
    result = bomb_read_in_a_fresh_interpreter(WRITE_ARROW_BOMB, tmp_path / "bomb.arrow", 1 << 20)
    assert result["peak_mb"] < 600, result
    assert [r[:2] for r in result["rows"]] == [["a", None], ["bomb/1", "too_large"], ["b", None]], result
    assert "declares 19000000" in result["rows"][1][2] and [r[3] for r in result["rows"]] == [1, None, 1], result


def test_arrow_file_and_stream_skip_only_the_batch_over_budget(tmp_path):
    table = pa.table({"key": [f"k{i}" for i in range(6)], "image": [bytes([i]) * 100 for i in range(6)]})
    big = pa.table({"key": ["big"], "image": [bytes(3 << 20)]})
    for name, new in (("s.arrow", pa.ipc.new_stream), ("f.arrow", pa.ipc.new_file)):
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        with new(tmp_path / name, table.schema, options=options) as writer:
            writer.write_table(table.slice(0, 3))
            writer.write_table(big)
            writer.write_table(table.slice(3))
        rows, end = arrow_rows(tmp_path / name, 1 << 20)
        assert [s.key for s in rows] == ["k0", "k1", "k2", f"{name[0]}/3", "k3", "k4", "k5"], name
        assert [s.status for s in rows].count("too_large") == 1 and rows[3].status == "too_large", name
        assert [s.image for i, s in enumerate(rows) if i != 3] == [bytes([i]) * 100 for i in range(6)], name
        assert end.status in (None, "complete"), end.error
        assert len(arrow_rows(tmp_path / name, 8 << 20)[0]) == 7 and arrow_rows(tmp_path / name, 8 << 20)[0][3].key == "big"
