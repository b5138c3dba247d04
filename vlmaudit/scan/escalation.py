"""The cascade's shard-level second stage: judge the samples the first stage escalated.

Runs once a shard's first-stage rows are complete (held in memory by the Scanner, which hands the
refined table to a plain ShardWriter that writes it once): the escalation says which samples to
judge (`escalation.escalated(table)`), they are read again from the shard through the same reader
(retries, safety net) and scored by `escalation.judge`, and their rows replace the first stage's,
which keep their scores in screen_image_scores / screen_caption_scores.
"""

from __future__ import annotations

from dataclasses import replace

from vlmaudit.scan.rows import RowBuilder
from vlmaudit.scan.scorer import Escalation
from vlmaudit.scan.worker import prepare_shard


def refine_shard(escalation: Escalation, job, table, settings, rows, score_batch):
    """Judge the escalated samples of one shard; returns (table, stats additions)."""
    wanted = escalation.escalated(table)
    if wanted.size == 0:
        return table, {"escalated": 0, "judged": 0}
    judged = _judge(escalation.judge, job, set(wanted.tolist()), settings, rows, score_batch)
    merged = _merge(table, judged) if judged is not None else table
    return merged, {"escalated": int(wanted.size), "judged": judged.num_rows if judged is not None else 0}


def _judge(judge, job, wanted: set[int], settings, rows, score_batch):
    import pyarrow as pa

    info = judge.describe()
    builder = RowBuilder(rows.taxonomy, rows.thresholds, rows.schema, f"{info['model']}@{info['revision']}")
    batches = []
    select = lambda sample: sample.index in wanted  # noqa: E731
    settings = replace(settings, decode="cpu")  # the judge's own processor decodes on the CPU
    for prepared in prepare_shard(job, judge.preprocessor, settings, select):
        if prepared.metas:
            image, caption, extras = score_batch(judge, prepared)
            batches.append(builder.build(job.name, prepared.metas, image, caption, extras, judge.name))
    return pa.Table.from_batches(batches, schema=rows.schema) if batches else None


def _merge(table, judged):
    """Replace the judged samples' rows, keeping the first stage's scores beside the judge's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    judged_index = judged.column("sample_index")
    replaced = pc.is_in(table.column("sample_index"), value_set=judged_index)
    screen = table.filter(replaced).sort_by("sample_index")
    judged = judged.sort_by("sample_index")
    for modality in ("image", "caption"):
        column = f"screen_{modality}_scores"
        judged = judged.set_column(judged.schema.get_field_index(column), column, screen.column(f"{modality}_scores"))
    return pa.concat_tables([table.filter(pc.invert(replaced)), judged]).sort_by("sample_index")
