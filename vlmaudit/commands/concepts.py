"""`vlmaudit concepts`: the taxonomy as a table or JSON."""

from __future__ import annotations


def show_concepts(rules_dir, as_json: bool) -> None:
    from vlmaudit.report.safetext import json_text, rich_text
    from vlmaudit.rulebook.load import load_rules

    rules = load_rules(rules_dir)
    rows = _rows(rules)
    if as_json:
        print(json_text({"taxonomy_version": rules.taxonomy.tag, "concepts": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=rich_text(f"{len(rows)} concepts, {len(rules.taxonomy.categories)} categories "
                                  f"({rules.taxonomy.tag})"))
    for column in ("category", "id", "name", "thr img", "thr cap", "prompts"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(rich_text(row["category"]), rich_text(row["id"]), rich_text(row["name"]),
                      f"{row['threshold']['image']:.2f}",
                      f"{row['threshold']['caption']:.2f}", str(len(row["prompts"])))
    Console().print(table)


def _rows(rules) -> list[dict]:
    thresholds = rules.thresholds.as_dict(rules.taxonomy)
    return [
        {"id": c.id, "name": c.name, "category": c.category, "description": c.description,
         "prompts": rules.taxonomy.prompts_for(c), "threshold": thresholds[c.id]}
        for c in rules.taxonomy.concepts
    ]
