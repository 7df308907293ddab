"""`groklab reproduce`: claim files, checks on synthetic metrics, verdicts from the store, CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from groklab import load_config
from groklab.cli import main
from groklab.registry import ConfigError
from groklab.reproduce import (CRITERIA, VERDICTS, claims_table, evaluate, get_claim, load_claims, reproduce,
                               validate)
from groklab.reproduce.claims import parse_file
from groklab.reproduce.criteria import build_criterion
from groklab.reproduce.evidence import Evidence, GroupEvidence, StoredRun
from groklab.reproduce.verdict import (INCONCLUSIVE, NEEDS_CLUSTER, NEEDS_PROTOCOL, NOT_REPRODUCED, NOT_RUN, PARTIAL,
                                       REPRODUCED, Outcome, combine)
from groklab.analysis import grokking_metrics

from conftest import PROCESSES, TINY_GROK

# ---------------------------------------------------------------- claim files


def test_every_shipped_claim_validates():
    claims = load_claims()
    assert {c.study for c in claims} == {"rnn-lstm", "mystery", "task-learning", "reproduction", "literature"}
    assert len({c.id for c in claims}) == len(claims)
    for c in claims:
        validate(c)  # every preset exists and every generated config validates, at both sizes
        for check in c.checks:
            assert type(check) in [CRITERIA.get(n) for n in CRITERIA]


CLAIM = """
study = "literature"
[[claims]]
id = "tiny"
where = "fig. 1"
source = "test"
claim = "the tiny MLP groks"
check = [{ name = "CHECK", group = "main", min_ratio = 1.5 }]
[claims.runs.main]
base = "quickstart"
[claims.quick]
set = SET
seeds = [0]
cpu_minutes = 0.1
[claims.full]
cpu_minutes = 1000
"""


def _claim_text(check="delay_ratio", set_=None):
    return CLAIM.replace("CHECK", check).replace("SET", json.dumps(set_ or TINY_GROK))


def test_unknown_check_is_named_with_file_and_field():
    with pytest.raises(ConfigError, match=r"tiny\.toml: claim 'tiny'\.check\[0\]: check\.name='delay_ration'.*"
                                          r"did you mean 'delay_ratio'"):
        parse_file(_claim_text("delay_ration"), "tiny.toml")


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.replace('where = "fig. 1"', 'where = "fig. 1"\nfigure = 3'), r"unknown field\(s\) 'figure'"),
    (lambda t: t.replace("min_ratio = 1.5", 'min_ratio = "big"'), r"check\[0\]\.min_ratio='big' must be of type float"),
    (lambda t: t.replace("min_ratio = 1.5", "min_ratio = 1.5, slack = 2"), r"has no parameter 'slack'"),
    (lambda t: t.replace('group = "main"', 'group = "other"'), r"group 'other' is not one of runs \(main\)"),
    (lambda t: t.replace('study = "literature"', 'study = "folklore"'), r"study='folklore' must be one of"),
    (lambda t: t.replace("[claims.full]\ncpu_minutes = 1000\n", ""), r"\.full is missing"),
    (lambda t: t.replace('source = "test"\n', ""), r"\.source must name the paper"),
])
def test_bad_claim_files_fail_naming_the_field(edit, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_file(edit(_claim_text()), "tiny.toml")


def test_bad_preset_in_a_claim_fails_validation(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(_claim_text().replace('base = "quickstart"', 'base = "quickstrat"'))
    (claim,) = load_claims([path])
    with pytest.raises(ConfigError, match=r"bad\.toml: claim 'tiny', runs\.main \(quick\)"):
        validate(claim)


def test_unknown_claim_id_suggests():
    with pytest.raises(ConfigError, match="did you mean 'ungrok-mlp'"):
        get_claim("ungrok-mpl")


# ---------------------------------------------------------------- checks on synthetic metrics

CFG = load_config("quickstart", ["data.p=23"])
UNGROK_CFG = load_config("quickstart", ["data.p=23", "train.phases=[{start=300, train_frac=0.1}]"])


def _run(val, train=None, norm=None, step=100, cfg=CFG, run_id=1) -> StoredRun:
    """A stored run whose evaluations are every `step` steps with these accuracies."""
    n = len(val)
    hist = pd.DataFrame({"step": [i * step for i in range(n)], "val_acc": val,
                         "train_acc": train if train is not None else [min(1.0, 0.5 + 0.5 * i) for i in range(n)],
                         "param_norm": norm if norm is not None else [10.0] * n})
    return StoredRun(run_id, cfg, hist, grokking_metrics(hist))


def _ev(**groups) -> Evidence:
    return Evidence({g: GroupEvidence(g, f"s-{g}", len(runs), tuple(runs)) for g, runs in groups.items()})


def _check(params: dict):
    return build_criterion(params, "test")


def _loss_run(losses) -> StoredRun:
    hist = pd.DataFrame({"step": [i * 100 for i in range(len(losses))], "train_loss": losses,
                         "val_acc": [1.0] * len(losses), "train_acc": [1.0] * len(losses)})
    return StoredRun(1, CFG, hist, grokking_metrics(hist))


SPIKY = [1.0, 1e-3, 1e-6, 1e-7, 1e-2, 1e-5, 1e-7, 5e-3, 1e-6]   # two spikes after the collapse
SMOOTH = [1.0, 1e-3, 1e-6, 1e-7, 8e-8, 9e-8, 6e-8, 6e-8, 5e-8]  # wobbles far below 1000×
NO_FIT = [1.0, 0.5, 0.1, 0.05, 0.02, 0.5, 0.01, 0.02, 0.01]     # never reaches the floor


@pytest.mark.parametrize("f32, f64, verdict, measured", [
    (SPIKY, SMOOTH, REPRODUCED, "f32: 2 spike(s); f64: 0 spike(s)"),
    (SMOOTH, SMOOTH, NOT_REPRODUCED, "f32: 0 spike(s)"),
    (SPIKY, SPIKY, PARTIAL, "f64: 2 spike(s)"),
    (NO_FIT, SMOOTH, INCONCLUSIVE, "f32: never ≤ 1e-05"),
])
def test_loss_spikes(f32, f64, verdict, measured):
    check = _check({"name": "loss_spikes", "spiky": "f32", "smooth": "f64"})
    out = check.evaluate(_ev(f32=[_loss_run(f32)], f64=[_loss_run(f64)]))
    assert out.verdict == verdict and measured in out.measured, out


GROK_LATE = [0.0, 0.0, 0.1, 0.2, 0.5, 1.0]   # train 99 % at step 100, val 99 % at 500: 5×
GROK_SOON = [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]   # val 99 % at 200: 2×
NEVER = [0.0, 0.1, 0.1, 0.2, 0.2, 0.3]


@pytest.mark.parametrize("runs, min_ratio, verdict", [
    ([GROK_LATE], 3.0, REPRODUCED),
    ([GROK_SOON], 3.0, NOT_REPRODUCED),
    ([GROK_LATE, GROK_SOON], 3.0, PARTIAL),
    ([NEVER], 3.0, INCONCLUSIVE),
])
def test_delay_ratio(runs, min_ratio, verdict):
    out = _check({"name": "delay_ratio", "min_ratio": min_ratio}).evaluate(_ev(main=[_run(v) for v in runs]))
    assert out.verdict == verdict
    assert "val 99 %" in out.measured


def test_delay_ratio_reports_the_measured_ratio():
    out = _check({"name": "delay_ratio", "min_ratio": 10.0}).evaluate(_ev(main=[_run(GROK_LATE)]))
    assert out.verdict == NOT_REPRODUCED and "5.0×" in out.measured and out.figures["ratio"] == [5.0]


@pytest.mark.parametrize("name, steps, val, verdict", [
    ("groks_within", 400, GROK_SOON, REPRODUCED),
    ("groks_within", 400, GROK_LATE, NOT_REPRODUCED),
    ("groks_within", 10_000, NEVER, INCONCLUSIVE),      # ran 500 of 10 000 steps
    ("never_groks", 400, NEVER, REPRODUCED),
    ("never_groks", 10_000, NEVER, INCONCLUSIVE),
    ("never_groks", 400, GROK_SOON, NOT_REPRODUCED),
])
def test_groks_within_and_never(name, steps, val, verdict):
    assert _check({"name": name, "steps": steps}).evaluate(_ev(main=[_run(val)])).verdict == verdict


def _frac(f: float) -> object:
    return load_config("quickstart", ["data.p=23", f"data.frac_train={f}"])


@pytest.mark.parametrize("vals, verdict", [
    ((NEVER, GROK_LATE, GROK_SOON), REPRODUCED),        # more data, sooner
    ((GROK_SOON, GROK_LATE, NEVER), NOT_REPRODUCED),
    ((GROK_LATE, GROK_SOON, GROK_LATE), PARTIAL),
    ((NEVER, NEVER, NEVER), INCONCLUSIVE),
])
def test_ordering(vals, verdict):
    runs = [_run(v, cfg=_frac(f), run_id=i) for i, (f, v) in enumerate(zip((0.3, 0.5, 0.7), vals))]
    out = _check({"name": "ordering", "axis": "data.frac_train"}).evaluate(_ev(main=runs))
    assert out.verdict == verdict
    assert out.figures["x"] == [0.3, 0.5, 0.7]


@pytest.mark.parametrize("fast, slow, factor, verdict", [
    (GROK_SOON, GROK_LATE, 2.0, REPRODUCED),      # 200 vs 500: 2.5×
    (GROK_SOON, GROK_LATE, 3.0, PARTIAL),         # faster, but by less than asked
    (GROK_LATE, GROK_SOON, 3.0, NOT_REPRODUCED),
    (GROK_SOON, NEVER, 3.0, INCONCLUSIVE),        # slow never got there: only > 500 / 200 = 2.5× is known
    (NEVER, NEVER, 3.0, INCONCLUSIVE),
])
def test_faster(fast, slow, factor, verdict):
    out = _check({"name": "faster", "fast": "a", "slow": "b", "min_factor": factor}).evaluate(
        _ev(a=[_run(fast)], b=[_run(slow)]))
    assert out.verdict == verdict


def test_faster_with_censored_slow_and_enough_margin():
    out = _check({"name": "faster", "fast": "a", "slow": "b", "min_factor": 2.0}).evaluate(
        _ev(a=[_run(GROK_SOON)], b=[_run(NEVER)]))
    assert out.verdict == REPRODUCED and ">2.50×" in out.measured


def test_faster_bound_counts_the_slow_seeds_that_did_get_there():
    # slow: one seed never (500 steps run), one at 200; the slow median is only known to be
    # >= median(500, 200) = 350, so the bound is > 1.75×, not the 2.5× of the longest run
    out = _check({"name": "faster", "fast": "a", "slow": "b", "min_factor": 2.0}).evaluate(
        _ev(a=[_run(GROK_SOON), _run(GROK_SOON)], b=[_run(NEVER), _run(GROK_SOON)]))
    assert out.verdict == INCONCLUSIVE and ">1.75×" in out.measured


@pytest.mark.parametrize("good, poor, verdict", [
    (GROK_SOON, NEVER, REPRODUCED),
    (NEVER, GROK_SOON, NOT_REPRODUCED),
    (GROK_SOON, [0.0, 0.5, 0.7, 0.8, 0.8, 0.8], PARTIAL),
    (NEVER, NEVER, INCONCLUSIVE),                       # neither generalized within the budget
])
def test_val_contrast(good, poor, verdict):
    out = _check({"name": "val_contrast", "good": "g", "poor": "p"}).evaluate(_ev(g=[_run(good)], p=[_run(poor)]))
    assert out.verdict == verdict


@pytest.mark.parametrize("val, verdict", [
    ([0.2, 1.0, 1.0, 1.0, 0.5, 0.1], REPRODUCED),       # phase at 300: 1.0 → 0.1
    ([0.2, 1.0, 1.0, 1.0, 0.9, 0.8], PARTIAL),          # fell, but not to <= 0.2
    ([0.2, 1.0, 1.0, 1.0, 1.0, 1.0], NOT_REPRODUCED),
    ([0.2, 0.3, 0.3, 0.4, 0.2, 0.1], INCONCLUSIVE),     # never grokked before the shrink
])
def test_val_drop(val, verdict):
    out = _check({"name": "val_drop", "after_max": 0.2}).evaluate(_ev(main=[_run(val, cfg=UNGROK_CFG)]))
    assert out.verdict == verdict
    assert "at step 300" in out.measured and "(chance 0.043)" in out.measured  # 1 / 23 classes


@pytest.mark.parametrize("params, verdict", [
    ({"metric": "train_acc", "step": 200, "lo": 0.99}, REPRODUCED),
    ({"metric": "val_acc", "step": 200, "lo": 0.99}, NOT_REPRODUCED),
    ({"metric": "val_acc", "step": 10_000, "lo": 0.99}, INCONCLUSIVE),  # not logged that far
])
def test_value_in_band(params, verdict):
    out = _check({"name": "value_in_band", **params}).evaluate(_ev(main=[_run(GROK_LATE)]))
    assert out.verdict == verdict
    if params["step"] > 500:  # the run ended at 500: say where it got to
        assert "1.000 at its last step 500" in out.measured


@pytest.mark.parametrize("norm, val, verdict", [
    ([20, 19, 16, 14, 12, 10], GROK_LATE, REPRODUCED),
    ([20, 19, 19, 19, 19, 19], GROK_LATE, NOT_REPRODUCED),   # norm flat
    ([20, 19, 16, 14, 12, 10], NEVER, NOT_REPRODUCED),        # val rises only 0.1 → 0.3 (< 0.5)
])
def test_norm_falls_while_val_rises(norm, val, verdict):
    params = {"name": "norm_falls_while_val_rises", "min_val_rise": 0.5}
    assert _check(params).evaluate(_ev(main=[_run(val, norm=norm)])).verdict == verdict


def test_norm_check_is_inconclusive_without_a_fit_or_a_window():
    run = _run(NEVER, train=[0.1] * 6)
    out = _check({"name": "norm_falls_while_val_rises"}).evaluate(_ev(main=[run]))
    assert out.verdict == INCONCLUSIVE
    late = _run(GROK_LATE, norm=[20, 19, 16, 14, 12, 10])  # train 99 % at 100, run ends at 500
    check = {"name": "norm_falls_while_val_rises", "min_window": 1000}
    assert _check(check).evaluate(_ev(main=[late])).verdict == INCONCLUSIVE


def test_final_in_band_and_shorter_delay():
    middling = [0.0, 0.2, 0.4, 0.5, 0.5, 0.5]
    fib = _check({"name": "final_in_band", "lo": 0.2, "hi": 0.8})
    assert fib.evaluate(_ev(main=[_run(middling), _run(NEVER)])).verdict == REPRODUCED
    assert fib.evaluate(_ev(main=[_run(GROK_SOON), _run(NEVER[:5] + [0.1])])).verdict == NOT_REPRODUCED
    assert fib.evaluate(_ev(main=[_run(NEVER[:5] + [0.1])])).verdict == INCONCLUSIVE  # all below: no straddle
    # hold: a plateau in the band, not a late grokker passing through it when the budget ends
    climbing = [0.0, 0.0, 0.0, 0.0, 0.1, 0.5]
    plateau = _check({"name": "final_in_band", "lo": 0.2, "hi": 0.8, "hold": 0.4})
    assert fib.evaluate(_ev(main=[_run(climbing), _run(GROK_SOON)])).verdict == REPRODUCED
    assert plateau.evaluate(_ev(main=[_run(climbing), _run(GROK_SOON)])).verdict == NOT_REPRODUCED
    held = plateau.evaluate(_ev(main=[_run(middling), _run(GROK_SOON)]))
    assert held.verdict == REPRODUCED and "over the last 40% of their steps" in held.measured
    # share: one evaluation of five held (a loss spike's dip) may leave the band, not two
    dipped = [0.0, 0.2, 0.4, 0.05, 0.5, 0.5]
    long_dip = [0.0, 0.2, 0.4, 0.05, 0.05, 0.5]
    forgiving = _check({"name": "final_in_band", "lo": 0.2, "hi": 0.8, "hold": 0.9, "share": 0.75})
    strict = _check({"name": "final_in_band", "lo": 0.2, "hi": 0.8, "hold": 0.9})
    assert strict.evaluate(_ev(main=[_run(dipped), _run(GROK_SOON)])).verdict == NOT_REPRODUCED
    out = forgiving.evaluate(_ev(main=[_run(dipped), _run(GROK_SOON)]))
    assert out.verdict == REPRODUCED and "1 in [0.2, 0.8] for >= 75% of the evaluations over the last 90%" in out.measured
    assert forgiving.evaluate(_ev(main=[_run(long_dip), _run(GROK_SOON)])).verdict == NOT_REPRODUCED
    # ... but not a run that climbs out of the band in its last evaluations (4 of the 19 held)
    groks_at_the_end, chance = [0.0] + [0.3] * 16 + [0.9, 0.95, 1.0, 1.0], _run([0.0] * 6)
    assert forgiving.evaluate(_ev(main=[_run(groks_at_the_end[:-4]), chance])).verdict == REPRODUCED
    assert forgiving.evaluate(_ev(main=[_run(groks_at_the_end), chance])).verdict == NOT_REPRODUCED
    with pytest.raises(ConfigError, match=r"share=0\.0 must be in \(0, 1\]"):
        _check({"name": "final_in_band", "lo": 0.2, "hi": 0.8, "share": 0})
    with pytest.raises(ConfigError, match=r"hold=1\.5 must be in \[0, 1\)"):
        _check({"name": "final_in_band", "lo": 0.2, "hi": 0.8, "hold": 1.5})
    sd = _check({"name": "shorter_delay", "short": "a", "long": "b"})
    assert sd.evaluate(_ev(a=[_run(GROK_SOON)], b=[_run(GROK_LATE)])).verdict == REPRODUCED
    assert sd.evaluate(_ev(a=[_run(GROK_LATE)], b=[_run(GROK_SOON)])).verdict == NOT_REPRODUCED
    assert sd.evaluate(_ev(a=[_run(NEVER)], b=[_run(GROK_SOON)])).verdict == INCONCLUSIVE


def test_combine_takes_the_most_cautious_verdict():
    ok, bad, doubt = Outcome(REPRODUCED, "a"), Outcome(NOT_REPRODUCED, "b"), Outcome(INCONCLUSIVE, "c")
    assert combine([ok, ok]).verdict == REPRODUCED
    assert combine([ok, doubt]).verdict == INCONCLUSIVE
    assert combine([doubt, bad]).verdict == NOT_REPRODUCED
    assert combine([ok, bad]).measured == "a; b"
    with pytest.raises(ValueError):
        Outcome("holds", "x")


# ---------------------------------------------------------------- from the store


def test_missing_runs_report_not_run_never_reproduced(store):
    for claim in load_claims():
        result = evaluate(claim, "quick", store)
        assert result.verdict == NOT_RUN, (claim.id, result.measured)


def test_claims_table_shape(store):
    from groklab.report.page import CLAIM_KEYS

    rows = claims_table(store)
    assert len(rows) == len(load_claims())
    for row in rows:
        assert set(CLAIM_KEYS) <= set(row) and row["verdict"] in VERDICTS and row["verdict"] != REPRODUCED
        assert isinstance(row["runs"], list)


def test_full_size_over_the_cpu_budget_is_not_run(tmp_path, store, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "tiny.toml"
    path.write_text(_claim_text())
    (claim,) = load_claims([path])
    result = reproduce(claim, "full", store, cpu_budget=30)
    assert result.verdict == NEEDS_CLUSTER and "1000 CPU-minutes" in result.measured
    assert store.list() == []
    # a plain run of its config, trained elsewhere and stored here, is judged (reused), not asked for
    from groklab.reproduce import specs
    from groklab.sweep import expand
    from groklab.train import train
    from groklab import with_overrides
    full = with_overrides(expand(specs(claim, "full")["main"])[0], {"train.threads": 1})  # an execution field
    (solo,) = train(full, store=store, progress=False)
    judged = reproduce(claim, "full", store, cpu_budget=30)
    assert judged.verdict == REPRODUCED and judged.runs == (solo.run_id,) and judged.new_runs == 0
    assert reproduce(claim, "full", store, cpu_budget=30, reuse=False).verdict == REPRODUCED  # recorded
    from groklab.store import Store
    assert reproduce(claim, "full", Store(tmp_path / "other"), cpu_budget=30).verdict == NEEDS_CLUSTER


def test_a_run_another_process_trains_is_named_not_judged(tmp_path, store):
    """A claim whose run another live process is still training is not run yet, and says why
    (a second `reproduce` on the same store leaves that run to its owner)."""
    import subprocess

    from groklab.config import config_json
    from groklab.reproduce import specs
    from groklab.sweep import expand

    path = tmp_path / "tiny.toml"
    path.write_text(_claim_text())
    (claim,) = load_claims([path])
    spec = specs(claim, "quick")["main"]
    (cfg,) = expand(spec)
    store.create_runs([config_json(cfg)], [cfg.name], "g", {}, sweep=spec.name)
    proc = subprocess.Popen(["sleep", "30"])  # stands in for the process training it
    try:
        store.conn.execute("UPDATE runs SET owner_pid=?, owner_start=NULL", (proc.pid,))
        busy = evaluate(claim, "quick", store)
        assert busy.verdict == NOT_RUN and busy.measured == "runs in store: main 0/1 (1 training in another process)"
    finally:
        proc.kill()
        proc.wait()
    lost = evaluate(claim, "quick", store)  # its owner gone: missing, and nothing trains it
    assert lost.verdict == NOT_RUN and lost.measured == "runs in store: main 0/1"


def test_reproduce_end_to_end_then_reuses_the_store(tmp_path, store):
    path = tmp_path / "tiny.toml"
    path.write_text(_claim_text())
    (claim,) = load_claims([path])
    first = reproduce(claim, "quick", store, workers=1)
    assert first.verdict == REPRODUCED, first.measured          # TINY_GROK: train 99 % ~550, val 99 % ~1550
    assert first.new_runs == 1 and len(first.runs) == 1
    rows = store.list()
    assert [r["sweep"] for r in rows] == ["claim-tiny-quick-main"]
    again = reproduce(claim, "quick", store, workers=1)
    assert again.new_runs == 0 and again.runs == first.runs and again.outcome == first.outcome
    assert len(store.list()) == 1
    # the verdict is a function of the stored metrics: evaluating without training gives the same
    assert evaluate(claim, "quick", store).outcome == first.outcome
    # and so in a store the runs were merged into (trained elsewhere, `groklab merge`)
    from groklab.merge import merge
    from groklab.store import Store
    other = Store(tmp_path / "merged")
    assert merge(store.paths.root, other).groups == 1
    assert evaluate(claim, "quick", other).outcome == first.outcome
    assert reproduce(claim, "quick", other, workers=1).new_runs == 0
    # and from a plain `groklab run` of the claim's exact config: reused, not trained again
    from groklab.reproduce import specs
    from groklab.sweep import expand
    from groklab.train import train
    plain = Store(tmp_path / "plain")
    (solo,) = train(expand(specs(claim, "quick")["main"])[0], store=plain, progress=False)
    assert plain.get(solo.run_id)["sweep"] is None
    reused = reproduce(claim, "quick", plain, workers=1)
    assert reused.new_runs == 0 and reused.runs == (solo.run_id,) and reused.outcome == first.outcome
    # the report's figure of the claim's runs
    from groklab.reproduce.markdown import markdown_table, write_figures
    rows = [again.as_dict()]
    write_figures(store, rows, tmp_path / "claims-figures")
    assert (tmp_path / "claims-figures" / "tiny.png").stat().st_size > 1000
    text = markdown_table(rows)
    assert "[png](claims-figures/tiny.png)" in text and "| tiny | the wider literature |" in text


@PROCESSES
def test_several_claims_train_together_then_are_judged_in_order(tmp_path, store):
    """`--all`: the claims' runs go to the workers together (two one-run claims: two workers, where
    claim by claim each had one), then each claim is judged, in order, as it would be alone."""
    from groklab.reproduce import reproduce_claims

    claims = []
    for name, frac in (("one", 0.4), ("two", 0.5)):
        path = tmp_path / f"{name}.toml"
        path.write_text(_claim_text(set_=[*TINY_GROK, f"data.frac_train={frac}"]).replace('"tiny"', f'"{name}"'))
        claims += load_claims([path])
    plans, done, results = {}, [], []
    out = reproduce_claims(claims, "quick", store, workers=2,
                           on_group=lambda claim, group, plan: plans.setdefault(claim.id, plan),
                           on_done=done.append, on_result=results.append)
    assert out == results and [r.claim.id for r in out] == ["one", "two"]
    assert {c: (p.workers, p.n_new) for c, p in plans.items()} == {"one": (2, 1), "two": (2, 1)}
    assert sorted(o.group.sweep for o in done) == ["claim-one-quick-main", "claim-two-quick-main"]
    assert all(r.verdict == REPRODUCED and r.new_runs == 1 and len(r.runs) == 1 for r in out), out
    again = reproduce_claims(claims, "quick", store, workers=2)  # all stored: the same verdicts, nothing trained
    assert [(r.outcome, r.runs, r.new_runs) for r in again] == [(r.outcome, r.runs, 0) for r in out]


def test_cli_list_report_and_bad_input(tmp_path, capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "ungrok-mlp" in out and "repro-delay" in out
    md = tmp_path / "claims.md"
    assert main(["reproduce", "--report", "-o", str(md), "--store", str(tmp_path / "runs")]) == 0
    text = md.read_text()
    assert "| id | study | where | claim | claimed | measured | verdict | size | runs |" in text
    assert text.count("\n| ") == len(load_claims()) + 1 and "| mixture-speed-gap |" in text
    capsys.readouterr()
    assert main(["reproduce", "no-such-claim", "--store", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("groklab: error: claim 'no-such-claim' does not exist") and err.count("\n") == 1
    fresh = tmp_path / "fresh"
    assert main(["reproduce", "--store", str(fresh)]) == 2
    assert main(["reproduce", "ungrok-mlp", "--set", "optim.lr=-1", "--store", str(fresh)]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert not (fresh / "groklab.db").exists()  # bad input fails before anything is written


def test_report_claims_renders_the_table(tmp_path, store):
    from groklab.report import build_report, load_claims as report_claims

    html = build_report(store, claims=report_claims(store))
    assert "claims-table" in html and "ungrok-mlp" in html


def test_a_run_that_cannot_start_makes_the_claim_not_run(tmp_path, store):
    path = tmp_path / "mnist.toml"
    text = _claim_text(set_=[f"data.data_dir={json.dumps(str(tmp_path / 'no-data'))}", "train.steps=50",
                             "train.threads=1"])
    path.write_text(text.replace('base = "quickstart"', 'base = "omnigrok-mnist"'))
    (claim,) = load_claims([path])
    result = reproduce(claim, "quick", store, workers=1)
    assert result.verdict == NOT_RUN and "failed" in result.measured


def test_report_claims_command_writes_the_page(tmp_path, store):
    out = tmp_path / "claims.html"
    assert main(["report", "--claims", "-o", str(out), "--store", str(store.paths.root)]) == 0
    html = out.read_text()
    assert 'id="claims-table"' in html and "mixture-speed-gap" in html and "not run" in html


def test_needs_protocol_check_still_says_so():
    out = _check({"name": "needs_protocol", "protocol": "a protocol groklab lacks"}).evaluate(Evidence())
    assert out.verdict == NEEDS_PROTOCOL and "a protocol groklab lacks" in out.measured


def test_a_claims_note_reaches_the_reader(capsys):
    """A claim's `note` (how the check reads the claim, caveats about the source) is printed with
    the verdict and carried in the JSON."""
    from groklab.reproduce import ClaimResult
    from groklab.reproduce.cli import _print

    claim = get_claim("rnn-groks")
    assert claim.note
    result = ClaimResult(claim, "quick", Outcome(NOT_RUN, "runs in store: main 0/1"))
    _print(result, as_json=False)
    assert f"  note:     {claim.note}\n" in capsys.readouterr().out
    _print(result, as_json=True)
    assert json.loads(capsys.readouterr().out)["note"] == claim.note


def test_dry_run_plans_what_would_train_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """`reproduce --dry-run`: per claim, its sweeps' plans against the store as a real call plans them
    (a plain run of a claim's config reused; a config two claims share trained by the first), the
    totals, and no write: a missing store is not created, an existing one keeps every byte."""
    from groklab.reproduce import plan_claims, specs
    from groklab.store import Store
    from groklab.sweep import expand
    from groklab.train import train
    from test_merge import _digest

    text = _claim_text()
    twin = text.split("[[claims]]", 1)[1].replace('id = "tiny"', 'id = "tiny2"')
    path = tmp_path / "two.toml"
    path.write_text(text + "\n[[claims]]" + twin)
    claims = load_claims([path])
    root = tmp_path / "runs"
    plans = plan_claims(claims, "quick", Store(root, read_only=True), workers=1)
    assert not root.exists()
    first, second = (p.plans[0] for p in plans)
    assert (first.n_new, second.n_new, len(second.shared)) == (1, 0, 1)

    store = Store(root)
    (solo,) = train(expand(specs(claims[0], "quick")["main"])[0], store=store, progress=False)  # a plain run
    store.close()
    before = _digest(root)
    first, second = (p.plans[0] for p in plan_claims(claims, "quick", Store(root, read_only=True), workers=1))
    assert [r["id"] for r in first.reused] == [solo.run_id] and first.n_new == 0
    assert [r["id"] for r in second.reused] == [solo.run_id] and second.n_new == 0
    assert _digest(root) == before and Store(root, read_only=True).reused() == []  # no reuse recorded

    # the CLI, over the shipped claims: every claim planned, the totals, still no write
    assert main(["reproduce", "--all", "--dry-run", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("[quick, stated ~") == len(load_claims()) and "over --cpu-budget" not in out
    assert out.rstrip().endswith("nothing was trained or written") and "shared between sweeps" in out
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the budget applies on a CPU-only machine
    assert main(["reproduce", "--all", "--full", "--dry-run", "--store", str(root)]) == 0
    assert "over --cpu-budget 30 on this CPU-only machine: not run" in capsys.readouterr().out
    assert main(["reproduce", "quickstart-delay", "--dry-run", "--json", "--store", str(root)]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["claim"] == "quickstart-delay" and row["sweeps"][0]["train"] >= 1 and not row["over_budget"]
    assert _digest(root) == before
