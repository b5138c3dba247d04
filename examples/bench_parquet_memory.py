"""Resident memory of reading one Parquet row group of growing size: vlmaudit's reader vs pyarrow's
default ParquetFile reads (both 16 rows per batch, image column only).

    python examples/bench_parquet_memory.py [WORKDIR]

Each file has ONE row group of N 1 MiB values written with one value per data page, the worst
case for memory. Prints the peak RSS growth (MiB) of a fresh interpreter while it iterates.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
import sys
import pyarrow.parquet as pq
from vlmaudit.scan.parquet_source import open_table

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20

path, mode = sys.argv[1], sys.argv[2]
stream = open(path, "rb")
if mode == "vlmaudit":
    schema, batches = open_table(stream, path)
    batches = batches(["jpg"])
else:
    batches = pq.ParquetFile(stream).iter_batches(16, columns=["jpg"])
before = peak = rss_mib()
for batch in batches:
    peak = max(peak, rss_mib())
print(peak - before)
"""


def write(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    blob = os.urandom(1 << 20)
    table = pa.table({"jpg": [blob[i:] + blob[:i] for i in range(rows)]})
    pq.write_table(table, path, row_group_size=rows, use_dictionary=False, compression="none", write_batch_size=1)


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    print("row group MiB  vlmaudit MiB  pyarrow defaults MiB")
    for rows in (64, 256, 512):
        path = work / f"rows{rows}.parquet"
        write(path, rows)
        growth = [subprocess.run([sys.executable, "-c", PROBE, str(path), mode], capture_output=True, text=True,
                                 check=True).stdout.strip() for mode in ("vlmaudit", "defaults")]
        print(f"{rows:13d}  {growth[0]:>12}  {growth[1]:>20}")
        path.unlink()


if __name__ == "__main__":
    main()
