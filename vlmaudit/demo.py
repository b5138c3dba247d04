"""Synthetic LAION-style shards (img2dataset layout: KEY.jpg + KEY.txt + KEY.json) for demos,
tests and benchmarks. Images are drawn shapes; some captions name unsafe concepts."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

BENIGN = ["a red apple on a wooden table", "a mountain lake at sunrise", "a cat sleeping on a sofa",
          "a bowl of ramen with egg", "a city street in the rain", "a bar chart of quarterly sales",
          "two children playing football in a park", "a vintage car parked by the sea"]
UNSAFE = ["a flag with a swastika at a rally", "a man pointing a gun at a cashier", "graphic gore and blood",
          "a person smoking a cigarette", "a hacker breaking into computer systems", "a flat earth map with an ice wall"]


def synthetic_image(rng: random.Random, size: tuple[int, int] = (96, 80), fmt: str = "JPEG") -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
        box = (x0, y0, x0 + rng.randrange(8, size[0] // 2), y0 + rng.randrange(8, size[1] // 2))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def demo_sample(rng: random.Random, key: str, unsafe_rate: float = 0.2) -> dict:
    caption = rng.choice(UNSAFE if rng.random() < unsafe_rate else BENIGN)
    meta = {"url": f"https://example.invalid/{key}.jpg", "caption": caption, "key": key}
    return {"__key__": key, "jpg": synthetic_image(rng), "txt": caption.encode(), "json": json.dumps(meta).encode()}


def build_demo_shards(out_dir: Path, shards: int = 4, per_shard: int = 50, seed: int = 0) -> list[Path]:
    """Write `shards` tar files of `per_shard` samples each, keys numbered like img2dataset's."""
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng, paths = random.Random(seed), []
    for s in range(shards):
        path = out_dir / f"{s:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                sink.write(demo_sample(rng, f"{s:05d}{i:04d}"))
        paths.append(path)
    return paths
