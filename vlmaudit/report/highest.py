"""When nothing reached the thresholds: the highest stored scores, so an empty dashboard still
says how close the data came (one DuckDB pass over the top-score columns)."""

from __future__ import annotations

from vlmaudit.report import engine


def highest_scores(files: list, n: int = 5) -> list[dict]:
    """The `n` samples with the highest top score in either modality: shard, key, concept, modality, score."""
    if not files or n <= 0:
        return []
    with engine.session(files, "highest scores") as con:
        rows = highest_rows(con, engine.source(files), n)
    return [_item(*row) for row in rows]


def highest_rows(con, source: str, n: int) -> list[tuple]:
    """The raw (shard, key, image concept, image score, caption concept, caption score) rows, best first."""
    return con.execute(
        f"SELECT shard, key, image_top_concept, image_top_score, caption_top_concept, caption_top_score "
        f"FROM {source} WHERE image_top_score IS NOT NULL OR caption_top_score IS NOT NULL "
        f"ORDER BY {ORDER} DESC, shard, key LIMIT {int(n)}").fetchall()


ORDER = "greatest(coalesce(image_top_score, -1), coalesce(caption_top_score, -1))"


def highest_order(row) -> tuple:
    """Sort key of highest_rows' rows in Python: the query's order (score descending, shard, key)."""
    best = max(row[3] if row[3] is not None else -1.0, row[5] if row[5] is not None else -1.0)
    return (-best, row[0] or "", row[1] or "")


def merge_highest(rows, n: int) -> list[dict]:
    """highest_scores over many files from each file's highest_rows."""
    return [_item(*row) for row in sorted(rows, key=highest_order)[:max(n, 0)]]


def _item(shard, key, image_concept, image_score, caption_concept, caption_score) -> dict:
    image_wins = (image_score if image_score is not None else -1.0) >= (caption_score if caption_score is not None else -1.0)
    concept, score, modality = (image_concept, image_score, "image") if image_wins else \
        (caption_concept, caption_score, "caption")
    return {"shard": shard, "key": key, "concept": concept, "modality": modality, "score": round(float(score), 4)}
