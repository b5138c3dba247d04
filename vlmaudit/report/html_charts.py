"""Inline SVG charts for the HTML report, drawn in Python from the summary dict (no script, no
network). Every label is data (category names come from report footers): escaped here."""

from __future__ import annotations

import html
import math

IMAGE, CAPTION, BOTH, GRID = "#2e6fb7", "#e08a1e", "#8e3fae", "#ccc"
FONT = "font-family='system-ui,sans-serif' font-size='11'"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{esc(label)}'><title>{esc(label)}</title>"
            + "".join(body) + "</svg>")


def _text(x: float, y: float, text, anchor: str = "start", fill: str = "#222") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' fill='{fill}' {FONT}>{esc(text)}</text>"


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str = "") -> str:
    title = f"<title>{esc(tip)}</title>" if tip else ""
    return f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(w, 0):.1f}' height='{max(h, 0):.1f}' fill='{fill}'>{title}</rect>"


def _pct(rate: float) -> str:
    return f"{rate:.3%}" if rate and rate < 0.001 else f"{rate:.2%}"


def _short(text, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def legend(items: list[tuple[str, str]]) -> str:
    """A small HTML legend (colour swatch, label) under a chart."""
    return "<p class='legend'>" + " ".join(
        f"<span><i style='background:{colour}'></i>{esc(label)}</span>" for label, colour in items) + "</p>"


def split_legend() -> str:
    return legend([("image and caption", BOTH), ("image only", IMAGE), ("caption only", CAPTION)])


def category_bars(categories: list[dict], width: int = 720) -> str:
    """One bar per category, its length the flagged rate, split into both / image only / caption only.
    A category that was not scored (`"scored": false` or a null rate) shows "n/a"."""
    row, left, right = 22, 190, 150
    scale_w = width - left - right
    peak = max((c["rate"] or 0 for c in categories if c.get("rate") is not None), default=0) or 1
    body = []
    for k, c in enumerate(categories):
        y = 8 + k * row
        body.append(_text(left - 8, y + 14, _short(c["name"]), "end"))
        if c.get("scored") is False or c.get("rate") is None:
            body.append(_text(left + 4, y + 14, c.get("na") or "n/a - not scored", fill="#777"))
            continue
        flagged = c["flagged"] or 0
        x = left
        for part, colour in (("both", BOTH), ("image_only", IMAGE), ("caption_only", CAPTION)):
            share = (c.get(part) or 0) / flagged if flagged else 0
            w = scale_w * c["rate"] / peak * share
            body.append(_rect(x, y + 3, w, row - 8, colour, f"{c['name']}: {part.replace('_', ' ')} {c.get(part) or 0:,}"))
            x += w
        body.append(_text(x + 6, y + 14, f"{_pct(c['rate'])} ({flagged:,})"))
    if not categories:
        body.append(_text(left, 20, "no categories in this report", fill="#777"))
    return _svg(width, 16 + max(len(categories), 1) * row, "flagged rate per category", body)


def split_bar(modality: dict, width: int = 720) -> str:
    """The flagged samples split by which modality fired: both, image only, caption only."""
    parts = [("image and caption", modality.get("both", 0), BOTH), ("image only", modality.get("image_only", 0), IMAGE),
             ("caption only", modality.get("caption_only", 0), CAPTION)]
    parts = [part for part in parts if part[1] is not None]  # a modality not scored: no bar (said in the text)
    total = sum(n for _, n, _ in parts)
    body, x = [], 0.0
    for label, n, colour in parts:
        w = width * n / total if total else 0
        body.append(_rect(x, 4, w, 26, colour, f"{label}: {n:,}"))
        if w > 90:
            body.append(_text(x + w / 2, 21, f"{label} {n / total:.0%}", "middle", "#fff"))
        x += w
    if not total:
        body += [_rect(0, 4, width, 26, "#eee"), _text(width / 2, 21, "nothing flagged", "middle", "#777")]
    return _svg(width, 34, "flagged samples by modality", body)


def shard_rates(rates: list[float], shards: int, width: int = 720, height: int = 120) -> str:
    """Flagged rate across shards in name order (each bar: a bucket of neighbouring shards)."""
    left, bottom = 56, 18
    peak = max(rates, default=0) or 1
    plot_h, plot_w = height - bottom - 8, width - left - 4
    body = [f"<line x1='{left}' y1='{8 + plot_h}' x2='{width - 4}' y2='{8 + plot_h}' stroke='#888'/>",
            _text(left - 6, 16, _pct(peak if rates else 0), "end"), _text(left - 6, 8 + plot_h, "0", "end")]
    step = plot_w / max(len(rates), 1)
    for k, rate in enumerate(rates):
        h = plot_h * rate / peak
        body.append(_rect(left + k * step + 1, 8 + plot_h - h, max(step - 2, 1), h, "#c0392b",
                          f"bucket {k + 1} of {len(rates)}: {_pct(rate)}"))
    label = f"{shards:,} shards in name order" + (f", {len(rates)} buckets" if rates and len(rates) < shards else "")
    body.append(_text(left + plot_w / 2, height - 4, label if rates else "no shards", "middle", "#555"))
    return _svg(width, height, "flagged rate across shards", body)


def histogram(entry: dict, width: int = 340, height: int = 130) -> str:
    """Score histogram of one concept, image and caption side by side per bin, on a log scale,
    with each modality's threshold marked."""
    left, bottom, top = 34, 18, 6
    plot_w, plot_h = width - left - 6, height - bottom - top
    bins = entry["bins"]
    scored = [m for m in ("image", "caption") if entry.get(m) is not None]  # unscored modality: no bars
    values = [n for m in scored for n in entry[m]]
    peak = math.log1p(max(values, default=0)) or 1
    body = [f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#888'/>",
            _text(left, height - 4, "0", "middle"), _text(left + plot_w, height - 4, "1", "middle"),
            _text(left - 4, top + 10, f"{max(values, default=0):,}", "end")]
    slot = plot_w / bins
    for b in range(bins):
        for offset, series, colour in ((0, "image", IMAGE), (1, "caption", CAPTION)):
            if series not in scored:
                continue
            n = entry[series][b]
            h = plot_h * math.log1p(n) / peak
            body.append(_rect(left + b * slot + offset * slot / 2, top + plot_h - h, slot / 2 - 0.5, h, colour,
                              f"{series} scores {b / bins:.2f}-{(b + 1) / bins:.2f}: {n:,}"))
    for series, dash, colour in (("image", "", IMAGE), ("caption", "4 3", CAPTION)):
        thr = entry[f"threshold_{series}"]
        if series not in scored or thr is None:
            continue
        x = left + plot_w * min(max(thr, 0.0), 1.0)
        body.append(f"<line class='threshold' x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + plot_h}' "
                    f"stroke='{colour}' stroke-width='2' stroke-dasharray='{dash}'><title>{series} threshold "
                    f"{thr:.3f}</title></line>")
    return _svg(width, height, f"score histogram of {entry['name']}", body)


def estimate_intervals(result: dict, width: int = 720) -> str:
    """Prevalence per category from the labelled review sample: the estimate and its 95 % interval."""
    row, left, right = 22, 190, 170
    entries = result["categories"] + [result["overall"]]
    peak = max((e["prevalence"]["high"] or 0 for e in entries if e["prevalence"]["status"] == "ok"), default=0) or 1
    scale_w = width - left - right
    body = []
    for k, e in enumerate(entries):
        y, p = 8 + k * row, e["prevalence"]
        body.append(_text(left - 8, y + 14, _short(e["name"]), "end"))
        if p["status"] != "ok":
            body.append(_text(left + 4, y + 14, "too few labels", fill="#777"))
            continue
        lo, mid, hi = (left + scale_w * p[key] / peak for key in ("low", "estimate", "high"))
        body += [f"<line x1='{lo:.1f}' y1='{y + 10}' x2='{hi:.1f}' y2='{y + 10}' stroke='#333' stroke-width='2'/>",
                 f"<line x1='{lo:.1f}' y1='{y + 5}' x2='{lo:.1f}' y2='{y + 15}' stroke='#333'/>",
                 f"<line x1='{hi:.1f}' y1='{y + 5}' x2='{hi:.1f}' y2='{y + 15}' stroke='#333'/>",
                 f"<circle cx='{mid:.1f}' cy='{y + 10}' r='4' fill='#c0392b'><title>{esc(e['name'])}: "
                 f"{p['estimate']:.2%} [{p['low']:.2%}, {p['high']:.2%}]</title></circle>",
                 _text(left + scale_w + 8, y + 14, f"{p['estimate']:.2%} [{p['low']:.2%}, {p['high']:.2%}]")]
    return _svg(width, 16 + len(entries) * row, "prevalence with 95 % intervals", body)
