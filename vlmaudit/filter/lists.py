"""Apply a policy to scan reports: keep / drop / review lists with the reasons, and a summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.rulebook.policy import ACTIONS, MODALITIES, Policy
from vlmaudit.report.reading import iter_batches, read_stats, report_files, score_matrix
from vlmaudit.scan.writer import write_json_atomic

COLUMNS = ["shard", "key", "sample_index", "url", "status", "image_scores", "caption_scores"]


def incomplete_shards(report_dir: Path) -> list[str]:
    """Shards planned in run.json (or with stats) that have no finished report, and partial files."""
    report_dir = Path(report_dir)
    stats = read_stats(report_dir)
    run_file = report_dir / "run.json"
    planned = json.loads(run_file.read_text()).get("planned_shards", []) if run_file.is_file() else []
    problems = []
    for name in dict.fromkeys(planned + sorted(stats)):
        status = stats.get(name, {}).get("status")
        if status is None or not (report_dir / f"{name}.parquet").is_file():
            problems.append(f"{name} ({'failed' if status == 'failed' else 'not scanned'})")
    problems += [f"{p.name} (unfinished)" for p in sorted(report_dir.glob(".*.partial"))]
    return problems


def output_schema():
    import pyarrow as pa

    reason = pa.struct([("rule", pa.string()), ("action", pa.string()), ("modality", pa.string()),
                        ("threshold", pa.float32()), ("image_score", pa.float32()), ("caption_score", pa.float32())])
    return pa.schema([("shard", pa.string()), ("key", pa.string()), ("sample_index", pa.int32()),
                      ("url", pa.string()), ("status", pa.string()), ("action", pa.string()),
                      ("reasons", pa.list_(reason))])


class DecisionWriter:
    """Three Parquet files written under temporary names and renamed together at the end."""

    def __init__(self, out_dir: Path):
        import pyarrow.parquet as pq

        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.schema = out_dir, output_schema()
        self.partial = {a: out_dir / f".{a}.parquet.partial" for a in ACTIONS}
        self.writers = {a: pq.ParquetWriter(p, self.schema, compression="zstd") for a, p in self.partial.items()}

    def write(self, action: str, rows: dict) -> None:
        import pyarrow as pa

        self.writers[action].write_table(pa.Table.from_pydict(rows, schema=self.schema))

    def commit(self) -> None:
        for action, writer in self.writers.items():
            writer.close()
            os.replace(self.partial[action], self.out_dir / f"{action}.parquet")


def run_filter(report_dir: Path, policy: Policy, out_dir: Path, on_failed: str, allow_partial: bool) -> dict:
    missing = incomplete_shards(report_dir)
    if missing and not allow_partial:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise UserError(f"{report_dir}: {len(missing)} shard(s) have no finished report: {shown}; "
                        "finish the scan or pass --allow-partial")
    files = report_files(report_dir)
    writer = DecisionWriter(Path(out_dir))
    counts = {a: 0 for a in ACTIONS}
    rule_counts: dict[str, int] = {}
    for batch in iter_batches(files, COLUMNS):
        _filter_batch(batch, policy, ACTIONS.index(on_failed), writer, counts, rule_counts)
    writer.commit()
    summary = {"policy": policy.name, "policy_fingerprint": policy.fingerprint, "on_failed": on_failed,
               "report_dir": str(report_dir), "samples": sum(counts.values()), "counts": counts,
               "rules_fired": dict(sorted(rule_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
               "incomplete_shards": missing}
    write_json_atomic(Path(out_dir) / "summary.json", summary)
    return summary


def _filter_batch(batch, policy: Policy, on_failed: int, writer, counts: dict, rule_counts: dict) -> None:
    n = len(policy.concepts)
    image, caption = score_matrix(batch.column("image_scores"), n), score_matrix(batch.column("caption_scores"), n)
    fired = policy.fired(image, caption)
    status = np.asarray(batch.column("status").to_numpy(zero_copy_only=False), dtype=object)
    failed = status != "ok"
    action = np.where(failed, np.maximum(policy.decide(fired), on_failed), policy.decide(fired))
    reasons = [_reasons(policy, fired[i], image[i], caption[i], status[i], failed[i], on_failed, rule_counts)
               for i in range(len(status))]
    base = {c: batch.column(c).to_pylist() for c in ("shard", "key", "sample_index", "url", "status")}
    for index, name in enumerate(ACTIONS):
        rows = np.nonzero(action == index)[0]
        counts[name] += len(rows)
        if len(rows):
            chosen = {c: [values[i] for i in rows] for c, values in base.items()}
            writer.write(name, {**chosen, "action": [name] * len(rows), "reasons": [reasons[i] for i in rows]})


def _reasons(policy, fired_row, image_row, caption_row, status, failed, on_failed, rule_counts) -> list[dict]:
    out = []
    if failed:
        out.append({"rule": f"status:{status}", "action": ACTIONS[on_failed]})
    for c in np.nonzero(fired_row)[0]:
        rule = f"concept:{policy.concepts[c]}"
        rule_counts[rule] = rule_counts.get(rule, 0) + 1
        out.append({"rule": rule, "action": ACTIONS[policy.action[c]], "modality": MODALITIES[policy.modality[c]],
                    "threshold": float(policy.threshold[c]), "image_score": _num(image_row[c]),
                    "caption_score": _num(caption_row[c])})
    return out


def _num(value) -> float | None:
    return None if np.isnan(value) else float(value)
