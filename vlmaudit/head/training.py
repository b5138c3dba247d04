"""`vlmaudit train-head`: train the safety head on frozen vision features.

Features are extracted once (the vision tower never trains) and cached on disk next to the head,
keyed by the vision model's revision and the data, so a second run with other hyper-parameters
skips extraction. Training uses class-balanced sampling over the concepts (+ safe) and holds out
a stratified validation split; per-category precision/recall go to the console and metrics.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vlmaudit.head.data import SAFE, Example, read_image


@dataclass
class TrainSettings:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    val_fraction: float = 0.2
    dim: int = 256
    tokens: int = 16
    heads: int = 8
    seed: int = 0
    extract_batch: int = 32


def extract_features(tower, examples: list[Example], cache_dir: Path, batch: int, log=print) -> np.ndarray:
    """[N, P, D] float16 features, from the cache when it matches this model and data."""
    key = _cache_key(tower, examples)
    path, meta = cache_dir / "features.npy", cache_dir / "features.json"
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()).get("key") == key:
        log(f"features: reusing the cache in {cache_dir}")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    chunks = []
    for start in range(0, len(examples), batch):
        images = [read_image(e) for e in examples[start:start + batch]]
        pixels = tower.image_processor(images=images, return_tensors="pt")["pixel_values"]
        chunks.append(tower.features(pixels).cpu().numpy().astype(np.float16))
        log(f"features: {min(start + batch, len(examples))}/{len(examples)} images")
    features = np.concatenate(chunks)
    np.save(path, features, allow_pickle=False)
    meta.write_text(json.dumps({"key": key, "shape": list(features.shape)}))
    return features


def _cache_key(tower, examples: list[Example]) -> str:
    digest = hashlib.sha256(f"{tower.options.model}@{tower.revision}".encode())
    for e in examples:
        digest.update(hashlib.sha256(e.image).digest() if isinstance(e.image, bytes) else str(e.image).encode())
        digest.update(f":{e.concept}:{e.category};".encode())
    return digest.hexdigest()


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: shuffle, hold out round(fraction * n) (at least one when n >= 2, none when n == 1)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = 0 if len(members) < 2 else max(1, round(fraction * len(members)))
        val += members[:held].tolist()
        train += members[held:].tolist()
    return np.array(sorted(train), np.int64), np.array(sorted(val), np.int64)


def train(features: np.ndarray, concepts: np.ndarray, categories: np.ndarray, n_concepts: int, n_categories: int,
          settings: TrainSettings, device: str, log=print):
    """Returns (head, train indices, val indices). Labels use -1 for safe."""
    import torch

    from vlmaudit.head.model import SafetyHead

    torch.manual_seed(settings.seed)
    concept_y = np.where(concepts == SAFE, n_concepts, concepts)
    category_y = np.where(categories == SAFE, n_categories, categories)
    train_idx, val_idx = stratified_split(concept_y, settings.val_fraction, settings.seed)
    head = SafetyHead(features.shape[2], n_concepts, n_categories, settings.dim, settings.tokens, settings.heads).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.01)
    sampler = _balanced_sampler(concept_y[train_idx], settings.seed)
    steps = max(1, len(train_idx) // settings.batch_size)
    for epoch in range(settings.epochs):
        head.train()
        total = 0.0
        for _ in range(steps):
            order = np.sort(train_idx[sampler(settings.batch_size)])
            x = torch.from_numpy(np.asarray(features[order], np.float32)).to(device)
            concept_logits, category_logits = head(x)
            loss = (torch.nn.functional.cross_entropy(concept_logits, torch.from_numpy(concept_y[order]).to(device))
                    + torch.nn.functional.cross_entropy(category_logits, torch.from_numpy(category_y[order]).to(device)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        log(f"epoch {epoch + 1}/{settings.epochs}: loss {total / steps:.4f}")
    return head.eval(), train_idx, val_idx


def _balanced_sampler(labels: np.ndarray, seed: int):
    """Draw indices with probability 1 / (size of their class): every class equally often."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    weights /= weights.sum()
    return lambda size: rng.choice(len(labels), size=size, replace=True, p=weights)


def predict(head, features: np.ndarray, device: str, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(concept class [N], category class [N]); the last class is safe."""
    import torch

    concepts, categories = [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch):
            x = torch.from_numpy(np.asarray(features[start:start + batch], np.float32)).to(device)
            concept_logits, category_logits = head(x)
            concepts.append(concept_logits.argmax(-1).cpu().numpy())
            categories.append(category_logits.argmax(-1).cpu().numpy())
    return np.concatenate(concepts), np.concatenate(categories)


def evaluate(truth_concept, truth_category, pred_concept, pred_category, category_ids: list[str]) -> dict:
    """Accuracies and per-category (and safe) precision / recall / support on the validation split."""
    per_category = {}
    for k, name in enumerate(category_ids + ["safe"]):
        predicted, actual = pred_category == k, truth_category == k
        hits = int((predicted & actual).sum())
        per_category[name] = {
            "precision": hits / int(predicted.sum()) if predicted.any() else None,
            "recall": hits / int(actual.sum()) if actual.any() else None,
            "support": int(actual.sum()),
        }
    unsafe_true, unsafe_pred = truth_category != len(category_ids), pred_category != len(category_ids)
    return {
        "samples": int(len(truth_concept)),
        "concept_accuracy": float((pred_concept == truth_concept).mean()) if len(truth_concept) else None,
        "category_accuracy": float((pred_category == truth_category).mean()) if len(truth_concept) else None,
        "unsafe_vs_safe_accuracy": float((unsafe_true == unsafe_pred).mean()) if len(truth_concept) else None,
        "per_category": per_category,
    }


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)
