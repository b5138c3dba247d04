"""Benchmark `vlmaudit match`'s matching core: a PDQ bank of N random hashes against M report rows,
streamed in the same Arrow batches `match` reads from reports (vlmaudit.match.run.match_batches),
plus an MD5 bank of the same size. Prints rows/s per bank kind and peak memory (ru_maxrss).

    python examples/bench_match.py                       # 1 M bank x 10 M rows (the target size)
    python examples/bench_match.py --bank-size 100000 --rows 1000000

Random PDQ hashes are spread more evenly than real ones (real banks cluster), so multi-index
hashing buckets are fuller in practice; 1 % of the rows are planted near-duplicates (<= 31 bits).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def bank(kind: str, size: int, rng):
    from vlmaudit.match.banks import KINDS, Bank

    hashes = rng.integers(0, 256, (size, KINDS[kind]), dtype=np.uint8)
    return Bank(f"bench-{kind}", kind, hashes, [str(i) for i in range(size)])


def batches(rows: int, batch: int, pdq_bank, rng, planted: float = 0.01):
    import pyarrow as pa

    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        pdq = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        near = rng.random(n) < planted
        pdq[near] = pdq_bank.hashes[rng.integers(0, len(pdq_bank.hashes), int(near.sum()))]
        pdq[near, 0] ^= 0x0F  # 4 bits away
        md5 = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        yield pa.record_batch({
            "shard": pa.array([f"{start // 1_000_000:05d}"] * n), "key": pa.array(np.arange(start, start + n).astype(str)),
            "url": pa.nulls(n, pa.string()),
            "image_md5": pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(md5.tobytes())]),
            "image_pdq": pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(pdq.tobytes())]),
            "image_pdq_quality": pa.array(np.full(n, 100, np.int16)),
        })


def main() -> None:
    from vlmaudit.match.index import build
    from vlmaudit.match.run import MatchOptions, match_batches

    parser = argparse.ArgumentParser()
    parser.add_argument("--bank-size", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=65536)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pdq, md5 = bank("pdq", args.bank_size, rng), bank("md5", args.bank_size, rng)
    started = time.perf_counter()
    build(pdq, 31)
    index_s = time.perf_counter() - started
    for banks in ([pdq], [md5]):
        started = time.perf_counter()
        result = match_batches(batches(args.rows, args.batch, pdq, rng), banks, MatchOptions())
        seconds = time.perf_counter() - started
        print(f"{banks[0].kind:>4} bank {args.bank_size:,} x {args.rows:,} rows: {seconds:.1f} s "
              f"({args.rows / seconds:,.0f} rows/s, index build included), {len(result.rows['key']):,} matches")
    print(f"PDQ index build alone: {index_s:.1f} s; peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
