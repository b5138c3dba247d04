"""Run the eval: read images in batches (an unreadable image is counted, not fatal), ask the
probe, compute the metrics."""

from __future__ import annotations

import numpy as np

from vlmaudit.errors import UserError


def load_batch(paths_or_bytes: list, origins: list[str]) -> tuple[list, list[int]]:
    """(decoded PIL images, indices that decoded)."""
    from vlmaudit.evaluate.data import read_eval_image

    images, ok = [], []
    for i, (image, origin) in enumerate(zip(paths_or_bytes, origins)):
        try:
            images.append(read_eval_image(image, origin))
            ok.append(i)
        except UserError:
            continue
    return images, ok


def evaluate_judge(probe, items, taxonomy, batch: int = 8, progress=None, text_concepts: str = "all") -> dict:
    """text_concepts: "all" (the paper: 75 concepts x 5 prompts) or "present" (only the concepts
    that have images here; the others' text alignment is left out)."""
    from vlmaudit.evaluate.metrics import judge_metrics

    progress = progress or silent()
    perception, unsafe, kept = [], [], []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        images, ok = load_batch([it.image for it in chunk], [it.origin for it in chunk])
        if images:
            p, u = probe.ask_images(images, [chunk[i].options for i in ok])
            perception.append(p)
            unsafe.append(u)
            kept += [start + i for i in ok]
        progress.batch(len(chunk))
    _need_some(kept, items)
    text = _text_alignment(probe, taxonomy, {items[i].concept for i in kept} if text_concepts == "present" else None)
    result = judge_metrics(np.concatenate(perception), np.array([items[i].correct for i in kept]),
                           np.concatenate(unsafe), text, np.array([items[i].concept for i in kept]),
                           taxonomy.concept_category_index(), taxonomy.category_ids)
    gap = result.pop("per_concept_gap")
    result["largest_gaps"] = _largest_gaps(gap, taxonomy)
    return {"kind": "judge", "items": len(items), "evaluated": len(kept), "unreadable": len(items) - len(kept), **result}


def evaluate_scorer(probe, items, taxonomy, benign=None, thresholds=None, batch: int = 32, progress=None) -> dict:
    from vlmaudit.evaluate.metrics import scorer_metrics

    progress = progress or silent()
    scores, kept = _scores(probe, [it.image for it in items], [it.origin for it in items], batch, progress)
    _need_some(kept, items)
    benign_scores = None
    if benign is not None:
        benign_scores, _ = _scores(probe, benign, [str(p) for p in benign], batch, progress)
    result = scorer_metrics(scores, np.array([items[i].concept for i in kept]), taxonomy.concept_category_index(),
                            taxonomy.category_ids, benign_scores, thresholds)
    return {"kind": "scorer", "items": len(items), "evaluated": len(kept), "unreadable": len(items) - len(kept), **result}


def _scores(probe, images_in, origins, batch, progress):
    chunks, kept = [], []
    for start in range(0, len(images_in), batch):
        images, ok = load_batch(images_in[start:start + batch], origins[start:start + batch])
        if images:
            chunks.append(probe.scores(images))
            kept += [start + i for i in ok]
        progress.batch(len(origins[start:start + batch]))
    return (np.concatenate(chunks) if chunks else np.zeros((0, 0))), kept


def silent():
    from vlmaudit.progress import ProgressOptions

    return ProgressOptions(quiet=True).start("eval")


def _text_alignment(probe, taxonomy, only: set[int] | None) -> np.ndarray:
    """[C, prompts] P(unsafe) from the text prompts; NaN rows for concepts not asked."""
    asked = sorted(only) if only is not None else list(range(len(taxonomy.concepts)))
    values = probe.ask_texts([taxonomy.concepts[i].name for i in asked])
    out = np.full((len(taxonomy.concepts), values.shape[1]), np.nan)
    out[asked] = values
    return out


def _need_some(kept, items) -> None:
    if not kept:
        raise UserError(f"none of the {len(items)} eval images could be read")


def _largest_gaps(gap: np.ndarray, taxonomy, top: int = 5) -> list[dict]:
    present = np.flatnonzero(~np.isnan(gap))
    order = present[np.argsort(-np.abs(gap[present]), kind="stable")][:top]
    return [{"concept": taxonomy.concepts[i].id, "gap": float(gap[i])} for i in order]
