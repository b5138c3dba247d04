"""Known-content matches in a report: counts per bank (from REPORT_DIR/matches, written by
`vlmaudit match` or `scan --bank`) and the rule that a matched sample is never shown: it is taken
out of the examples before anything re-reads, thumbnails or prints them."""

from __future__ import annotations

from collections import Counter

from vlmaudit.match.known import read_matches


def apply_known_matches(summary: dict, report_dir) -> None:
    table = read_matches(report_dir, ["shard", "key", "bank"])  # one read: the set and the counts
    known = set() if table is None else set(zip(table.column("shard").to_pylist(), table.column("key").to_pylist()))
    counts = None if table is None else dict(Counter(table.column("bank").to_pylist()))
    withheld = 0
    for concept, items in (summary.get("examples") or {}).items():
        kept = [item for item in items if (item["shard"], item["key"]) not in known]
        withheld += len(items) - len(kept)
        summary["examples"][concept] = kept
    summary["known_matches"] = None if counts is None else {
        "banks": counts, "samples": len(known), "withheld_examples": withheld}


def lines(summary: dict) -> list[str]:
    found = summary.get("known_matches")
    if not found:
        return []
    banks = ", ".join(f"{name}: {count:,}" for name, count in sorted(found["banks"].items())) or "none"
    return [f"known-content matches: {found['samples']:,} samples ({banks}); matched images are never shown"]


def dashboard_item(summary: dict, width: int, plain: bool):
    from vlmaudit.report.safetext import rich_text, safe_text

    text = lines(summary)
    return rich_text(safe_text(text[0])) if text else None


def markdown_lines(summary: dict) -> list[str]:
    from vlmaudit.report.safetext import markdown_text

    return [f"- {markdown_text(line)}" for line in lines(summary)] + ([""] if lines(summary) else [])
