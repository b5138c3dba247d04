"""Eval results as a terminal table or Markdown (JSON is the result dict itself)."""

from __future__ import annotations

COLUMNS = {
    "judge": ("perception_accuracy", "image_alignment", "text_alignment", "modality_gap"),
    "scorer": ("top1", "top5", "category_accuracy", "auroc", "tpr_at_thresholds", "fpr_at_thresholds"),
}


def rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per category, then `overall`."""
    names = [c for c in COLUMNS[result["kind"]] if c in result["overall"]]
    body = [[cid] + [_fmt(values.get(n)) for n in names] for cid, values in result["per_category"].items()]
    body.append(["overall"] + [_fmt(result["overall"].get(n)) for n in names])
    return ["category"] + names, body


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _title(result: dict) -> str:
    model = result.get("model", {})
    return (f"{result['kind']} {model.get('model', '?')}: {result['evaluated']} of {result['items']} images evaluated"
            f"{', ' + str(result['unreadable']) + ' unreadable' if result['unreadable'] else ''}")


def to_markdown(result: dict) -> str:
    header, body = rows(result)
    lines = [f"**{_title(result)}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    header, body = rows(result)
    table = Table(title=escape(_title(result)))
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for gap in result.get("largest_gaps", []):
        console.print(f"modality gap {gap['gap']:+.2f}  {escape(gap['concept'])}")
