"""Build demo shards, a tiny RANDOM CLIP, a tiny RANDOM LLaVA judge and a synthetic labelled set
(coloured shapes) for an offline smoke run of every backend.

    python examples/make_demo.py demo/
    vlmaudit scan demo/shards --model demo/tiny-clip --out demo/reports
    vlmaudit report demo/reports
    vlmaudit scan demo/shards --backend vlm --model demo/tiny-llava --out demo/reports-vlm
    vlmaudit train-head --data demo/shapes/labelled --safe-images demo/shapes/safe \
        --vision-model demo/tiny-clip --out demo/head
    vlmaudit scan demo/shards --backend head --head demo/head --out demo/reports-head
    vlmaudit scan demo/shards --backend cascade --model demo/tiny-clip --judge-model demo/tiny-llava \
        --escalate-top 10 --out demo/reports-cascade

The checkpoint has random weights: every score it produces is MEANINGLESS. It exists so the whole
pipeline (real transformers loading, real decoding, real Parquet) runs without hub access. For real
scores use the default model (openai/clip-vit-large-patch14) on a machine with network access.
"""

import sys
from pathlib import Path

from vlmaudit.demo.checkpoints import build_random_clip
from vlmaudit.demo.build import build_demo_shards, build_shape_dataset
from vlmaudit.rulebook.load import load_rules
from vlmaudit.demo.vlm_checkpoints import build_random_vlm


def main(out: str = "demo", shards: int = 4, per_shard: int = 50) -> None:
    root = Path(out)
    paths = build_demo_shards(root / "shards", shards=shards, per_shard=per_shard)
    build_random_clip(root / "tiny-clip", size="tiny")
    print(f"wrote {len(paths)} shards x {per_shard} samples to {root / 'shards'}")
    print(f"wrote a tiny random CLIP (meaningless scores) to {root / 'tiny-clip'}")
    build_random_vlm(root / "tiny-llava", "llava")
    print(f"wrote a tiny random LLaVA judge (meaningless answers) to {root / 'tiny-llava'}")
    build_shape_dataset(root / "shapes", load_rules().taxonomy)
    print(f"wrote a synthetic labelled set (coloured shapes standing for concepts) to {root / 'shapes'}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
