"""Stored scores of the labelled samples, per category or concept and modality (reports only)."""

from __future__ import annotations

import numpy as np

MODALITIES = {"image": ("image",), "caption": ("caption",), "both": ("image", "caption")}


def labelled_scores(keys: np.ndarray, meta: dict, files) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """(key -> row, image scores [m, C], caption scores [m, C]) for the report rows whose key is
    labelled; NaN where a modality was not scored. A key seen twice keeps its last row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from vlmaudit.report.reading import iter_batches, score_matrix

    wanted = pa.array(np.unique(keys).tolist(), pa.string())
    n_concepts = len(meta["concepts"])
    found, images, captions = {}, [], []
    for batch in iter_batches(files, ["key", "image_scores", "caption_scores"]):
        batch = batch.filter(pc.is_in(batch.column("key"), value_set=wanted))
        if batch.num_rows == 0:
            continue
        offset = sum(len(x) for x in images)
        for i, key in enumerate(batch.column("key").to_pylist()):
            found[key] = offset + i
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
