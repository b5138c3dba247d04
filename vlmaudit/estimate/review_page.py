"""The reviewers' HTML page: one row per drawn sample, its image blurred (click to reveal),
caption escaped and cut, URL shown as text (never a link). Images are re-read only from the
shards the command line allows, under the same rules and budgets as the HTML report's gallery
(report.exports.load_thumbnails), and only for the rows `images_allowed` lets through."""

from __future__ import annotations

import html

from vlmaudit.report.exports import CSS, SCRIPT, load_thumbnails

INSTRUCTIONS = (
    "Review each sample and fill the <b>labels</b> column of review.csv (or review.parquet) beside this page: "
    "<code>safe</code>, or the categories it shows, comma-separated ({categories}). Leave a row empty only if it "
    "cannot be judged. Images are blurred: click one to reveal it, click again to blur it. Do not skip rows "
    "because of what they show (the estimate assumes skipped rows are like the others). Then run "
    "<code>vlmaudit estimate REPORTS --labels THIS_FOLDER</code>.")


def images_allowed(report_dir, rows: list[dict]) -> list[dict]:
    """The rows whose image may be decoded and shown to reviewers: never a known-content match
    (REPORT_DIR/matches, from `vlmaudit match` or `scan --bank`)."""
    from vlmaudit.match.known import known_matches
    from vlmaudit.report.reportset import location_of

    known = known_matches(location_of(report_dir))
    return [row for row in rows if (row["shard"], row["key"]) not in known]


def thumbnails(report_dir, rows: list[dict], reread) -> tuple[dict, dict]:
    allowed = images_allowed(report_dir, rows)
    return load_thumbnails(report_dir, {"examples": {"review": allowed}}, reread)


def page(rows: list[dict], categories: list[str], thumbs: dict, blur: bool = True, redact: bool = False) -> str:
    esc = html.escape
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>vlmaudit review sheet</title><style>{CSS}"
              "td{vertical-align:top}</style></head><body><h1>vlmaudit review sheet</h1>"),
             "<p>" + INSTRUCTIONS.format(categories=esc(", ".join(categories))) + "</p>",
             ("<table><tr><th>#</th><th>image</th><th>shard / key</th><th>stratum</th><th>top score</th>"
              "<th>caption / url</th></tr>")]
    for row in rows:
        parts.append(_row(row, thumbs.get((row["shard"], row["key"])), blur, redact))
    parts.append(f"</table><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _row(row: dict, thumb: str | None, blur: bool, redact: bool) -> str:
    esc = html.escape
    image = (f"<img class='{'blur' if blur else ''}' alt='' src='data:image/jpeg;base64,{thumb}'>" if thumb
             else "(no image)")
    text = "" if redact else f"{esc((row.get('caption') or '')[:300])}<br><small>{esc((row.get('url') or '')[:300])}</small>"
    score = f"{row['top_category']} {row['top_score']:.3f}" if row.get("top_score") is not None else ""
    return (f"<tr><td>{row['row']}</td><td>{image}</td><td>{esc(row['shard'])}<br>{esc(row['key'])}</td>"
            f"<td>{esc(row['stratum'])}</td><td>{esc(score)}</td><td>{text}</td></tr>")
