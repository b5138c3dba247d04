"""Is the run complete? Which planned shards have no finished report, which were cut short and how
many samples they gave, and how many samples failed by status.

One assessment (`assess`) for every output: the renderers call the helpers below, so the
dashboard, JSON, Markdown, HTML, the audit card and `filter`'s summary.json say the same thing.
JSON carries `complete` and `incomplete` at top level (see /work/coord/SHARED.md item 4).
"""

from __future__ import annotations

import fnmatch

SHOWN = 10  # names listed per line in the text outputs; JSON has them all


def assess(report_dir, shard_glob: str | None = None, status_counts: dict | None = None) -> dict:
    """{"complete": bool, "incomplete": {...}} of REPORT_DIR (a path, or an opened ReportSet or
    reading.ReportDir, whose listing and stats are reused). `status_counts` ({status: samples}
    of the rows counted) gives the failed samples by status; without it the shards' stats do."""
    from vlmaudit.report.reportset import listing_of

    listing = listing_of(report_dir, missing_ok=True)
    stats = listing.stats()
    planned = listing.run().get("planned_shards", [])
    names = [n for n in dict.fromkeys(planned + sorted(stats)) if not shard_glob or fnmatch.fnmatch(n, shard_glob)]
    present = listing.shard_names()
    missing, held, failed, truncated = [], [], [], []
    for name in names:
        status = stats.get(name, {}).get("status")
        if status == "failed":
            failed.append(name)
        elif status is None or name not in present:
            (held if _held(listing, name) else missing).append(name)
        elif status == "truncated":
            truncated.append({"shard": name, "samples_read": int(stats[name].get("rows") or 0)})
    if status_counts is None:
        wanted = set(names)
        status_counts = _stats_status(s for n, s in stats.items() if n in wanted)
    by_status = {k: int(v) for k, v in sorted(status_counts.items()) if k != "ok" and v}
    incomplete = {"planned_shards": len(planned), "finished_shards": len(names) - len(missing) - len(held) - len(failed),
                  "missing_shards": missing, "failed_shards": failed, "held_shards": held, "truncated": truncated,
                  "failed_by_status": by_status}
    return {"complete": not (missing or held or failed or truncated), "incomplete": incomplete}


def _held(listing, name: str) -> bool:
    """A live writer's claim on the shard (local directories; object stores have no claims)."""
    from vlmaudit.storage.localfiles import ShardClaim

    return not listing.remote and listing.has_claim(name) and ShardClaim.holder(listing.location, name) is not None


def _stats_status(stats) -> dict:
    out: dict = {}
    for s in stats:
        counts = s.get("status_counts")
        for status, n in (counts.items() if isinstance(counts, dict) else ()):
            if isinstance(status, str) and isinstance(n, int) and not isinstance(n, bool):
                out[status] = out.get(status, 0) + n
    return out


def _names(items: list) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def lines(info: dict, escape=str) -> list[str]:
    """The assessment as sentences; `escape` makes shard names safe for the output format."""
    if "complete" not in info:
        return []
    inc = info["incomplete"]
    planned = inc.get("planned_shards", 0)
    out = []
    if info["complete"]:
        out.append(f"complete: all {planned:,} planned shards have a finished report" if planned
                   else "complete: every shard with a report finished (no plan recorded in run.json)")
    else:
        unfinished = len(inc["missing_shards"]) + len(inc["held_shards"]) + len(inc["failed_shards"])
        of = f" of {planned:,} planned" if planned else ""
        out.append(f"INCOMPLETE run: {unfinished:,}{of} shard(s) have no finished report, "
                   f"{len(inc['truncated']):,} truncated; the figures cover the finished shards only")
    for key, what in (("missing_shards", "not scanned (not started or interrupted)"),
                      ("held_shards", "held by another writer (a scan still running?)"),
                      ("failed_shards", "failed (no samples read)")):
        if inc[key]:
            out.append(f"{what}: {_names([escape(n) for n in inc[key]])}")
    if inc["truncated"]:
        cut = [f"{escape(t['shard'])} ({t['samples_read']:,} samples read)" for t in inc["truncated"]]
        out.append(f"truncated (samples after the cut are lost): {_names(cut)}")
    if inc["failed_by_status"]:
        parts = ", ".join(f"{escape(k)} {v:,}" for k, v in inc["failed_by_status"].items())
        out.append(f"failed samples by status: {parts}")
    return out


def dashboard_item(summary: dict, width: int, plain: bool):
    """A panel for the terminal dashboard (None for a summary without an assessment)."""
    from rich import box
    from rich.panel import Panel
    from rich.text import Text

    from vlmaudit.report.safetext import rich_text, safe_text

    text = lines(summary, safe_text)
    if not text:
        return None
    title = "complete" if summary["complete"] else "INCOMPLETE"
    return Panel(Text("\n").join(rich_text(line) for line in text), title=title,
                 box=box.ASCII if plain else box.ROUNDED)


def markdown_lines(summary: dict) -> list[str]:
    from vlmaudit.report.safetext import markdown_text

    text = lines(summary, markdown_text)
    return ["## Completeness", "", *[f"- {line}" for line in text], ""] if text else []


def html_section(summary: dict) -> str:
    import html

    from vlmaudit.report.safetext import safe_text

    text = lines(summary, lambda v: html.escape(safe_text(v)))
    if not text:
        return ""
    cls = "complete" if summary["complete"] else "incomplete"
    items = "".join(f"<li>{line}</li>" for line in text)
    return f"<h2>Completeness</h2><ul class='{cls}'>{items}</ul>"


def filter_entries(info: dict) -> list[str]:
    """`filter`'s summary.json incomplete_shards: one readable entry per shard."""
    inc = info["incomplete"]
    return ([f"{n} (not scanned)" for n in inc["missing_shards"]]
            + [f"{n} (held by another writer)" for n in inc["held_shards"]]
            + [f"{n} (failed)" for n in inc["failed_shards"]]
            + [f"{t['shard']} (truncated: {t['samples_read']} samples read)" for t in inc["truncated"]])


def gate_message(summary: dict) -> str:
    inc = summary["incomplete"]
    unfinished = inc["missing_shards"] + inc["held_shards"] + inc["failed_shards"]
    parts = ([f"{len(unfinished)} shard(s) without a finished report ({_names(unfinished)})"] if unfinished else []) + (
        [f"{len(inc['truncated'])} truncated shard(s) ({_names([t['shard'] for t in inc['truncated']])})"]
        if inc["truncated"] else [])
    return ("--fail-above on an incomplete run: " + "; ".join(parts)
            + "; finish the scan, or pass --allow-incomplete to gate on the finished shards")
