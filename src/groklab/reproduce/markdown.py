"""The claims table as Markdown: claimed vs measured vs verdict, one row per claim."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

COLUMNS = ("id", "study", "where", "claim", "claimed", "measured", "verdict", "size", "runs")


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def write_figures(store, rows: Sequence[dict], folder: Path) -> None:
    """The overlay figure (accuracy and loss of every run) of each claim that has runs, as
    `folder/<id>.png`; sets each such row's ``figure`` to that path relative to `folder`'s parent."""
    from ..report.compare import overlay_figure
    from ..report.data import collect_runs

    for row in rows:
        if row.get("runs"):
            folder.mkdir(parents=True, exist_ok=True)
            overlay_figure(collect_runs(store, row["runs"]), folder / f"{row['id']}.png")
            row["figure"] = f"[png]({folder.name}/{row['id']}.png)"


def markdown_table(rows: Sequence[dict], title: str = "groklab claims") -> str:
    """A Markdown document: a verdict count line, then the table of `rows` (claims_table dicts;
    a ``figure`` column when rows carry one)."""
    cols = COLUMNS + (("figure",) if any("figure" in r for r in rows) else ())
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines = [f"# {title}", "", ", ".join(f"{v}: {n}" for v, n in counts.items()) or "no claims", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
