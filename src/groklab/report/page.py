"""The self-contained HTML report: summary table, overlay, sweep analyses, claims and one
section per run (curves, full config with the differing fields highlighted).

    html = render_report(views, title="runs 3, 4, 7")          # views from data.collect_runs
    Path("report.html").write_text(html, encoding="utf-8")

The page embeds Plotly's own bundle from the ``plotly`` package (no CDN: it opens offline) and
the report's script and style from ``static/``. Markup is built only with :mod:`.markup`.
"""
from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import Any, Iterable, Sequence

from .. import __version__
from ..registry import ConfigError
from .data import RunView, curves, differing_fields
from .markup import Markup, esc, label, script_json, tag

CLAIM_KEYS = ("id", "study", "where", "claim", "claimed", "measured", "verdict")
OVERLAY_DEFAULT = 8  # runs ticked for the overlay when the page opens


def _asset(name: str) -> str:
    return (resources.files("groklab.report") / "static" / name).read_text(encoding="utf-8")


def plotly_js() -> str:
    """Plotly's minified bundle as shipped in the ``plotly`` package (no network)."""
    try:
        import plotly
    except ImportError:
        raise ConfigError("the HTML report embeds Plotly's JavaScript: pip install plotly") from None
    js = (resources.files(plotly) / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    # An inline script ends at the first "</script"; "<\/" means the same inside JS strings.
    return js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if _num(v) and spec:
        return format(v, spec)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _cell(v: Any, spec: str = "", cls: str | None = None) -> Markup:
    """A table cell whose sort value is the raw number (or text), shown formatted."""
    num = _num(v)
    sort = repr(float(v)) if num else ("" if v is None else _fmt(v))
    return tag("td", _fmt(v, spec), data_v=sort, class_=" ".join(c for c in ("num" if num else None, cls) if c) or None)


def summary_table(views: Sequence[RunView], diff: Sequence[str]) -> Markup:
    """Sortable: run, status, differing fields, thresholds, delay ratio, final accuracies, wall time."""
    cols: list[tuple[str, str, str | None]] = [("overlay", "", None), ("run", "num", None), ("name", "text", None),
                                               ("status", "text", None)]
    cols += [(f, "num" if all(_num(v.config.get(f)) for v in views) else "text", "diff") for f in diff]
    cols += [(h, "num", None) for h in ("t_train99", "t_val99", "delay ratio", "final train acc", "final val acc",
                                         "wall time (s)")]
    head = tag("tr", [tag("th", tag("button", name, type="button", class_="sort") if kind else name,
                          data_type=kind or None, class_=cls) for name, kind, cls in cols])
    body = []
    for i, v in enumerate(views):
        m = v.metrics
        cells = [tag("td", tag("input", type="checkbox", class_="pick", data_run=i,
                               checked=i < OVERLAY_DEFAULT, aria_label=f"overlay run {v.run_id}")),
                 tag("td", tag("a", v.run_id, href=f"#run-{v.run_id}"), class_="num", data_v=v.run_id),
                 _cell(v.name), _cell(v.status, cls=f"status-{v.status}")]
        cells += [_cell(v.config.get(f), cls="diff") for f in diff]
        cells += [_cell(m.t_train99 if m else None), _cell(m.t_val99 if m else None),
                  _cell(m.delay_ratio if m else None, ".2f"), _cell(m.final_train_acc if m else None, ".3f"),
                  _cell(m.final_val_acc if m else None, ".3f"), _cell(v.summary.get("wall_seconds"), ".1f")]
        body.append(tag("tr", cells, data_i=i))
    return tag("div", tag("table", tag("thead", head), tag("tbody", body), id="runs-table"), class_="scroll")


def config_table(view: RunView, diff: Iterable[str]) -> Markup:
    """Every field of the run's config; the fields that differ between the report's runs highlighted."""
    diff = set(diff)
    rows = [tag("tr", tag("td", k), tag("td", _fmt(v)), class_="diff" if k in diff else None)
            for k, v in view.config.items()]
    return tag("table", tag("tbody", rows), class_="config")


def run_section(view: RunView, index: int, diff: Sequence[str]) -> Markup:
    m = view.metrics
    facts = [f"{view.status}", f"created {view.created}"]
    if view.sweep:
        facts.append(f"sweep {view.sweep}")
    if m:
        facts.append(f"{m.steps} steps; final train acc {m.final_train_acc:.3f}, val acc {m.final_val_acc:.3f}")
    differ = ", ".join(f"{f} = {_fmt(view.config.get(f))}" for f in diff)
    return tag("article",
               tag("h3", f"run {view.run_id}: {view.name}"),
               tag("p", " · ".join(facts), class_="meta"),
               tag("p", view.description, class_="note") if view.description else None,
               tag("p", f"differs in: {differ}", class_="note") if differ else None,
               tag("div", class_="plot run-plot", data_run=index, id=f"plot-run-{view.run_id}"),
               tag("details", tag("summary", f"config ({len(view.config)} fields, differing ones highlighted)"),
                   tag("div", config_table(view, diff), class_="scroll")),
               class_="run", id=f"run-{view.run_id}")


def claims_table(claims: Sequence[dict], run_ids: Iterable[int]) -> Markup:
    """A claim per row (id, study, where, claim, claimed, measured, verdict) and links to the
    sections of the runs behind it (a claim's optional ``runs``)."""
    shown = set(run_ids)
    head = tag("tr", [tag("th", tag("button", k, type="button", class_="sort"), data_type="text")
                      for k in CLAIM_KEYS + ("runs",)])
    rows = []
    for i, c in enumerate(claims):
        verdict = str(c.get("verdict", ""))
        links = [tag("a", f"run {r}", href=f"#run-{int(r)}") if int(r) in shown else esc(f"run {r}")
                 for r in c.get("runs") or ()]
        cells = [_cell(c.get(k), cls=f"verdict-{verdict.lower().replace(' ', '-')}" if k == "verdict" else None)
                 for k in CLAIM_KEYS]
        cells.append(tag("td", [(esc(", ") if j else None, a) for j, a in enumerate(links)]))
        rows.append(tag("tr", cells, data_i=i))
    return tag("div", tag("table", tag("thead", head), tag("tbody", rows), id="claims-table"), class_="scroll")


def _run_data(view: RunView, max_points: int) -> dict:
    m = view.metrics
    return {"id": view.run_id, "label": label(f"{view.run_id}: {view.name}"), "curves": curves(view, max_points),
            "t_train99": m.t_train99 if m else None, "t_val99": m.t_val99 if m else None,
            "pct": f"{(m.threshold if m else 0.99) * 100:g} %",
            "phases": [[s, label(name)] for s, name in view.phases]}


def render_report(views: Sequence[RunView], *, title: str, subtitle: str = "",
                  sweep_figures: Sequence[dict] = (), claims: Sequence[dict] | None = None,
                  max_points: int = 200) -> str:
    """The whole page as one string.

    Args:
        views: the runs, in table order.
        title: page title (escaped like everything else).
        subtitle: one line under the title (e.g. the store path).
        sweep_figures: from :func:`figures.sweep_figures` (empty: no sweep section).
        claims: claim dicts (see :data:`CLAIM_KEYS`; optional ``runs``); None: no claims section.
        max_points: at most about this many points per curve (decimated on a log grid).
    """
    diff = differing_fields([v.config for v in views]) if len(views) > 1 else []
    nav = [("#summary", "runs"), ("#overlay", "overlay")]
    sections = [tag("section", tag("h2", f"runs ({len(views)})"),
                    tag("p", "click a column to sort; tick runs to overlay them"
                        + ("; highlighted columns differ between runs" if diff else ""), class_="note"),
                    summary_table(views, diff), id="summary"),
                tag("section", tag("h2", "overlay"),
                    tag("label", "show ",
                        tag("select", [tag("option", t, value=k) for k, t in
                                       (("accuracy", "accuracy"), ("loss", "loss"), ("norm", "weight norm"))],
                            id="overlay-metric")),
                    tag("div", class_="plot", id="overlay-plot"), id="overlay")]
    if sweep_figures:
        nav.append(("#sweep", "sweep analyses"))
        parts = [tag("h2", "sweep analyses")]
        for f in sweep_figures:
            parts += [tag("h3", f["title"]), tag("p", f["note"], class_="note")]
            if f["figure"] is not None:
                parts.append(tag("div", class_="plot", id=f["id"]))
        sections.append(tag("section", parts, id="sweep"))
    if claims is not None:
        nav.append(("#claims", "claims"))
        sections.append(tag("section", tag("h2", f"claims ({len(claims)})"),
                            claims_table(claims, [v.run_id for v in views]), id="claims"))
    nav.append(("#runs", "each run"))
    sections.append(tag("section", tag("h2", "each run"), [run_section(v, i, diff) for i, v in enumerate(views)],
                        id="runs"))
    data = {"runs": [_run_data(v, max_points) for v in views],
            "figures": [{"id": f["id"], "figure": f["figure"]} for f in sweep_figures if f["figure"] is not None]}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    body = tag("body",
               tag("header", tag("h1", title),
                   tag("p", f"groklab {__version__} · generated {stamp}" + (f" · {subtitle}" if subtitle else ""),
                       class_="meta"),
                   tag("nav", [tag("a", text, href=href) for href, text in nav])),
               sections,
               tag("script", script_json(data), type="application/json", id="groklab-data"),
               tag("script", Markup(plotly_js())),
               tag("script", Markup(_asset("report.js"))))
    head = tag("head", Markup('<meta charset="utf-8">'),
               Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
               tag("title", title), tag("style", Markup(_asset("report.css"))))
    return "<!DOCTYPE html>\n" + tag("html", head, body, lang="en") + "\n"
