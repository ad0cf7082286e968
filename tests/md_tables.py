"""Reading the Markdown tables the scripts print (the fleet simulation's, the chaos run's)."""

from __future__ import annotations


def table(text: str, first_column: str) -> list[dict]:
    """The rows of the Markdown table whose header starts with `first_column`, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")))))
    return rows
