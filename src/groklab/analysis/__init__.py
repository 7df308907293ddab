"""Analysis of metric histories and sweep tables: grokking metrics, D_crit, phase diagrams, plots.

Works on plain pandas data only (no training, no run store)::

    from groklab.analysis import grokking_metrics, data_efficiency, critical_fraction
    m = grokking_metrics(history)                     # one run
    table = ...                                       # one row per run: swept fields + m.as_dict()
    eff = data_efficiency(table, x="data.frac_train")
    crit = critical_fraction(table)
"""
from .grokking import (GrokMetrics, Lapse, aggregate, first_step_at, fit_lapses, grokking_metrics, loss_spikes,
                       t_critical_95)
from .plots import plot_critical, plot_data_efficiency, plot_phase_diagram
from .sweeps import (PHASES, CriticalSize, PhaseDiagram, classify_run, critical_fraction, data_efficiency,
                     phase_diagram)

__all__ = [
    "GrokMetrics", "Lapse", "aggregate", "first_step_at", "fit_lapses", "grokking_metrics", "loss_spikes",
    "t_critical_95",
    "PHASES", "CriticalSize", "PhaseDiagram", "classify_run", "critical_fraction", "data_efficiency",
    "phase_diagram",
    "plot_critical", "plot_data_efficiency", "plot_phase_diagram",
]
