"""The claims table as Markdown: claimed vs measured vs verdict, one row per claim."""
from __future__ import annotations

from typing import Sequence

COLUMNS = ("id", "study", "where", "claim", "claimed", "measured", "verdict", "size", "runs")


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict], title: str = "groklab claims") -> str:
    """A Markdown document: a verdict count line, then the table of `rows` (claims_table dicts)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines = [f"# {title}", "", ", ".join(f"{v}: {n}" for v, n in counts.items()) or "no claims", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"
