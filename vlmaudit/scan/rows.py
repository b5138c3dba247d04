"""Turn one prepared batch plus its scores into a pyarrow RecordBatch of report rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlmaudit import flags as F
from vlmaudit.scan.hashing import ImageHashes
from vlmaudit.schema import category_column


@dataclass
class RowMeta:
    """A sample after decoding, before scoring; image_row/caption_row index the score arrays."""

    key: str
    index: int
    url: str | None
    caption: str | None
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    notes: list[str] = field(default_factory=list)
    image_row: int = -1
    caption_row: int = -1
    hashes: ImageHashes | None = None  # None: --no-hashes or no image bytes


class RowBuilder:
    def __init__(self, taxonomy, thresholds, schema, model_tag: str):
        self.taxonomy, self.thresholds, self.schema, self.model_tag = taxonomy, thresholds, schema, model_tag
        self.masks = F.category_masks(taxonomy.concept_category_index(), len(taxonomy.categories))
        self.concept_ids = np.array(taxonomy.concept_ids + [None], dtype=object)  # index -1 -> None
        self.category_ids = np.array(taxonomy.category_ids, dtype=object)

    def build(self, shard: str, metas: list[RowMeta], image_scores, caption_scores, extras: dict | None = None,
              decided_by: str | None = None):
        import pyarrow as pa

        image = self._align(metas, image_scores, "image_row")
        caption = self._align(metas, caption_scores, "caption_row")
        columns = self._sample_columns(shard, metas)
        columns.update(self._score_columns("image", image))
        columns.update(self._score_columns("caption", caption))
        columns.update(self._flag_columns(image, caption))
        columns["model"] = [self.model_tag] * len(metas)
        columns["taxonomy_version"] = [self.taxonomy.tag] * len(metas)
        columns.update(self._judge_columns(metas, extras or {}, image, caption, decided_by))
        columns.update(_hash_columns(metas))
        return pa.RecordBatch.from_pydict(columns, schema=self.schema)

    def _judge_columns(self, metas, extras: dict, image, caption, decided_by) -> dict:
        """Judge verdicts (P(unsafe)), rationale, which stage decided, and modality disagreement."""
        image_flagged, caption_flagged = self.flagged_any(image, "image"), self.flagged_any(caption, "caption")
        scored = ~np.isnan(image).all(axis=1) | ~np.isnan(caption).all(axis=1)
        both = ~np.isnan(image).all(axis=1) & ~np.isnan(caption).all(axis=1)
        image_why = _aligned_list(metas, extras.get("image_rationale"), "image_row")
        caption_why = _aligned_list(metas, extras.get("caption_rationale"), "caption_row")
        return {
            "image_unsafe": _nullable(_aligned_values(metas, extras.get("image_unsafe"), "image_row")),
            "caption_unsafe": _nullable(_aligned_values(metas, extras.get("caption_unsafe"), "caption_row")),
            "modalities_disagree": [bool(i != c) if b else None for i, c, b in zip(image_flagged, caption_flagged, both)],
            "decided_by": [decided_by if s else None for s in scored],
            "screen_image_scores": [None] * len(metas), "screen_caption_scores": [None] * len(metas),
            "rationale": [i if i is not None else c for i, c in zip(image_why, caption_why)],
        }

    def flagged_any(self, scores: np.ndarray, modality: str) -> np.ndarray:
        return F.concept_flags(scores, getattr(self.thresholds, modality)).any(axis=1)

    def _align(self, metas, scores, attr) -> np.ndarray:
        out = np.full((len(metas), len(self.taxonomy.concepts)), np.nan, np.float32)
        rows = np.array([getattr(m, attr) for m in metas], dtype=np.int64)
        has = rows >= 0
        if has.any() and scores is not None:
            out[has] = scores[rows[has]]
        return out

    @staticmethod
    def _sample_columns(shard, metas) -> dict:
        return {
            "shard": [shard] * len(metas), "key": [m.key for m in metas], "sample_index": [m.index for m in metas],
            "url": [m.url for m in metas], "caption": [m.caption for m in metas], "width": [m.width for m in metas],
            "height": [m.height for m in metas], "status": [m.status for m in metas],
            "error": [m.error for m in metas], "notes": [m.notes or None for m in metas],
        }

    def _score_columns(self, modality, scores) -> dict:
        import pyarrow as pa

        valid = ~np.isnan(scores).all(axis=1)
        flat = pa.array(scores[valid].ravel(), pa.float32())
        offsets = np.concatenate([[0], np.cumsum(np.where(valid, scores.shape[1], 0))]).astype(np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(~valid))
        index, top = F.top_concept(scores)
        columns = {f"{modality}_scores": lists, f"{modality}_top_concept": self.concept_ids[index].tolist(),
                   f"{modality}_top_score": _nullable(top)}
        per_category = F.category_max(scores, self.masks)
        for k, cid in enumerate(self.taxonomy.category_ids):
            columns[category_column(modality, cid)] = _nullable(per_category[:, k])
        return columns

    def _flag_columns(self, image, caption) -> dict:
        image_flags = F.concept_flags(image, self.thresholds.image)
        caption_flags = F.concept_flags(caption, self.thresholds.caption)
        categories = F.category_flags(image_flags | caption_flags, self.masks)
        image_any, caption_any = image_flags.any(axis=1), caption_flags.any(axis=1)
        return {
            "image_flagged": _masked(image_any, np.isnan(image).all(axis=1)),
            "caption_flagged": _masked(caption_any, np.isnan(caption).all(axis=1)),
            "flagged": (image_any | caption_any).tolist(),
            "image_flagged_concepts": [self.concept_ids[:-1][row].tolist() for row in image_flags],
            "caption_flagged_concepts": [self.concept_ids[:-1][row].tolist() for row in caption_flags],
            "image_flagged_scores": [s[row].tolist() for s, row in zip(image, image_flags)],
            "caption_flagged_scores": [s[row].tolist() for s, row in zip(caption, caption_flags)],
            "flagged_categories": [self.category_ids[row].tolist() for row in categories],
        }


def _hash_columns(metas) -> dict:
    hashes = [m.hashes or ImageHashes() for m in metas]
    return {"image_sha256": [h.sha256 for h in hashes], "image_md5": [h.md5 for h in hashes],
            "image_pdq": [h.pdq for h in hashes], "image_pdq_quality": [h.pdq_quality for h in hashes]}


def _aligned_values(metas, values, attr) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in _aligned_list(metas, values, attr)], np.float32)


def _aligned_list(metas, values, attr) -> list:
    if values is None:
        return [None] * len(metas)
    return [values[getattr(m, attr)] if getattr(m, attr) >= 0 else None for m in metas]


def _nullable(values: np.ndarray):
    import pyarrow as pa

    return pa.array(values, pa.float32(), mask=np.isnan(values))


def _masked(values: np.ndarray, null: np.ndarray) -> list:
    return [None if n else bool(v) for v, n in zip(values, null)]
