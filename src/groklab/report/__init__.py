"""See and share results: the HTML report, comparisons, exports and tracker hooks.

    from groklab.report import build_report, compare_runs, export_runs
    html = build_report(Store("runs"), run_ids=[3, 4, 7])             # or sweep="mlp-fraction"
    Path("report.html").write_text(html, encoding="utf-8")

    from groklab.report.trackers import TensorBoardTracker
    with TensorBoardTracker("runs/tb") as tb:
        train(cfgs, hooks=[tb])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the package stays cheap to import: `groklab run` loads only its trackers module
    from ..store import Store

__all__ = ["build_report", "load_claims"]


def load_claims(store: "Store") -> list[dict]:
    """The claims table of `groklab reproduce` (a list of claim dicts: id, study, where, claim,
    claimed, measured, verdict, and the ``runs`` behind it), from what `store` holds."""
    from ..reproduce import claims_table

    return [dict(c) for c in claims_table(store)]


def build_report(store: "Store", run_ids: Sequence[int] = (), sweep: str | None = None, *,
                 claims: Sequence[dict] | None = None, title: str | None = None, max_points: int = 200) -> str:
    """The self-contained HTML report of runs, of a sweep (with its analyses) or of claims.

    Args:
        store: the run store.
        run_ids: runs to show, in this order.
        sweep: show every run of this sweep, and the analyses that apply to it.
        claims: claim dicts to render; the runs they name are shown too.
        title: page title (default from the selection).
        max_points: about this many points per curve at most (log-grid decimation).
    Returns:
        The page as one string.
    Raises:
        ConfigError: unknown runs or sweep, or nothing to show.
    """
    from .data import collect_runs, differing_fields
    from .figures import sweep_figures
    from .page import render_report

    ids = list(run_ids)
    if claims is not None:
        ids += [int(r) for c in claims for r in (c.get("runs") or ()) if int(r) not in ids]
    views = collect_runs(store, ids, sweep) if (ids or sweep) else []
    figures = []
    if sweep is not None:
        figures = sweep_figures(views, differing_fields([v.config for v in views]))
    if title is None:
        title = (f"groklab sweep {sweep}" if sweep else "groklab claims" if claims is not None
                 else "groklab runs " + ", ".join(str(v.run_id) for v in views))
    return render_report(views, title=title, subtitle=f"store {store.paths.root}", sweep_figures=figures,
                         claims=claims, max_points=max_points)
