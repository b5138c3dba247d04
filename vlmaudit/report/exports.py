"""Report exports: Markdown (dataset cards, PRs) and one self-contained HTML file with a gallery."""

from __future__ import annotations

import base64
import io

from vlmaudit.report import completeness, known_content
from vlmaudit.report.dashboard import count, na, pct, pct_or_na
from vlmaudit.report.safetext import markdown_text as md


def to_markdown(summary: dict) -> str:
    o = summary["overview"]
    lines = [
        "# vlmaudit report", "",
        f"- samples: {o['samples']:,}; failed: {o['failed']:,} ({pct(o['failed_rate'])}); "
        f"flagged: {o['flagged']:,} ({pct(o['flagged_rate'])})",
        f"- model: {md(o['model'])} ({md(o['backend'])}); taxonomy: {md(o['taxonomy_version'])}; "
        f"thresholds: {md(o['thresholds']['source'])}", "",
        *completeness.markdown_lines(summary), *_coverage_lines(summary),
        *known_content.markdown_lines(summary),
        "## Flagged rate per category", "", "| category | flagged | rate | both | image only | caption only |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {md(c['name'])} | {count(c['flagged'])} | {pct_or_na(c['rate'], md(na(summary)))} | {count(c['both'])} | "
              f"{count(c['image_only'])} | {count(c['caption_only'])} |" for c in summary["categories"]]
    lines += ["", "## Top concepts", "", "| concept | category | samples | rate | image | caption |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {md(c['name'])} | {md(c['category'])} | {c['flagged']:,} | {pct(c['rate'])} | {count(c['image'])} | "
              f"{count(c['caption'])} |" for c in summary["top_concepts"]]
    lines += ["", "## Shard hot spots", "", "| shard | samples | flagged | rate |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {md(s['shard'])} | {s['samples']:,} | {s['flagged']:,} | {pct(s['rate'])} |" for s in summary["top_shards"]]
    return "\n".join(lines) + "\n"


def _coverage_lines(summary: dict) -> list[str]:
    """What the model scored, when it is not everything (report.coverage_view)."""
    cover = summary.get("coverage") or {}
    if not cover or cover.get("everything"):
        return []
    level = " (one score per category)" if cover.get("level") == "category" else ""
    return [f"- coverage: {md(cover.get('model'))} scores {md(', '.join(cover.get('categories') or []) or 'nothing')}"
            f"{level}, {md(' and '.join(cover.get('modalities') or []) or 'no modality')}; "
            f"everything else: {md(na(summary))}", ""]


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
.bar{background:#c0392b;height:10px;display:inline-block}.gallery{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:140px;font-size:11px}img.blur{filter:blur(14px)}img{cursor:pointer;width:128px}"""
SCRIPT = "document.querySelectorAll('img').forEach(i=>i.addEventListener('click',()=>i.classList.toggle('blur')));"


def to_html(summary: dict, thumbnails: dict, blur: bool, redact: bool) -> str:
    """The HTML report with charts and a gallery (see report.html_page)."""
    from vlmaudit.report.html_page import to_html as page

    return page(summary, thumbnails, blur, redact)


def load_thumbnails(report_dir, summary: dict, reread, size: int = 128) -> tuple[dict, dict]:
    """(thumbnails {(shard, key): base64 JPEG}, {shard: why it was not re-read}) of the example
    samples, read from the shards the command line allows (see report.reread.shard_sources).
    REPORT_DIR: a path, or an opened ReportSet (its stats are reused, not read again)."""
    from vlmaudit.match.known import known_matches
    from vlmaudit.report.reportset import location_of
    from vlmaudit.report.reread import shard_sources

    known = known_matches(location_of(report_dir))  # a matched image is never decoded again
    wanted = {}
    for items in summary.get("examples", {}).values():
        for item in items:
            if item.get("fired") == "caption" or (item["shard"], item["key"]) in known:  # caption: shown as text
                continue
            wanted.setdefault(item["shard"], set()).add(item["key"])
    sources, refused = shard_sources(report_dir, sorted(wanted), reread)
    out = {}
    for shard, url in sources.items():
        keys = wanted[shard]
        try:
            for key, image in _shard_images(url, reread.max_member_bytes):
                if key in keys and (shard, key) not in out:
                    out[(shard, key)] = _thumbnail(image, size)
        except Exception:
            continue  # shards moved or unreadable: the gallery shows "(no image)"
    return {k: v for k, v in out.items() if v}, refused


def _shard_images(url: str, max_member_bytes: int):
    """(key, first image's bytes) of every sample of a tar or Parquet/Arrow shard that has an image;
    members over `max_member_bytes` are not read."""
    from vlmaudit.scan.folder_source import is_folder_shard, iter_folder_samples
    from vlmaudit.scan.parquet_source import is_table_shard, iter_table_images

    if is_folder_shard(url):
        from vlmaudit.scan.tario import TarEnd

        yield from ((s.key, s.image) for s in iter_folder_samples(url, TarEnd(), max_member_bytes, 0) if s.image)
        return
    if is_table_shard(url):
        yield from iter_table_images(url, max_bytes=max_member_bytes)
        return
    from vlmaudit.report.reread import iter_raw_samples
    from vlmaudit.scan.samples import IMAGE_EXTS, split_name

    for _, key, members in iter_raw_samples(url, max_member_bytes):
        images = [m for m in members if split_name(m.name)[1] in IMAGE_EXTS and m.data is not None]
        if images:
            yield key, images[0].data


def _thumbnail(data: bytes, size: int) -> str | None:
    from vlmaudit.scan.imaging import decode_image

    try:
        image, _ = decode_image(data, max_pixels=50_000_000, draft_size=size)
    except Exception:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()
