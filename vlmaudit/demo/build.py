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


def bad_samples(rng: random.Random, prefix: str) -> list[dict]:
    """What real crawls contain: a sample whose image is missing, a broken JPEG, a very long caption."""
    broken = synthetic_image(rng)[:200]  # a JPEG cut off after its headers
    long_caption = ("buy cheap watches online " * 800).strip()
    return [
        {"__key__": f"{prefix}-noimage", "txt": b"a caption whose image failed to download"},
        {"__key__": f"{prefix}-broken", "jpg": broken, "txt": b"a photo that arrived truncated"},
        {"__key__": f"{prefix}-longcaption", "jpg": synthetic_image(rng), "txt": long_caption.encode()},
    ]


def build_demo_shards(out_dir: Path, shards: int = 4, per_shard: int = 50, seed: int = 0,
                      with_bad_samples: bool = False) -> list[Path]:
    """Write `shards` tar files of `per_shard` samples each, keys numbered like img2dataset's; with
    `with_bad_samples`, the last shard also holds bad_samples()."""
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng, paths = random.Random(seed), []
    for s in range(shards):
        path = out_dir / f"{s:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                sink.write(demo_sample(rng, f"{s:05d}{i:04d}"))
            for sample in bad_samples(rng, f"{s:05d}") if with_bad_samples and s == shards - 1 else []:
                sink.write(sample)
        paths.append(path)
    return paths


SHAPE_CLASSES = {  # concept id -> colour: a learnable stand-in for real labelled data
    "swastika": (220, 30, 30), "gun-violence": (30, 180, 40), "pornography": (40, 60, 220), "self-cutting": (230, 200, 20),
}


def build_shape_dataset(out_dir: Path, taxonomy, per_class: int = 40, seed: int = 0, size: int = 64) -> tuple[Path, Path]:
    """A synthetic labelled set in the UnsafeConcepts layout: OUT/labelled/{labels.csv, *.png}
    (image, category, unsafe_concept, by the taxonomy's names) and OUT/safe/*.png. Each concept is
    a coloured shape on a grey, noisy background; safe images have grey shapes. MEANINGLESS as
    safety data: it only shows that train-head learns what it is given."""
    import csv

    rng = random.Random(seed)
    labelled, safe = Path(out_dir) / "labelled", Path(out_dir) / "safe"
    labelled.mkdir(parents=True, exist_ok=True)
    safe.mkdir(parents=True, exist_ok=True)
    concepts = {c.id: c for c in taxonomy.concepts}
    names = {c.id: c.name for c in taxonomy.categories}
    with open(labelled / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "category", "unsafe_concept"])
        for cid, colour in SHAPE_CLASSES.items():
            for i in range(per_class):
                name = f"{cid}-{i:04d}.png"
                (labelled / name).write_bytes(_shape_image(rng, colour, size))
                writer.writerow([name, names[concepts[cid].category], concepts[cid].name])
    for i in range(per_class):
        grey = rng.randrange(60, 200)
        (safe / f"safe-{i:04d}.png").write_bytes(_shape_image(rng, (grey, grey, grey), size))
    return labelled, safe


def _shape_image(rng: random.Random, colour: tuple[int, int, int], size: int) -> bytes:
    from PIL import Image, ImageDraw

    base = rng.randrange(90, 170)
    image = Image.new("RGB", (size, size), (base, base, base))
    pixels = image.load()
    for _ in range(size * 4):
        x, y = rng.randrange(size), rng.randrange(size)
        value = rng.randrange(256)
        pixels[x, y] = (value, value, value)
    draw = ImageDraw.Draw(image)
    extent = rng.randrange(size // 3, size * 2 // 3)
    x0, y0 = rng.randrange(size - extent), rng.randrange(size - extent)
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    jitter = tuple(max(0, min(255, c + rng.randrange(-20, 21))) for c in colour)
    shape((x0, y0, x0 + extent, y0 + extent), fill=jitter)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
