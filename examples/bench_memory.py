"""Peak RSS of `vlmaudit scan` vs number of shards and shard size (tiny random model, offline).

    python examples/bench_memory.py [WORKDIR]

Prints the peak resident memory of the scan process (ru_maxrss of the largest process waited
for: the main process, which holds the model) for 5 shards, 50 shards and one 20,000-sample shard.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vlmaudit.demo.checkpoints import build_random_clip
from vlmaudit.demo.build import build_demo_shards


def peak_rss_mib(args: list[str]) -> tuple[float, float]:
    """Run a command in a fresh interpreter; (peak RSS MiB of it and its workers, seconds)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - started


def main(workdir: str | None = None) -> None:
    root = Path(workdir or tempfile.mkdtemp(prefix="vlmaudit-mem-"))
    model = build_random_clip(root / "model", size="tiny")
    cases = {
        "5 shards x 200": build_demo_shards(root / "s5", shards=5, per_shard=200),
        "50 shards x 200": build_demo_shards(root / "s50", shards=50, per_shard=200),
        "1 shard x 20000": build_demo_shards(root / "s1", shards=1, per_shard=20000),
    }
    for name, shards in cases.items():
        out = root / f"out-{name.split()[0]}-{len(shards)}"
        args = [sys.executable, "-m", "vlmaudit", "scan", str(shards[0].parent), "--out", str(out),
                "--model", str(model), "-q", "--workers", "2"]
        rss, seconds = peak_rss_mib(args)
        print(f"{name:>16}: peak RSS {rss:7.1f} MiB, {seconds:6.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:2])
