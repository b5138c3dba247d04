"""The HTML report: one self-contained file (inline CSS, inline SVG charts, a few lines of inline
script, thumbnails as data: URIs) rendered from the summary dict. A Content-Security-Policy forbids
every network load; every piece of data is escaped; only http(s) URLs become links."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from vlmaudit.report import completeness
from vlmaudit.report import html_charts as charts
from vlmaudit.report.dashboard import pct

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
svg.chart{display:block;max-width:100%;height:auto}.legend span{margin-right:1.2em;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.hists{display:flex;flex-wrap:wrap;gap:12px}.hists figure{width:340px;margin:0;font-size:12px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.card{margin:0;width:160px;font-size:11px;word-break:break-all}
.shield{cursor:pointer;width:150px;min-height:60px;display:block}
.shield.blur{filter:blur(14px)}div.shield{background:#f4f4f4;padding:6px;font-size:12px;word-break:normal}
.tag{display:inline-block;padding:0 5px;border-radius:3px;color:#fff;font-weight:bold}
.tag.image{background:#2e6fb7}.tag.caption{background:#e08a1e}.tag.both{background:#8e3fae}
.muted{color:#777}"""
SCRIPT = """document.querySelectorAll('.shield').forEach(function(e){e.addEventListener('click',function(){
e.classList.toggle('blur')})});var b=document.getElementById('reveal');if(b){b.addEventListener('click',function(){
var s=document.querySelectorAll('.shield'),any=document.querySelector('.shield.blur');
s.forEach(function(e){e.classList.toggle('blur',!any)})})}"""
FIRED_HELP = {"image": "flagged on the image", "caption": "flagged on the caption alone",
              "both": "flagged on the image and the caption"}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def link(url) -> str:
    """An http(s) URL as a link that sends no referrer; anything else (file:, javascript:, data:, text
    with spaces or control characters) as plain escaped text."""
    if not url:
        return ""
    text = str(url)
    parts = urlsplit(text) if not re.search(r"[\s\x00-\x1f\x7f]", text) else None
    if parts and parts.scheme.lower() in ("http", "https") and parts.netloc:
        return f"<a href='{esc(text)}' rel='noopener noreferrer nofollow' target='_blank'>{esc(text[:80])}</a>"
    return f"<span class='muted'>{esc(text[:80])}</span>"


def to_html(summary: dict, thumbnails: dict, blur: bool, redact: bool) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
             "<meta name='viewport' content='width=device-width'><meta name='referrer' content='no-referrer'>"
             f"<title>vlmaudit report</title><style>{CSS}</style></head><body><h1>vlmaudit report</h1>",
             _overview(summary), completeness.html_section(summary), _known(summary), _categories(summary), _split(summary),
             _shards(summary), _histograms(summary),
             _concepts(summary), _estimates(summary), _gallery(summary, thumbnails, blur, redact),
             f"<script>{SCRIPT}</script></body></html>"]
    return "\n".join(p for p in parts if p)


def _known(summary: dict) -> str:
    from vlmaudit.report.known_content import lines

    return "".join(f"<p class='known'>{esc(line)}</p>" for line in lines(summary))


def _overview(summary: dict) -> str:
    o = summary["overview"]
    thr = o.get("thresholds") or {}
    lines = [f"<p>samples {o['samples']:,} &middot; failed {o['failed']:,} ({pct(o['failed_rate'])}) &middot; "
             f"flagged <b>{o['flagged']:,}</b> ({pct(o['flagged_rate'])}) &middot; shards {o.get('shards', 0):,}</p>",
             f"<p>model {esc(o['model'])} ({esc(o['backend'])}) &middot; taxonomy {esc(o['taxonomy_version'])} "
             f"&middot; thresholds {esc(thr.get('source', ''))}</p>"]
    broken = [(label, summary.get(key) or []) for label, key in (("failed", "failed_shards"),
                                                                ("truncated", "truncated_shards"))]
    lines += [f"<p>{label} shards ({len(names)}): {esc(', '.join(map(str, names[:20])))}"
              f"{' &hellip;' if len(names) > 20 else ''}</p>" for label, names in broken if names]
    return "\n".join(lines)


def _categories(summary: dict) -> str:
    rows = "".join(
        f"<tr><td>{esc(c['name'])}</td><td>{_num(c['flagged'])}</td><td>{_rate(c)}</td><td>{_num(c.get('both'))}</td>"
        f"<td>{_num(c.get('image_only'))}</td><td>{_num(c.get('caption_only'))}</td></tr>" for c in summary["categories"])
    return ("<h2>Flagged rate per category</h2>" + charts.category_bars(summary["categories"]) + charts.split_legend()
            + "<table><tr><th>category</th><th>flagged</th><th>rate</th><th>both</th><th>image only</th>"
            f"<th>caption only</th></tr>{rows}</table>")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _rate(c: dict) -> str:
    if c.get("scored") is False or c.get("rate") is None:
        return esc(c.get("na") or "n/a")
    return pct(c["rate"])


def _split(summary: dict) -> str:
    m = summary.get("modality") or {}
    agreement = esc(m.get("na") or "n/a") if m.get("agreement", 0) is None else pct(m.get("agreement", 0))
    unscored = [name for name, ok in (m.get("scored") or {}).items() if not ok]
    note = f" {esc(' and '.join(unscored))}: {esc(m.get('na'))}." if unscored else ""
    return ("<h2>Image, caption or both</h2><p>Which modality reached the thresholds, over the flagged samples "
            f"(agreement {agreement}).{note}</p>" + charts.split_bar(m) + charts.split_legend())


def _shards(summary: dict) -> str:
    rows = "".join(f"<tr><td>{esc(s['shard'])}</td><td>{s['samples']:,}</td><td>{s['flagged']:,}</td>"
                   f"<td>{pct(s['rate'])}</td></tr>" for s in summary.get("top_shards", []))
    return ("<h2>Flagged rate across shards</h2>"
            + charts.shard_rates(summary.get("shard_rates", []), summary["overview"].get("shards", 0))
            + "<h3>Hot spots</h3><table><tr><th>shard</th><th>samples</th><th>flagged</th><th>rate</th></tr>"
            f"{rows}</table>")


def _histograms(summary: dict) -> str:
    entries = summary.get("concept_histograms") or []
    if not entries:
        return "<h2>Score histograms</h2><p class='muted'>No concept reached its threshold: no histogram.</p>"
    figures = "".join(
        f"<figure>{charts.histogram(e)}<figcaption><b>{esc(e['name'])}</b> ({esc(e['category'])}) &middot; thresholds "
        f"image {_thr(e['threshold_image'])}, caption {_thr(e['threshold_caption'])}</figcaption></figure>" for e in entries)
    return ("<h2>Score histograms</h2><p>Scores of the most flagged concepts, 20 bins over [0, 1], counts on a log "
            "scale; lines mark the thresholds (solid: image, dashed: caption).</p>"
            + charts.legend([("image", charts.IMAGE), ("caption", charts.CAPTION)]) + f"<div class='hists'>{figures}</div>")


def _thr(value) -> str:
    return "n/a (not scored)" if value is None else f"{value:.3f}"


def _concepts(summary: dict) -> str:
    rows = "".join(f"<tr><td>{esc(c['name'])}</td><td>{esc(c['category'])}</td><td>{c['flagged']:,}</td>"
                   f"<td>{pct(c['rate'])}</td><td>{_num(c['image'])}</td><td>{_num(c['caption'])}</td></tr>"
                   for c in summary["top_concepts"])
    return ("<h2>Top concepts</h2><table><tr><th>concept</th><th>category</th><th>samples</th><th>rate</th>"
            f"<th>image</th><th>caption</th></tr>{rows}</table>")


def _estimates(summary: dict) -> str:
    if "estimates" not in summary:
        return ""
    from vlmaudit.report.estimates_html import to_html_section

    return ("<h2>Prevalence estimates</h2>" + charts.estimate_intervals(summary["estimates"])
            + to_html_section(summary["estimates"]))


def _gallery(summary: dict, thumbnails: dict, blur: bool, redact: bool) -> str:
    examples = summary.get("examples") or {}
    if not examples:
        return ""
    concepts = {c["id"]: c for c in summary["top_concepts"]}
    names = {c["id"]: c["name"] for c in summary["categories"]}
    by_category: dict[str, list] = {}
    for concept, items in examples.items():
        category = concepts.get(concept, {}).get("category", "")
        by_category.setdefault(category, []).append((concepts.get(concept, {}).get("name", concept), items))
    parts = ["<h2>Examples</h2><p>Grouped by category. Each card says what fired: "
             + ", ".join(f"<span class='tag {k}'>{k}</span> {v}" for k, v in FIRED_HELP.items())
             + ". Click an example to " + ("reveal / hide it" if blur else "blur it")
             + ". <button id='reveal' type='button'>reveal / hide all</button></p>"]
    for category, groups in by_category.items():
        parts.append(f"<h3>{esc(names.get(category, category))}</h3>")
        for name, items in groups:
            cards = "".join(_card(item, thumbnails, blur, redact) for item in items)
            parts.append(f"<h4>{esc(name)}</h4><div class='gallery'>{cards}</div>")
    return "\n".join(parts)


def _card(item: dict, thumbnails: dict, blur: bool, redact: bool) -> str:
    fired = item.get("fired") or item.get("modality") or "image"
    shield = "shield blur" if blur else "shield"
    caption = item.get("caption") or ""
    if fired == "caption":
        body = ("<div class='muted'>(caption redacted)</div>" if redact or not caption else
                f"<div class='{shield}' title='caption'>{esc(caption[:400])}</div>")
    else:
        thumb = thumbnails.get((item["shard"], item["key"]))
        body = (f"<img class='{shield}' alt='{esc(item['key'])}' src='data:image/jpeg;base64,{thumb}'>" if thumb
                else "<div class='muted'>(no image)</div>")
    text = "" if redact or fired == "caption" or not caption else f"<br>{esc(caption[:120])}"
    url = "" if redact else link(item.get("url"))
    return (f"<figure class='card' data-fired='{esc(fired)}'>{body}<figcaption><span class='tag {esc(fired)}' "
            f"title='{esc(FIRED_HELP.get(fired, fired))}'>{esc(fired)}</span> {item['score']:.3f}<br>"
            f"{esc(item['key'])}<br><span class='muted'>{esc(item['shard'])}</span>{text}"
            f"{'<br>' + url if url else ''}</figcaption></figure>")
