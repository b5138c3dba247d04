"""Scale benchmark for `vlmaudit report`: generate a large synthetic report, time the summary.

    python examples/bench_report.py DIR --rows 10000000 --files 100     # generate (once)
    python examples/bench_report.py DIR --time                          # time summary + peak RSS

Rows use the real report schema; scores are drawn from a skewed distribution so a few percent
of rows are flagged. Nothing here needs the model or any shard.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def generate(out: Path, rows: int, files: int, seed: int = 0) -> None:
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.schema import report_meta, report_schema
    from vlmaudit.scan.writer import open_parquet_writer

    rules = load_rules()
    meta = report_meta(rules.taxonomy, rules.thresholds, {"model": "synthetic", "backend": "synthetic", "revision": "0"})
    schema = report_schema(rules.taxonomy, meta)
    builder = RowBuilder(rules.taxonomy, rules.thresholds, schema, "synthetic@0")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_file, chunk = rows // files, 20_000
    for f in range(files):
        name = f"{f:05d}"
        with open_parquet_writer(out / f"{name}.parquet", schema) as writer:
            for start in range(0, per_file, chunk):
                n = min(chunk, per_file - start)
                metas = [RowMeta(f"{name}{i:07d}", i, None, None, "ok", image_row=j, caption_row=j)
                         for j, i in enumerate(range(start, start + n))]
                image = rng.beta(0.6, 6.0, (n, 75)).astype(np.float32)
                caption = rng.beta(0.6, 6.0, (n, 75)).astype(np.float32)
                writer.write_batch(builder.build(name, metas, image, caption))
        stats = {"shard": name, "status": "complete", "rows": per_file, "started_at": 0.0, "finished_at": 1.0}
        (out / f"{name}.stats.json").write_text(json.dumps(stats))
        print(f"\rwrote {f + 1}/{files} files", end="", flush=True)
    print()


def time_summary(report_dir: Path) -> None:
    code = ("import json, sys, time; from vlmaudit.report.summary import summarize; t = time.perf_counter(); "
            "s = summarize(sys.argv[1]); print(json.dumps({'seconds': time.perf_counter() - t, "
            "'samples': s['overview']['samples'], 'flagged': s['overview']['flagged']}))")
    result = subprocess.run([sys.executable, "-c", code, str(report_dir)], capture_output=True, text=True, check=True)
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    numbers["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(numbers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--time", action="store_true", help="time the summary of an existing DIR")
    args = parser.parse_args()
    if not args.time:
        started = time.perf_counter()
        generate(args.dir, args.rows, args.files)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.0f} s")
    time_summary(args.dir)


if __name__ == "__main__":
    main()
