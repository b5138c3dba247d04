"""Render a summary dict as a rich terminal dashboard (plain text when not a TTY or NO_COLOR)."""

from __future__ import annotations

from vlmaudit.report.safetext import rich_text, safe_text

SPARKS = "▁▂▃▄▅▆▇█"
ASCII_SPARKS = "_.-:=+*#"
NOTHING = "nothing reached the thresholds"


def pct(rate: float) -> str:
    return f"{100 * rate:.2f}%"


def count(value) -> str:
    """A count, or "n/a" where it was not scored (None)."""
    return "n/a" if value is None else f"{value:,}"


def pct_or_na(rate, label: str | None = None) -> str:
    return (label or "n/a") if rate is None else pct(rate)


def na(summary: dict) -> str:
    """'n/a - not scored by MODEL' for this summary (report.coverage_view)."""
    from vlmaudit.report.coverage_view import na as label

    return label(summary)


def bar(rate: float, peak: float, width: int, plain: bool = False) -> str:
    filled = 0 if peak <= 0 else round(width * rate / peak)
    return ("#" if plain else "█") * filled + ("." if plain else "·") * (width - filled)


def sparkline(values: list[float], plain: bool = False) -> str:
    peak, marks = max(values, default=0), ASCII_SPARKS if plain else SPARKS
    return "".join(marks[0 if peak <= 0 else min(7, int(v / peak * 7.999))] for v in values)


def clip(text: str | None, width: int, plain: bool = False):
    """Data text shortened to `width`, control characters replaced, shown literally (a rich Text)."""
    text, more = " ".join(safe_text(text).split()), "..." if plain else "…"
    return rich_text(text if len(text) <= width else text[: max(0, width - len(more))] + more)


def make_console(width: int | None = None, file=None):
    """A console that degrades to plain ASCII-free-of-colour output off a terminal or with NO_COLOR."""
    import os

    from rich.console import Console

    console = Console(width=width, file=file)
    plain = not console.is_terminal or "NO_COLOR" in os.environ
    return Console(width=width, file=file, no_color=True, color_system=None, highlight=False, emoji=False) if plain else console


def render(summary: dict, console=None, redact: bool = False) -> None:
    console = console or make_console()
    plain = console.no_color or not console.is_terminal
    from vlmaudit.report import known_content
    from vlmaudit.report.completeness import dashboard_item

    for part in (overview, dashboard_item, known_content.dashboard_item, categories, concepts, highest, modality_gap, shards, histogram, compare):
        item = part(summary, console.width, plain)
        if item is not None:
            console.print(item)
    if summary.get("examples"):
        console.print(examples(summary, console.width, plain, redact))


def _table(title: str, columns: list[tuple[str, str]], plain: bool):
    from rich import box
    from rich.table import Table

    table = Table(title=rich_text(title), title_justify="left", box=box.ASCII if plain else box.SIMPLE_HEAVY, pad_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    return table


def overview(summary: dict, width: int, plain: bool):
    from rich.panel import Panel
    from rich import box

    o = summary["overview"]
    thr = o["thresholds"]
    thr_text = thr["source"] if "min" not in thr else f"{thr['source']} ({thr['min']:.2f}-{thr['max']:.2f}, median {thr['median']:.2f})"
    lines = [
        f"samples {o['samples']:,}  failed {o['failed']:,} ({pct(o['failed_rate'])})  "
        f"flagged {o['flagged']:,} ({pct(o['flagged_rate'])})",
        f"model {safe_text(o['model'])} ({safe_text(o['backend'])})",
        f"taxonomy {safe_text(o['taxonomy_version'])}  shards {o['shards']:,}",
        f"thresholds {safe_text(thr_text)}",
        f"scan time {o['scan_seconds']:,.1f} s  throughput {o['samples_per_s']:,.1f} samples/s",
    ]
    if summary["failed_shards"]:
        lines.append(f"FAILED shards: {', '.join(map(safe_text, summary['failed_shards'][:10]))}")
    if summary["truncated_shards"]:
        lines.append(f"truncated shards: {', '.join(map(safe_text, summary['truncated_shards'][:10]))}")
    from rich.text import Text

    return Panel(Text("\n").join(rich_text(line) for line in lines), title="vlmaudit report", box=box.ASCII if plain else box.ROUNDED)


def categories(summary: dict, width: int, plain: bool):
    table = _table("flagged rate per category", [("category", "left"), ("", "left"), ("rate", "right"),
                                                 ("samples", "right")], plain)
    bar_width = max(10, min(40, width - 56))
    peak = max((c["rate"] or 0 for c in summary["categories"]), default=0)
    for c in summary["categories"]:
        if c["rate"] is None:  # not scored by this model: said, never drawn as 0
            table.add_row(clip(c["name"], 60, plain), na(summary), "n/a", "n/a")
            continue
        table.add_row(clip(c["name"], 60, plain), bar(c["rate"], peak, bar_width, plain), pct(c["rate"]), f"{c['flagged']:,}")
    return table


def concepts(summary: dict, width: int, plain: bool):
    if not summary["top_concepts"]:
        return rich_text(f"top concepts: {NOTHING}")
    wide = width >= 110
    columns = [("concept", "left")] + ([("category", "left")] if wide else []) + [
        ("samples", "right"), ("rate", "right"), ("img", "right"), ("cap", "right"), ("mean img", "right"),
        ("p95 img", "right")] + ([("mean cap", "right"), ("p95 cap", "right")] if wide else [])
    table = _table("top concepts", columns, plain)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for c in summary["top_concepts"]:
        row = [clip(c["name"], 40 if wide else 24, plain)] + ([clip(c["category"], 40, plain)] if wide else []) + [
            f"{c['flagged']:,}", pct(c["rate"]), count(c["image"]), count(c["caption"]), fmt(c["mean_image"]),
            fmt(c["p95_image"])] + ([fmt(c["mean_caption"]), fmt(c["p95_caption"])] if wide else [])
        table.add_row(*row)
    return table


def highest(summary: dict, width: int, plain: bool):
    """Nothing flagged: the highest stored scores, so the reader sees how close the data came."""
    items = summary.get("highest_scores")
    if not items:
        return None
    table = _table("highest scores (nothing reached the thresholds)",
                   [("key", "left"), ("shard", "left"), ("concept", "left"), ("modality", "left"), ("score", "right")],
                   plain)
    for item in items:
        table.add_row(rich_text(safe_text(item["key"])), clip(item["shard"], 40, plain), clip(item["concept"], 30, plain),
                      item["modality"], f"{item['score']:.3f}")
    return table


def modality_gap(summary: dict, width: int, plain: bool):
    m = summary["modality"]
    agreement = na(summary) if m["agreement"] is None else f"{pct(m['agreement'])} of flagged"
    table = _table(f"modality gap: image vs caption (overall agreement {agreement})",
                   [("category", "left"), ("both", "right"), ("image only", "right"), ("caption only", "right"),
                    ("agreement", "right")], plain)
    for c in summary["categories"]:
        table.add_row(clip(c["name"], 60, plain), count(c["both"]), count(c["image_only"]), count(c["caption_only"]),
                      pct_or_na(c["agreement"]))
    table.add_row("all", count(m["both"]), count(m["image_only"]), count(m["caption_only"]), pct_or_na(m["agreement"]))
    unscored = [name for name, ok in (m.get("scored") or {}).items() if not ok]
    if unscored:
        table.caption = rich_text(f"{' and '.join(unscored)}: {na(summary)}")
    return table


def shards(summary: dict, width: int, plain: bool):
    if not summary["top_shards"]:
        return rich_text(f"shard hot spots: {NOTHING}" if summary["overview"]["shards"] else "shard hot spots: no shards")
    table = _table("shard hot spots", [("shard", "left"), ("samples", "right"), ("flagged", "right"),
                                       ("rate", "right")], plain)
    for s in summary["top_shards"]:
        table.add_row(clip(s["shard"], 40, plain), f"{s['samples']:,}", f"{s['flagged']:,}", pct(s["rate"]))
    rates = summary.get("shard_rates") or []
    if rates:
        table.caption = rich_text(f"rate across shards (name order): {sparkline(rates, plain)}")
    return table


def histogram(summary: dict, width: int, plain: bool):
    hist = summary.get("histogram")
    if not hist:
        return None
    table = _table(f"score histogram: {hist['concept']}", [("score", "left"), ("image", "right"), ("", "left"),
                                                           ("caption", "right"), (" ", "left")], plain)
    peak = max(hist["image"] + hist["caption"] + [1])
    step = 1 / hist["bins"]
    bar_width = max(6, min(20, (width - 40) // 2))
    for k, (i, c) in enumerate(zip(hist["image"], hist["caption"])):
        table.add_row(f"{k * step:.2f}-{(k + 1) * step:.2f}", f"{i:,}", bar(i, peak, bar_width, plain), f"{c:,}",
                      bar(c, peak, bar_width, plain))
    return table


def compare(summary: dict, width: int, plain: bool):
    rows = summary.get("compare")
    if not rows:
        return None
    table = _table(f"compared with {summary['compare_dir']}", [("category", "left"), ("this", "right"),
                                                               ("other", "right"), ("delta", "right")], plain)
    for r in rows:
        delta = "n/a" if r["delta"] is None else f"{100 * r['delta']:+.2f} pts"
        table.add_row(clip(r["name"], 60, plain), pct_or_na(r["rate"], r.get("na")),
                      pct_or_na(r["other_rate"], r.get("other_na")), delta)
    return table


def examples(summary: dict, width: int, plain: bool, redact: bool):
    """One row per example: concept, which modality fired, score, then the full key (a key wider
    than the column folds onto the next line, never cut) over its shard and caption / URL, which
    are shortened to the column's width."""
    from rich.text import Text

    whole = {c["id"]: c["name"] for c in summary["top_concepts"] if c.get("level") == "category"}  # category-level model
    items = [(whole.get(concept, concept), item) for concept, listed in summary["examples"].items() for item in listed]
    table = _table("examples" + (" (captions and URLs redacted)" if redact else ""),
                   [("concept", "left"), ("fired", "left"), ("score", "right"), ("key / shard: caption url", "left")],
                   plain)
    concept_width = min(24, max((len(safe_text(c)) for c, _ in items), default=7))
    room = max(20, width - concept_width - len("caption") - len("0.000") - 13)
    table.columns[3].min_width = min(room, max((len(safe_text(i["key"])) for _, i in items), default=3))
    for concept, item in items:
        where = f"{item['shard']}: " + ("[redacted]" if redact else f"{item['caption'] or ''}  {item['url'] or ''}")
        sample = Text("\n").join([rich_text(safe_text(item["key"])), clip(where, room, plain)])
        table.add_row(clip(concept, concept_width, plain), item.get("fired", item["modality"]), f"{item['score']:.3f}",
                      sample)
    return table
