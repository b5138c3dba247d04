"""The prevalence estimates (the `estimate` result dict) as an HTML section, and the cells every
medium shares: the report's HTML page shows them without importing the estimate stage, whose
renderer (estimate/render.py) builds on this module."""

from __future__ import annotations

import html

HEAD = ("category", "prevalence (95 % CI)", "positive / labelled", "precision (95 % CI)", "true / flagged",
        "recall (95 % CI)", "flagged / positive")
LEGEND = ("Prevalence: share of the scored samples that show the category, from the labelled review sample. "
          "Precision and recall: of the current thresholds' flags, against the labels. "
          "\"too few labels\": a stratum has no labelled row, or there are not enough labels for an interval.")


def interval(entry: dict) -> str:
    if entry["status"] != "ok":
        return "too few labels"
    return f"{entry['estimate']:.2%} [{entry['low']:.2%}, {entry['high']:.2%}]"


def _cells(row: dict) -> list[str]:
    p, pr, rc = row["prevalence"], row["precision"], row["recall"]
    return [interval(p), f"{p['positives']}/{p['labels']}", interval(pr), f"{pr['positives']}/{pr['labels']}",
            interval(rc), f"{rc['positives']}/{rc['labels']}"]


def rows(result: dict) -> list[tuple[str, list[str]]]:
    return [(r["name"], _cells(r)) for r in result["categories"] + [result["overall"]]]


def header_line(result: dict) -> str:
    return (f"{result['labelled']:,} of {result['drawn']:,} drawn samples labelled; population {result['population']:,} "
            f"scored samples in {len(result['strata'])} strata ({result['unscored']:,} unscored rows not counted)")


def to_html_section(result: dict) -> str:
    esc = html.escape
    parts = ["<h2>Prevalence from the labelled review sample</h2>", f"<p>{esc(header_line(result))}</p>",
             "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEAD) + "</tr>"]
    parts += ["<tr><td>" + esc(name) + "</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
              for name, cells in rows(result)]
    parts += ["</table>", f"<p>{esc(LEGEND)}</p>", f"<p>Method: {esc(result['method'])}.</p>",
              "<table><tr><th>stratum</th><th>rows</th><th>drawn</th><th>labelled</th></tr>"]
    parts += [f"<tr><td>{esc(s['id'])}</td><td>{s['rows']:,}</td><td>{s['drawn']:,}</td><td>{s['labelled']:,}</td></tr>"
              for s in result["strata"]]
    parts.append("</table>")
    return "\n".join(parts)
