"""Stored scores of the labelled samples, per category or concept and modality (reports only)."""

from __future__ import annotations

import numpy as np

from vlmaudit.errors import UserError

MODALITIES = {"image": ("image",), "caption": ("caption",), "both": ("image", "caption")}


def labelled_rows(labels, meta: dict, files) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(report row of each label or -1, image scores, caption scores): samples are keyed by (shard,
    key); labels without a `shard` column match by key only while that key is in one shard."""
    found, image, caption = labelled_scores(labels.keys, meta, files)
    if labels.shards is not None:
        return np.array([found.get((s, k), -1) for s, k in zip(labels.shards, labels.keys)], np.int64), image, caption
    by_key: dict[str, list] = {}
    for shard, key in found:
        by_key.setdefault(key, []).append(shard)
    for key in labels.keys:
        if len(by_key.get(key, ())) > 1:
            from vlmaudit.report.safetext import safe_text

            shown = ", ".join(safe_text(s) for s in sorted(by_key[key])[:3])
            raise UserError(f"--labels: key {safe_text(key)} is in {len(by_key[key])} shards ({shown}); add a `shard` "
                            "column to the labels so each label names its sample")
    return np.array([found[(by_key[k][0], k)] if k in by_key else -1 for k in labels.keys], np.int64), image, caption


def labelled_scores(keys: np.ndarray, meta: dict, files) -> tuple[dict[tuple[str, str], int], np.ndarray, np.ndarray]:
    """((shard, key) -> row, image scores [m, C], caption scores [m, C]) for the report rows whose
    key is labelled; NaN where a modality was not scored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from vlmaudit.report.reading import iter_batches, score_matrix

    wanted = pa.array(np.unique(keys).tolist(), pa.string())
    n_concepts = len(meta["concepts"])
    found, images, captions = {}, [], []
    for batch in iter_batches(files, ["shard", "key", "image_scores", "caption_scores"]):
        batch = batch.filter(pc.is_in(batch.column("key"), value_set=wanted))
        if batch.num_rows == 0:
            continue
        offset = sum(len(x) for x in images)
        for i, sample in enumerate(zip(batch.column("shard").to_pylist(), batch.column("key").to_pylist(), strict=True)):
            found[sample] = offset + i
        images.append(score_matrix(batch.column("image_scores"), n_concepts))
        captions.append(score_matrix(batch.column("caption_scores"), n_concepts))
    empty = np.zeros((0, n_concepts), np.float32)
    return found, np.concatenate(images) if images else empty, np.concatenate(captions) if captions else empty


def group_scores(image: np.ndarray, caption: np.ndarray, members: np.ndarray, modality: str) -> np.ndarray:
    """[m] score of a group of concepts (boolean mask): the max over its concepts, and over both
    modalities for `both` (NaN only where nothing was scored)."""
    import warnings

    per = {"image": image, "caption": caption}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: not scored, stay NaN
        parts = [np.nanmax(per[m][:, members], axis=1) for m in MODALITIES[modality]]
    return parts[0] if len(parts) == 1 else np.fmax(parts[0], parts[1])
