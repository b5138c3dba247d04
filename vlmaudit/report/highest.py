"""When nothing reached the thresholds: the highest stored scores, so an empty dashboard still
says how close the data came (one DuckDB pass over the top-score columns)."""

from __future__ import annotations

from vlmaudit.report import engine


def highest_scores(files: list, n: int = 5) -> list[dict]:
    """The `n` samples with the highest top score in either modality: shard, key, concept, modality, score."""
    if not files or n <= 0:
        return []
    with engine.session(files, "highest scores") as con:
        rows = con.execute(
            f"SELECT shard, key, image_top_concept, image_top_score, caption_top_concept, caption_top_score "
            f"FROM {engine.source(files)} "
            f"WHERE image_top_score IS NOT NULL OR caption_top_score IS NOT NULL "
            f"ORDER BY greatest(coalesce(image_top_score, -1), coalesce(caption_top_score, -1)) DESC, shard, key "
            f"LIMIT {int(n)}").fetchall()
    return [_item(*row) for row in rows]


def _item(shard, key, image_concept, image_score, caption_concept, caption_score) -> dict:
    image_wins = (image_score if image_score is not None else -1.0) >= (caption_score if caption_score is not None else -1.0)
    concept, score, modality = (image_concept, image_score, "image") if image_wins else \
        (caption_concept, caption_score, "caption")
    return {"shard": shard, "key": key, "concept": concept, "modality": modality, "score": round(float(score), 4)}
