"""Write a shard's summary (report.shard_summary) beside its report, before its stats mark it done.

The writer keeps the columns a summary needs while it writes the Parquet; at commit the summarizer
the composition root gave it (report.shard_summary.summarize_table: the same SQL a full `report`
pass runs) counts them. Local: each file goes to a unique temporary name
and is renamed into place (the histograms first, so a summary never names a missing file); object
stores: uploaded under the final name (an object appears whole or not at all).
"""

from __future__ import annotations

SUMMARY_SUFFIX, HIST_SUFFIX = ".summary.json", ".hist.bin"
NEEDED_COLUMNS = ("shard", "status", "sample_index", "key", "url", "caption", "image_scores", "caption_scores",
                  "image_flagged_concepts", "caption_flagged_concepts", "image_flagged_scores",
                  "caption_flagged_scores", "image_top_concept", "image_top_score", "caption_top_concept",
                  "caption_top_score")


def summary_name(name: str) -> str:
    return f"{name}{SUMMARY_SUFFIX}"


def hist_name(name: str) -> str:
    return f"{name}{HIST_SUFFIX}"


def kept_columns(schema) -> list[str]:
    return [c for c in NEEDED_COLUMNS if c in schema.names]


def write_summary(out, name: str, summary: dict, hist: bytes) -> None:
    """hist.bin, then summary.json, each whole (temporary name + rename, or one object upload)."""
    import json

    if out.remote:
        with out.open(hist_name(name), "wb") as handle:
            handle.write(hist)
        out.write_json(summary_name(name), summary)
        return
    write_bytes_atomic(out.local(hist_name(name)), hist)
    write_bytes_atomic(out.local(summary_name(name)), json.dumps(summary, sort_keys=True).encode())


def write_bytes_atomic(path, data: bytes) -> None:
    import os

    from vlmaudit.storage.localfiles import create_exclusive, temp_path

    tmp = temp_path(path, "tmp")
    try:
        with create_exclusive(tmp) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_summary(out, name: str) -> None:
    out.remove(summary_name(name))
    out.remove(hist_name(name))
