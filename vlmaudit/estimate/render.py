"""`estimate` results as a terminal table, Markdown or an HTML section (JSON: the dict itself).
Category names come from report footers (data): escaped for each medium."""

from __future__ import annotations

from vlmaudit.report.estimates_html import HEAD, LEGEND, header_line, rows, to_html_section  # noqa: F401
from vlmaudit.report.safetext import markdown_text, rich_text

COMPACT = ("category", "prevalence\n95 % CI\npositive/labels", "precision\n95 % CI\ntrue/flagged",
           "recall\n95 % CI\nflagged/positive")


def _compact(entry: dict) -> str:
    counts = f"{entry['positives']}/{entry['labels']}"
    if entry["status"] != "ok":
        return f"too few labels\n\n{counts}"
    return f"{entry['estimate']:.2%}\n[{entry['low']:.2%}, {entry['high']:.2%}]\n{counts}"


def console_and_table(title: str, **options):
    """The dashboard's console (plain ASCII off a terminal or with NO_COLOR) and a table styled to match."""
    from rich import box
    from rich.table import Table

    from vlmaudit.report.dashboard import make_console

    console = make_console()
    plain = console.no_color or not console.is_terminal
    return console, Table(title=title, title_justify="left", box=box.ASCII if plain else box.SIMPLE_HEAVY, **options)


def render_table(result: dict) -> None:
    """Three lines per cell (estimate, interval, counts) so the table fits 80 columns."""
    from rich.text import Text

    console, table = console_and_table("Prevalence from the labelled review sample", show_lines=True)
    for i, name in enumerate(COMPACT):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for row in result["categories"] + [result["overall"]]:
        cells = (Text(_compact(row[k])) for k in ("prevalence", "precision", "recall"))  # numbers only, no data
        table.add_row(rich_text(row["name"]), *cells)
    console.print(table)
    console.print(rich_text(header_line(result)))
    console.print(rich_text(f"method: {result['method']}"))


def to_markdown(result: dict) -> str:
    lines = ["## Prevalence from the labelled review sample", "", markdown_text(header_line(result)), "",
             "| " + " | ".join(HEAD) + " |", "| --- |" + " ---: |" * (len(HEAD) - 1)]
    lines += [f"| {markdown_text(name)} | " + " | ".join(cells) + " |" for name, cells in rows(result)]
    lines += ["", markdown_text(LEGEND), "", f"Method: {markdown_text(result['method'])}.", "",
              "| stratum | rows | drawn | labelled |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {markdown_text(s['id'])} | {s['rows']:,} | {s['drawn']:,} | {s['labelled']:,} |" for s in result["strata"]]
    return "\n".join(lines) + "\n"


def to_html(result: dict) -> str:
    from vlmaudit.report.exports import CSS

    return (f"<!doctype html><html><head><meta charset='utf-8'><title>vlmaudit estimate</title><style>{CSS}</style>"
            f"</head><body><h1>vlmaudit estimate</h1>\n{to_html_section(result)}\n</body></html>")
