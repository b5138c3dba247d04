"""Samples/s of the clip, head, vlm and cascade backends on the same demo shards, in one process.

Random-weight models of real size (their scores are meaningless; only speed is measured):
  clip     CLIP ViT-L/14 (the default scorer's size)
  head     safety head (16 tokens, width 256) on the same ViT-L/14 vision tower
  vlm      LLaVA-1.5-style judge: CLIP ViT-L/14-336 vision tower (576 image tokens) + a 0.5B-class LM
           (LLaVA-OneVision-0.5B's LM size; LLaVA-1.5-7B is ~14x more LM compute)
  cascade  clip on every sample, the vlm judge on the top --escalate-top percent of each shard

Each line: end-to-end scan samples/s, and the bare model forward on pre-made inputs (same batches).

    python examples/bench_backends.py --samples 32 --device cpu
    python examples/bench_backends.py --samples 512 --device cuda --batch-size 32   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--escalate-top", type=float, default=10.0)
    parser.add_argument("--backends", default="clip,head,vlm,cascade")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlmaudit-bench-") as tmp:
        results = run(Path(tmp), args)
    print(json.dumps(results, indent=2))


def run(root: Path, args) -> dict:
    from vlmaudit.backends import BackendOptions, build_backend
    from vlmaudit.commands.bench import time_bare_forward, time_scan
    from vlmaudit.demo.checkpoints import build_random_clip
    from vlmaudit.demo.build import build_demo_shards
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.demo.vlm_checkpoints import build_random_vlm

    rules = load_rules()
    paths = build_demo_shards(root / "shards", shards=args.shards, per_shard=args.samples // args.shards)
    clip = build_random_clip(root / "clip", size="vit-l-14")
    head = random_head(root / "head", clip, rules.taxonomy, args.device)
    judge = build_random_vlm(root / "judge", "llava-0.5b")
    options = {
        "clip": (ModelOptions(str(clip), args.device), BackendOptions()),
        "head": (ModelOptions(None, args.device), BackendOptions(head=head)),
        "vlm": (ModelOptions(str(judge), args.device), BackendOptions()),
        "cascade": (ModelOptions(str(clip), args.device),
                    BackendOptions(judge_model=str(judge), escalate_top=args.escalate_top)),
    }
    results = {}
    for name in args.backends.split(","):
        model_options, extra = options[name]
        backend = build_backend(name, rules, model_options, extra)
        bare = time_bare_forward(backend, paths, args.batch_size)
        end_to_end = time_scan(backend, rules, paths, root / f"out-{name}", args.batch_size, args.workers)
        samples = len(paths) * (args.samples // args.shards)
        results[name] = {"end_to_end_samples_per_s": round(samples / end_to_end, 3),
                         "bare_forward_samples_per_s": round(samples / bare, 3),
                         "device": backend.device, "precision": backend.precision}
        print(name, results[name], flush=True)
    base = results.get("clip", {}).get("end_to_end_samples_per_s")
    for row in results.values():
        row["vs_clip"] = round(row["end_to_end_samples_per_s"] / base, 4) if base else None
    return results


def random_head(out: Path, clip: Path, taxonomy, device: str) -> Path:
    """An untrained head on the CLIP tower, saved exactly as train-head saves one."""
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.head.model import SafetyHead, save_head
    from vlmaudit.backends.vision import VisionTower

    tower = VisionTower(ModelOptions(str(clip), device))
    head = SafetyHead(tower.width, len(taxonomy.concepts), len(taxonomy.categories))
    config = {"vision_model": str(clip), "vision_revision": tower.revision, "vision_dim": tower.width, "patches": 256,
              "dim": 256, "tokens": 16, "heads": 8, "concepts": taxonomy.concept_ids,
              "categories": taxonomy.category_ids, "taxonomy_version": taxonomy.tag}
    save_head(head, out, config)
    return out


if __name__ == "__main__":
    main()
