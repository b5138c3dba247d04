"""Local vs Ray engine on the same shards: wall time of the whole `vlmaudit scan` command
(model load and, for Ray, cluster start included) and the ratio.

    python examples/bench_engines.py --size vit-b-32 --shards 8 --per-shard 64

Both runs score the same random-weight CLIP on CPU in fp32. The local engine decodes in
--local-workers DataLoader processes; Ray runs --ray-workers actors of --cpus-per-worker CPUs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def scan(shards: list[Path], out: Path, model: Path, batch: int, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "vlmaudit", "scan", *map(str, shards), "--out", str(out), "--model", str(model),
           "--device", "cpu", "--precision", "fp32", "--batch-size", str(batch), "-q", *extra]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="vit-b-32", help="random model size: tiny, vit-b-32, vit-l-14")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--local-workers", type=int, default=1)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    args = parser.parse_args()

    from vlmaudit.demo.build import build_demo_shards
    from vlmaudit.demo.checkpoints import build_random_clip

    with tempfile.TemporaryDirectory(prefix="vlmaudit-engines-") as tmp:
        root = Path(tmp)
        shards = build_demo_shards(root / "shards", shards=args.shards, per_shard=args.per_shard)
        model = build_random_clip(root / "model", size=args.size)
        local = scan(shards, root / "local", model, args.batch_size, ["--workers", str(args.local_workers)])
        ray = scan(shards, root / "ray", model, args.batch_size,
                   ["--engine", "ray", "--workers", str(args.ray_workers), "--cpus-per-worker", str(args.cpus_per_worker)])
    samples = args.shards * args.per_shard
    print(f"{samples} samples, random {args.size}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"local engine ({args.local_workers} decode workers)   {local:7.1f} s  {samples / local:8.1f} samples/s")
    print(f"ray engine ({args.ray_workers} actors x {args.cpus_per_worker:g} CPU)  {ray:7.1f} s  {samples / ray:8.1f} samples/s")
    print(f"ray / local wall time   {ray / local:7.2f}x")


if __name__ == "__main__":
    main()
