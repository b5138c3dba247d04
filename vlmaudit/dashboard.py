"""Render a summary dict as a rich terminal dashboard (plain text when not a TTY or NO_COLOR)."""

from __future__ import annotations


def _pct(rate: float) -> str:
    return f"{100 * rate:.2f}%"


def _bar(rate: float, peak: float, width: int = 24) -> str:
    filled = 0 if peak <= 0 else round(width * rate / peak)
    return "█" * filled + "·" * (width - filled)


def render(summary: dict, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    for part in (overview, categories, concepts, modality, shards):
        console.print(part(summary))


def overview(summary: dict):
    from rich.panel import Panel

    o = summary["overview"]
    lines = [
        f"samples {o['samples']:,}   failed {o['failed']:,} ({_pct(o['failed_rate'])})   "
        f"flagged {o['flagged']:,} ({_pct(o['flagged_rate'])})",
        f"shards {o['shards']:,}   model {o['model']} ({o['backend']})   taxonomy {o['taxonomy_version']}",
        f"scan time {o['scan_seconds']:,.1f} s   throughput {o['samples_per_s']:,.1f} samples/s",
    ]
    if summary["failed_shards"]:
        lines.append(f"[red]failed shards: {', '.join(summary['failed_shards'][:10])}")
    if summary["truncated_shards"]:
        lines.append(f"[yellow]truncated shards: {', '.join(summary['truncated_shards'][:10])}")
    return Panel("\n".join(lines), title="vlmaudit report", expand=False)


def categories(summary: dict):
    from rich.table import Table

    table = Table(title="flagged rate per category", title_justify="left")
    for name, justify in (("category", "left"), ("rate", "left"), ("", "right"), ("samples", "right")):
        table.add_column(name, justify=justify)
    peak = max((c["rate"] for c in summary["categories"]), default=0)
    for c in summary["categories"]:
        table.add_row(c["name"], _bar(c["rate"], peak), _pct(c["rate"]), f"{c['flagged']:,}")
    return table


def concepts(summary: dict):
    from rich.table import Table

    table = Table(title="top concepts", title_justify="left")
    for name in ("concept", "category", "samples", "rate", "image", "caption"):
        table.add_column(name, justify="left" if name in ("concept", "category") else "right")
    for c in summary["top_concepts"]:
        table.add_row(c["name"], c["category"], f"{c['flagged']:,}", _pct(c["rate"]), f"{c['image']:,}",
                      f"{c['caption']:,}")
    return table


def modality(summary: dict):
    from rich.table import Table

    m = summary["modality"]
    table = Table(title=f"image vs caption (agreement {_pct(m['agreement'])} of flagged)", title_justify="left")
    for name in ("both", "image only", "caption only"):
        table.add_column(name, justify="right")
    table.add_row(f"{m['both']:,}", f"{m['image_only']:,}", f"{m['caption_only']:,}")
    return table


def shards(summary: dict):
    from rich.table import Table

    table = Table(title="shards with the highest flagged rate", title_justify="left")
    for name in ("shard", "samples", "flagged", "rate"):
        table.add_column(name, justify="left" if name == "shard" else "right")
    for s in summary["top_shards"]:
        table.add_row(s["shard"], f"{s['samples']:,}", f"{s['flagged']:,}", _pct(s["rate"]))
    return table
