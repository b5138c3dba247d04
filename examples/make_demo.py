"""Build demo shards and a tiny RANDOM CLIP checkpoint for an offline smoke run.

    python examples/make_demo.py demo/
    vlmaudit scan demo/shards --model demo/tiny-clip --out demo/reports
    vlmaudit report demo/reports

The checkpoint has random weights: every score it produces is MEANINGLESS. It exists so the whole
pipeline (real transformers loading, real decoding, real Parquet) runs without hub access. For real
scores use the default model (openai/clip-vit-large-patch14) on a machine with network access.
"""

import sys
from pathlib import Path

from vlmaudit.checkpoints import build_random_clip
from vlmaudit.demo import build_demo_shards


def main(out: str = "demo", shards: int = 4, per_shard: int = 50) -> None:
    root = Path(out)
    paths = build_demo_shards(root / "shards", shards=shards, per_shard=per_shard)
    build_random_clip(root / "tiny-clip", size="tiny")
    print(f"wrote {len(paths)} shards x {per_shard} samples to {root / 'shards'}")
    print(f"wrote a tiny random CLIP (meaningless scores) to {root / 'tiny-clip'}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
