"""`vlmaudit distill`: the VLM judge's verdicts stored in judge or cascade reports become the
labels of a safety head trained on the user's own images (no human labels).

A verdict is a report row the judge decided (decided_by = "vlm") with an image P(unsafe) and
concept scores (a row without them is no verdict: its concept would be a guess): unsafe
when P(unsafe) >= the cutoff, labelled with the judge's top concept and its category; safe below.
The images are read again from the shards through the scanner's hardened path (only the judged
keys are decoded) and go through the frozen vision tower; training and validation are
head/training.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.head.data import SAFE
from vlmaudit.schema import ShardStatus

JUDGE = "vlm"


@dataclass(frozen=True)
class Verdict:
    concept: int  # taxonomy concept index or SAFE
    category: int  # taxonomy category index or SAFE


def judge_verdicts(files, meta: dict, taxonomy, cutoff: float = 0.5, limit: int | None = None) -> dict[str, dict[str, Verdict]]:
    """{shard name: {key: verdict}} from the rows the judge decided (at most LIMIT)."""
    import pyarrow.compute as pc

    from vlmaudit.report.reading import iter_batches, score_matrix

    if meta["concepts"] != taxonomy.concept_ids:
        raise UserError(f"{files[0]}: the reports were written with taxonomy {meta.get('taxonomy_version')}; "
                        "pass the matching --rules")
    category_of = taxonomy.concept_category_index()
    out: dict[str, dict[str, Verdict]] = {}
    count = 0
    for batch in iter_batches(files, ["shard", "key", "decided_by", "image_unsafe", "image_scores"]):
        mask = pc.and_(pc.and_(pc.equal(batch.column("decided_by"), JUDGE), pc.is_valid(batch.column("image_unsafe"))),
                       pc.is_valid(batch.column("image_scores")))  # no concept scores: no concept to learn
        batch = batch.filter(pc.fill_null(mask, False))
        if batch.num_rows == 0:
            continue
        unsafe_scores = batch.column("image_unsafe").to_numpy(zero_copy_only=False).astype(np.float64)
        if not (np.isfinite(unsafe_scores).all() and ((unsafe_scores >= 0) & (unsafe_scores <= 1)).all()):
            from vlmaudit.report.reading import BadScores

            raise BadScores("a report holds judge scores (image_unsafe) that are NaN, infinite or outside [0, 1]; "
                            "a verdict is never guessed from them")
        unsafe = unsafe_scores >= cutoff
        top = score_matrix(batch.column("image_scores"), len(taxonomy.concepts)).argmax(axis=1)
        for shard, key, bad, concept in zip(batch.column("shard").to_pylist(), batch.column("key").to_pylist(), unsafe, top):
            verdict = Verdict(int(concept), category_of[concept]) if bad else Verdict(SAFE, SAFE)
            out.setdefault(shard, {})[key] = verdict
            count += 1
            if limit is not None and count >= limit:
                return out
    if not out:
        raise UserError("no judge verdicts in these reports (rows with decided_by = vlm and an image score): "
                        "distill needs reports from `scan --backend vlm` or `--backend cascade`")
    return out


def judged_features(tower, jobs, verdicts: dict[str, dict[str, Verdict]], settings, progress=None):
    """(features [N, P, D] float16, concepts [N], categories [N]) for the judged samples found in
    the shards; a sample that cannot be decoded is skipped. `progress`: a vlmaudit.progress display."""
    from vlmaudit.head.preprocess import HeadPreprocessor
    from vlmaudit.progress import ProgressOptions
    from vlmaudit.scan.worker import prepare_shard

    progress = progress or ProgressOptions().start("distill")
    preprocessor = HeadPreprocessor(tower.image_processor)
    features, labels = [], []
    for job in jobs:
        wanted = verdicts.get(job.name, {})
        if not wanted:
            continue
        for batch in prepare_shard(job, preprocessor, settings, select=lambda s, w=wanted: s.key in w):
            progress.batch(len(batch.metas))
            if "pixel_values" not in batch.inputs:
                continue
            found = tower.features(batch.inputs["pixel_values"]).cpu().numpy().astype(np.float16)
            for meta in batch.metas:
                if meta.image_row >= 0 and meta.key in wanted:
                    features.append(found[meta.image_row])
                    labels.append(wanted[meta.key])
        progress.shard_done(job.name, ShardStatus.COMPLETE)
    if not features:
        raise UserError("none of the judged samples was found in --shards (the shards scanned for these reports?)")
    return (np.stack(features), np.array([v.concept for v in labels]), np.array([v.category for v in labels]))
