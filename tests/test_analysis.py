"""Tests for groklab.analysis on synthetic histories and run tables with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from groklab.analysis import (PHASES, CriticalSize, GrokMetrics, Lapse, aggregate, classify_run, critical_fraction,
                              data_efficiency, first_step_at, fit_lapses, grokking_metrics, loss_spikes, phase_diagram,
                              plot_critical, plot_data_efficiency, plot_phase_diagram, t_critical_95)


def ramp(steps: np.ndarray, t_hit: int | None, top: float = 1.0) -> np.ndarray:
    """Accuracy rising linearly from 0 to 0.9 just before t_hit, then jumping to ``top``.

    With t_hit=None the curve saturates at ``top`` (< threshold) and never crosses.
    """
    if t_hit is None:
        return np.minimum(steps / max(steps[-1], 1), 1.0) * top
    return np.where(steps >= t_hit, top, 0.9 * steps / t_hit)


def history(t_train: int | None, t_val: int | None, n_steps: int = 1000, every: int = 10,
            val_top: float = 1.0, train_top: float = 1.0) -> pd.DataFrame:
    steps = np.arange(0, n_steps + 1, every)
    tr = ramp(steps, t_train, train_top if t_train is not None else 0.6)
    va = ramp(steps, t_val, val_top if t_val is not None else 0.3)
    return pd.DataFrame({"step": steps, "train_acc": tr, "val_acc": va,
                         "train_loss": 1 - tr, "val_loss": 1 - va, "lr": 1e-3})


# ---------------------------------------------------------------------------------------------
# grokking.py
# ---------------------------------------------------------------------------------------------

def test_first_step_at_finds_first_crossing_inclusive_and_unsorted():
    h = pd.DataFrame({"step": [30, 0, 10, 20, 40], "val_acc": [0.995, 0.1, 0.5, 0.99, 0.2]})
    assert first_step_at(h, "val_acc", 0.99) == 20  # inclusive, and in step order not row order
    assert first_step_at(h, "val_acc", 0.995) == 30
    assert first_step_at(h, "val_acc", 0.999) is None
    assert isinstance(first_step_at(h, "val_acc", 0.5), int)


def test_first_step_at_ignores_nan():
    h = pd.DataFrame({"step": [0, 10, 20], "val_acc": [np.nan, 0.2, 1.0]})
    assert first_step_at(h, "val_acc", 0.99) == 20


def test_fit_lapses_are_the_episodes_below_the_threshold_after_the_fit():
    """Dips before the fit are learning, not lapses; each lapse after it is one episode however many
    evaluations it spans, with its lowest accuracy and highest loss; rows may come unsorted."""
    h = pd.DataFrame({"step":       [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
                      "train_acc":  [0.1, 0.995, 0.5, 0.995, 1.0, 0.9, 0.6, 0.999, np.nan, 0.98, 1.0],
                      "train_loss": [4.0, 0.01, 2.0, 0.01, 1e-4, 0.3, 1.5, 1e-3, np.nan, 0.05, 1e-4]})
    h.loc[0, "train_acc"] = 0.98  # below the threshold before the fit: not counted
    assert fit_lapses(h.sample(frac=1, random_state=0)) == [Lapse(20, 0.5, 2.0), Lapse(50, 0.6, 1.5),
                                                           Lapse(90, 0.98, 0.05)]
    assert fit_lapses(h, threshold=0.95) == [Lapse(20, 0.5, 2.0), Lapse(50, 0.6, 1.5)]
    assert fit_lapses(history(t_train=None, t_val=None)) == []                   # never fitted
    assert fit_lapses(h.drop(columns="train_loss"))[0] == Lapse(20, 0.5, None)


def test_loss_spikes_count_jumps_above_the_running_minimum_after_the_floor():
    h = pd.DataFrame({"step": range(9),
                      "train_loss": [3.0, 1e-3, 1e-6, 1e-2, 1e-2, 1e-7, 1e-7, 5e-4, 1e-8]})
    assert loss_spikes(h) == 2                      # 1e-2 over two evaluations is one episode; 5e-4 > 1000 × 1e-7
    assert loss_spikes(h, factor=6e3) == 1          # the first jump is 1e4 × its minimum, the second 5e3 ×
    assert loss_spikes(h, floor=1e-9) is None       # never that low


def test_grokking_metrics_known_steps():
    m = grokking_metrics(history(t_train=100, t_val=600))
    assert (m.t_train99, m.t_val99) == (100, 600)
    # val ramps 0 -> 0.9 until 600, so it never hits 0.95 before the jump either
    assert m.t_val95 == 600
    assert m.delay_ratio == pytest.approx(6.0)
    assert m.delay_steps == 500
    assert m.steps == 1000
    assert m.final_train_acc == 1.0 and m.final_val_acc == 1.0 and m.max_val_acc == 1.0
    assert m.generalized and not m.censored
    d = m.as_dict()
    assert d["t_val99"] == 600 and d["censored"] is False and set(d) >= {"delay_ratio", "max_val_acc"}


def test_grokking_metrics_t_val95_before_t_val99():
    h = history(t_train=100, t_val=None)
    h.loc[h["step"] >= 300, "val_acc"] = 0.96
    h.loc[h["step"] >= 700, "val_acc"] = 0.995
    m = grokking_metrics(h)
    assert m.t_val95 == 300 and m.t_val99 == 700


def test_grokking_metrics_censored_run():
    m = grokking_metrics(history(t_train=100, t_val=None, n_steps=2000))
    assert m.t_val99 is None and m.t_val95 is None
    assert m.delay_ratio is None and m.delay_steps is None
    assert m.censored and not m.generalized
    assert m.steps == 2000
    assert m.final_val_acc == pytest.approx(0.3) and m.max_val_acc == pytest.approx(0.3)


def test_grokking_metrics_custom_threshold_and_final_vs_max():
    h = history(t_train=50, t_val=200, val_top=0.97)
    h.loc[h.index[-1], "val_acc"] = 0.8  # a late collapse: final differs from max
    assert grokking_metrics(h).t_val99 is None
    m = grokking_metrics(h, threshold=0.95)
    assert m.t_val99 == 200 and m.threshold == 0.95
    assert m.final_val_acc == pytest.approx(0.8) and m.max_val_acc == pytest.approx(0.97)


def test_grokking_metrics_empty_raises():
    with pytest.raises(ValueError):
        grokking_metrics(history(1, 1).iloc[:0])


def test_t_critical_matches_table_and_limits():
    assert t_critical_95(1) == pytest.approx(12.706)
    assert t_critical_95(4) == pytest.approx(2.776)
    assert t_critical_95(30) == pytest.approx(2.042)
    assert t_critical_95(math.inf) == pytest.approx(1.960)
    assert 2.000 < t_critical_95(50) < 2.021  # interpolated between df=40 and df=60
    assert t_critical_95(50) == pytest.approx(2.009, abs=2e-3)  # true value 2.0086
    assert math.isnan(t_critical_95(0))


def test_aggregate_mean_std_ci_and_nan_ignored():
    table = pd.DataFrame({"frac": [0.3] * 4 + [0.5] * 3,
                          "t": [100.0, 200.0, 300.0, np.nan, 10.0, 10.0, None]})
    out = aggregate(table, by=["frac"], value_cols="t").set_index("frac")
    a = out.loc[0.3]
    assert a["t_n"] == 3 and a["t_mean"] == pytest.approx(200.0) and a["t_std"] == pytest.approx(100.0)
    half = 4.303 * 100.0 / math.sqrt(3)  # t_{0.975, 2} = 4.303
    assert a["t_ci95_lo"] == pytest.approx(200 - half) and a["t_ci95_hi"] == pytest.approx(200 + half)
    b = out.loc[0.5]
    assert b["t_n"] == 2 and b["t_std"] == 0 and b["t_ci95_lo"] == b["t_ci95_hi"] == pytest.approx(10.0)


def test_aggregate_single_value_has_nan_interval_and_empty_by():
    table = pd.DataFrame({"g": ["a", "b", "b"], "v": [1.0, 2.0, 4.0], "w": [0.0, 1.0, 1.0]})
    out = aggregate(table, by=["g"], value_cols=["v", "w"]).set_index("g")
    assert out.loc["a", "v_n"] == 1 and math.isnan(out.loc["a", "v_ci95_lo"])
    assert out.loc["b", "w_mean"] == 1.0
    whole = aggregate(table, by=[], value_cols="v")
    assert len(whole) == 1 and whole["v_mean"].iloc[0] == pytest.approx(7 / 3)


# ---------------------------------------------------------------------------------------------
# sweeps.py: data efficiency
# ---------------------------------------------------------------------------------------------

def runs(rows: list[tuple[float, int | None]], steps: int = 5000, **extra) -> pd.DataFrame:
    return pd.DataFrame([{"data.frac_train": f, "t_val99": t, "steps": steps, "train.seed": i, **extra}
                         for i, (f, t) in enumerate(rows)])


def test_data_efficiency_counts_censored_runs_instead_of_dropping():
    table = runs([(0.3, None), (0.3, 1000), (0.3, 3000),  # 1/3 censored: exact median
                  (0.5, 400), (0.5, 600), (0.5, 800)])
    out = data_efficiency(table).set_index("data.frac_train")
    a = out.loc[0.3]
    assert a["n_total"] == 3 and a["n_censored"] == 1
    assert a["frac_generalized"] == pytest.approx(2 / 3)
    # the censored run ranks above both generalized ones, so the median is the 3000-step run,
    # not the 2000 one would get by dropping it
    assert a["median"] == 3000 and not a["median_is_lower_bound"]
    assert a["median_generalized"] == 2000 and a["mean_generalized"] == 2000
    b = out.loc[0.5]
    assert b["n_censored"] == 0 and b["median"] == 600 and not b["median_is_lower_bound"]


def test_data_efficiency_majority_censored_is_lower_bound_at_steps_trained():
    table = runs([(0.2, None), (0.2, None), (0.2, 700), (0.4, None), (0.4, None), (0.4, None)], steps=8000)
    out = data_efficiency(table).set_index("data.frac_train")
    assert out.loc[0.2, "median_is_lower_bound"] and out.loc[0.2, "median"] == 8000
    assert out.loc[0.2, "median_generalized"] == 700 and out.loc[0.2, "n_censored"] == 2
    assert out.loc[0.4, "median_is_lower_bound"] and out.loc[0.4, "median"] == 8000
    assert out.loc[0.4, "n_total"] == 3 and math.isnan(out.loc[0.4, "median_generalized"])


def test_data_efficiency_exactly_half_censored_is_lower_bound():
    out = data_efficiency(runs([(0.3, 100), (0.3, None)], steps=900))
    assert bool(out["median_is_lower_bound"].iloc[0]) and out["median"].iloc[0] == 900


def test_data_efficiency_groups_and_other_threshold_column():
    t = pd.concat([runs([(0.3, 100), (0.3, 300)], **{"optim.weight_decay": 1.0}),
                   runs([(0.3, 1000), (0.3, None)], **{"optim.weight_decay": 0.1})])
    t = t.rename(columns={"t_val99": "t_val95"})
    out = data_efficiency(t, threshold_col="t_val95", group="optim.weight_decay")
    assert list(out.columns[:2]) == ["optim.weight_decay", "data.frac_train"]
    assert list(out["optim.weight_decay"]) == [0.1, 1.0]
    assert list(out["median"]) == [5000, 200] and list(out["median_is_lower_bound"]) == [True, False]
    assert out.attrs["threshold_col"] == "t_val95" and out.attrs["group"] == ["optim.weight_decay"]


def test_runs_table_from_grokking_metrics_feeds_data_efficiency():
    table = pd.DataFrame([{"data.frac_train": f, **grokking_metrics(history(50, tv, n_steps=2000)).as_dict()}
                          for f, tv in [(0.3, None), (0.3, None), (0.3, 1500), (0.6, 300), (0.6, 500)]])
    out = data_efficiency(table).set_index("data.frac_train")
    assert out.loc[0.3, "median_is_lower_bound"] and out.loc[0.3, "median"] == 2000
    assert out.loc[0.6, "median"] == 400


# ---------------------------------------------------------------------------------------------
# sweeps.py: critical data size
# ---------------------------------------------------------------------------------------------

def crit_table(fracs: np.ndarray, acc_fn, seeds: int = 3, noise: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = np.repeat(fracs, seeds)
    y = np.clip(acc_fn(x) + rng.normal(0, noise, len(x)), 0, 1)
    return pd.DataFrame({"data.frac_train": x, "final_val_acc": y})


def test_critical_fraction_step_function_lands_in_gap_middle():
    fracs = np.round(np.arange(0.1, 0.95, 0.1), 2)
    c = critical_fraction(crit_table(fracs, lambda x: (x > 0.45).astype(float)))
    assert c.method == "sigmoid"
    assert c.d_crit == pytest.approx(0.45, abs=0.01)  # between 0.4 and 0.5, mid-gap
    assert c.semi_grok_fractions == [] and c.semi_grok_band is None


def test_critical_fraction_recovers_sigmoid_and_crossing_with_offsets():
    fracs = np.linspace(0.1, 0.9, 17)
    lo, hi, x0, w = 0.05, 0.95, 0.37, 0.05
    c = critical_fraction(crit_table(fracs, lambda x: lo + (hi - lo) / (1 + np.exp(-(x - x0) / w)),
                                     seeds=4, noise=0.02))
    assert c.method == "sigmoid"
    assert c.d_crit == pytest.approx(x0, abs=0.01)  # symmetric lo/hi around 0.5 -> crossing at x0
    assert c.width == pytest.approx(w, rel=0.25)
    assert c.params[0] == pytest.approx(lo, abs=0.03) and c.params[1] == pytest.approx(hi, abs=0.03)
    assert c.predict([x0])[0] == pytest.approx(0.5, abs=0.03)


def test_critical_fraction_fit_stays_within_accuracy_bounds():
    # a plateau at exactly 0 and 1 with noise clipped into [0, 1]: an unbounded fit overshoots
    fracs = np.linspace(0.1, 0.9, 9)
    c = critical_fraction(crit_table(fracs, lambda x: 1 / (1 + np.exp(-(x - 0.5) / 0.08)), noise=0.05))
    lo, hi, _, _ = c.params
    assert 0.0 <= lo < 0.1 and 0.9 < hi <= 1.0
    assert c.d_crit == pytest.approx(0.5, abs=0.03)


def test_critical_fraction_crossing_is_level_not_midpoint():
    # hi = 0.6: the 0.5 crossing lies well right of x0, where lo + (hi-lo)*s = 0.5 -> s = 5/6
    fracs = np.linspace(0.1, 0.9, 17)
    c = critical_fraction(crit_table(fracs, lambda x: 0.6 / (1 + np.exp(-(x - 0.4) / 0.05))))
    assert c.d_crit == pytest.approx(0.4 + 0.05 * math.log(5), abs=0.01)
    c2 = critical_fraction(crit_table(fracs, lambda x: 0.6 / (1 + np.exp(-(x - 0.4) / 0.05))), level=0.3)
    assert c2.d_crit == pytest.approx(0.4, abs=0.01)


def test_critical_fraction_semi_grok_band():
    # accuracy plateaus at ~0.5 (semi-grokking) for 0.4..0.5 between failure and success
    table = pd.DataFrame({"data.frac_train": [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.45, 0.45, 0.5, 0.5, 0.6, 0.6, 0.7],
                          "final_val_acc": [0.02, 0.03, 0.05, 0.08, 0.45, 0.55, 0.5, 0.6, 0.7, 0.8, 1, 1, 1]})
    c = critical_fraction(table)
    assert c.semi_grok_fractions == [0.4, 0.45, 0.5]
    assert c.semi_grok_band == (0.4, 0.5)
    assert 0.35 < c.d_crit < 0.5
    narrow = critical_fraction(table, semi_low=0.52, semi_high=0.9)
    assert narrow.semi_grok_fractions == [0.45, 0.5]


def test_semi_grok_thresholds_are_strict():
    table = pd.DataFrame({"data.frac_train": [0.1, 0.2, 0.3, 0.4, 0.5], "final_val_acc": [0, 0.25, 0.5, 0.75, 1]})
    c = critical_fraction(table, semi_low=0.25, semi_high=0.75)
    assert c.semi_grok_fractions == [0.3] and c.semi_grok_band == (0.3, 0.3)


def test_critical_fraction_falls_back_to_interpolation():
    # only three fractions: too few for a 4-parameter fit
    table = pd.DataFrame({"data.frac_train": [0.2, 0.4, 0.6], "final_val_acc": [0.0, 0.2, 1.0]})
    c = critical_fraction(table)
    assert c.method == "interpolation" and c.params is None and c.width is None
    assert c.d_crit == pytest.approx(0.4 + 0.2 * 0.3 / 0.8)
    assert math.isnan(c.predict([0.5])[0])


def test_critical_fraction_no_crossing():
    table = pd.DataFrame({"data.frac_train": [0.1, 0.2, 0.3, 0.4, 0.5], "final_val_acc": [0.0, 0.01, 0.02, 0.05, 0.1]})
    c = critical_fraction(table)
    assert c.d_crit is None and c.method == "none"


# ---------------------------------------------------------------------------------------------
# sweeps.py: phases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t_train, t_val, expected", [
    (100, 900, "grokking"),
    (100, 150, "comprehension"),
    (100, 100, "comprehension"),
    (100, 200, "grokking"),  # exactly delay_factor x counts as delayed
    (100, None, "memorization"),
    (None, None, "confusion"),
    (None, 500, "confusion"),  # train never fits: confusion regardless of val
])
def test_classify_run_each_phase_from_history_metrics_and_row(t_train, t_val, expected):
    h = history(t_train, t_val)
    m = grokking_metrics(h)
    assert classify_run(h) == expected
    assert classify_run(m) == expected
    assert classify_run(pd.Series(m.as_dict())) == expected
    assert classify_run(pd.DataFrame([m.as_dict()]).iloc[0]) == expected  # None -> NaN in a table


def test_classify_run_delay_factor_and_min_delay():
    m = grokking_metrics(history(10, 20))  # evaluations every 10 steps
    assert classify_run(m) == "grokking"
    assert classify_run(m, delay_factor=3.0) == "comprehension"
    assert classify_run(m, min_delay_steps=100) == "comprehension"  # 10 steps is trivially close


def test_classify_run_thresholds():
    h = history(100, 600, val_top=0.97)  # val reaches 0.97, never 0.99
    assert classify_run(h) == "memorization"
    assert classify_run(h, val_thr=0.95) == "grokking"
    m = grokking_metrics(h)
    assert classify_run(m, val_thr=0.95) == "grokking"  # answered from t_val95
    with pytest.raises(ValueError):
        classify_run(m, train_thr=0.9)  # stored metrics cannot answer at another level


def test_phase_diagram_tiny_grid():
    def row(lr, wd, tt, tv):
        return {"optim.lr": lr, "optim.weight_decay": wd, **grokking_metrics(history(tt, tv)).as_dict()}
    table = pd.DataFrame([
        row(1e-3, 0.1, 100, 900), row(1e-3, 0.1, 100, 800), row(1e-3, 0.1, 100, None),  # 2/3 grok
        row(1e-2, 0.1, 100, 120), row(1e-2, 0.1, 100, 110),                              # comprehension
        row(1e-3, 1.0, None, None),                                                      # confusion
        row(1e-2, 1.0, 100, None), row(1e-2, 1.0, 100, 900),                             # tie
    ])
    pd_ = phase_diagram(table)
    maj = pd_.majority
    assert list(maj.index) == [0.1, 1.0] and list(maj.columns) == [1e-3, 1e-2]
    assert maj.loc[0.1, 1e-3] == "grokking"
    assert maj.loc[0.1, 1e-2] == "comprehension"
    assert maj.loc[1.0, 1e-3] == "confusion"
    assert maj.loc[1.0, 1e-2] == "grokking"  # tie broken by PHASES order (grokking before memorization)
    f = pd_.fractions.set_index(["optim.weight_decay", "optim.lr"])
    assert f.loc[(0.1, 1e-3), "n"] == 3
    assert f.loc[(0.1, 1e-3), "frac_grokking"] == pytest.approx(2 / 3)
    assert f.loc[(0.1, 1e-3), "frac_memorization"] == pytest.approx(1 / 3)
    fr = pd_.fractions[[f"frac_{p}" for p in PHASES]].sum(axis=1)
    assert np.allclose(fr, 1.0)


def test_phase_diagram_precomputed_phases_and_missing_cell():
    table = pd.DataFrame({"optim.lr": [1, 1, 2], "optim.weight_decay": [0, 1, 0],
                          "phase": ["memorization", "confusion", "grokking"]})
    maj = phase_diagram(table, phase_col="phase").majority
    assert maj.loc[0, 1] == "memorization" and maj.loc[0, 2] == "grokking"
    assert maj.loc[1, 2] is None  # no runs there


# ---------------------------------------------------------------------------------------------
# plots.py
# ---------------------------------------------------------------------------------------------

def assert_image_file(path, kind):
    data = path.read_bytes()
    assert len(data) > 1000
    if kind == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert b"<svg" in data[:2000]


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_plots_write_png_and_svg(tmp_path, ext):
    eff = data_efficiency(runs([(0.3, None), (0.3, None), (0.3, 4000), (0.5, 600), (0.5, 800), (0.7, 300)]))
    fig = plot_data_efficiency(eff, tmp_path / f"eff.{ext}")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    # the censored cell is drawn as an upward triangle at its lower bound (5000 steps)
    tri = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
    assert len(tri) == 1 and list(tri[0].get_ydata()) == [5000]
    assert_image_file(tmp_path / f"eff.{ext}", ext)

    table = crit_table(np.linspace(0.1, 0.9, 9), lambda x: 1 / (1 + np.exp(-(x - 0.5) / 0.05)))
    table.loc[len(table)] = {"data.frac_train": 0.5, "final_val_acc": 0.5}
    crit = critical_fraction(table)
    fig = plot_critical(table, crit, tmp_path / "sub" / f"crit.{ext}")
    assert any(np.allclose(ln.get_xdata(), crit.d_crit) for ln in fig.axes[0].get_lines())
    assert_image_file(tmp_path / "sub" / f"crit.{ext}", ext)

    table = pd.DataFrame({"optim.lr": [1e-4, 1e-3, 1e-4, 1e-3], "optim.weight_decay": [0.1, 0.1, 1, 1],
                          "phase": ["confusion", "memorization", "grokking", "comprehension"]})
    diagram = phase_diagram(table, phase_col="phase")
    fig = plot_phase_diagram(diagram, tmp_path / f"phase.{ext}")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-4", "1e-3"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1e-1", "1"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(PHASES)
    assert_image_file(tmp_path / f"phase.{ext}", ext)
    plot_phase_diagram(diagram.majority)  # a bare pivot works too


def test_curves_censored_at_one_budget_draw_their_triangles_apart():
    """Two curves that never generalize at 0.4 and 0.5 would hide one's triangles under the
    other's: each is set a little apart along x, the bound itself unchanged."""
    both = pd.concat([runs([(0.4, None), (0.5, None)], sweep="a"), runs([(0.4, None), (0.5, 300)], sweep="b")])
    fig = plot_data_efficiency(data_efficiency(both, group="sweep"))
    tri = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "^"]
    a, b = (list(ln.get_xdata()) for ln in tri)
    assert len(a) == 2 and len(b) == 1 and b[0] != a[0] and abs(b[0] - 0.4) < 0.05 and abs(a[0] - 0.4) < 0.05
    assert all(list(ln.get_ydata()) == [5000] * len(ln.get_ydata()) for ln in tri)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][::2] == ["a", "b"]  # the sweep's name


def test_plots_reject_unknown_format(tmp_path):
    eff = data_efficiency(runs([(0.3, 100)]))
    with pytest.raises(ValueError):
        plot_data_efficiency(eff, tmp_path / "eff.pdf")


def test_public_types_are_frozen():
    m = grokking_metrics(history(10, 20))
    with pytest.raises(Exception):
        m.t_val99 = 1  # type: ignore[misc]
    assert isinstance(m, GrokMetrics)
    assert isinstance(critical_fraction(crit_table(np.linspace(0.1, 0.9, 5), lambda x: x)), CriticalSize)
