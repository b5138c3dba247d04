"""`vlmaudit concepts`: the taxonomy as a table or JSON."""

from __future__ import annotations

from vlmaudit.commands.options import ConceptsRequest


def show_concepts(request: ConceptsRequest) -> None:
    from vlmaudit.report.safetext import json_text
    from vlmaudit.rulebook.load import load_rules

    rules = load_rules(request.rules)
    rows = _rows(rules)
    if request.as_json:
        print(json_text({"taxonomy_version": rules.taxonomy.tag, "concepts": rows}))
        return
    from vlmaudit.report.dashboard import make_console

    console = make_console()
    console.print(_table(rows, rules, console))


def _table(rows: list[dict], rules, console):
    """One section per category; the id column is as wide as the longest id, so a narrow terminal
    or a pipe wraps the names (at spaces) and never splits an id."""
    from itertools import groupby

    from rich import box
    from rich.table import Table

    from vlmaudit.report.safetext import rich_text, safe_text

    plain = console.no_color or not console.is_terminal
    table = Table(title=rich_text(f"{len(rows)} concepts, {len(rules.taxonomy.categories)} categories "
                                  f"({rules.taxonomy.tag}); img / cap: thresholds"), box=box.ASCII if plain else box.SIMPLE_HEAVY)
    widest = max((len(safe_text(r["id"])) for r in rows + [{"id": r["category"] + ":"} for r in rows]), default=2)
    table.add_column("id", min_width=min(widest, 40), no_wrap=widest <= 40, overflow="fold")
    table.add_column("name", overflow="fold")
    for column in ("img", "cap", "prompts"):  # img / cap: the thresholds
        table.add_column(column, justify="right", overflow="fold")
    for category, group in groupby(rows, key=lambda r: r["category"]):
        table.add_row(rich_text(f"{category}:"), style="bold", end_section=False)
        for row in group:
            table.add_row(rich_text(row["id"]), rich_text(row["name"]), f"{row['threshold']['image']:.2f}",
                          f"{row['threshold']['caption']:.2f}", str(len(row["prompts"])))
        table.add_section()
    return table


def _rows(rules) -> list[dict]:
    thresholds = rules.thresholds.as_dict(rules.taxonomy)
    return [
        {"id": c.id, "name": c.name, "category": c.category, "description": c.description,
         "prompts": rules.taxonomy.prompts_for(c), "threshold": thresholds[c.id]}
        for c in rules.taxonomy.concepts
    ]
