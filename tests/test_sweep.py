"""Sweeps: spec parsing, planning/packing, resume, failures, local vs Ray, runs table, CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from groklab import load_config, with_overrides
from groklab.config import ConfigError
from groklab.store import Store
from groklab.sweep import (load_spec, expand, parse_grid, plan_sweep, pack_groups, run_key, run_sweep, run_sweeps,
                           runs_table)
from groklab.sweep.plan import Resources, default_pack, member_bytes, pack_signature, takes_whole_set
from groklab.train import train
from groklab.sweep.spec import axis_values

from conftest import CPU, MEMBER_COLS, PROCESSES, STOPS, ctrl_c_at, stop_command

TINY = ["data.p=23", "train.threads=1", "train.steps=60", "train.eval_every=20", "train.batch_size=64",
        "train.early_stop=false"]
CPU2 = Resources(cpus=2)


def tiny_spec(name="t", fracs=(0.3, 0.5), seeds=(0,), extra=()):
    return load_spec({"name": name, "base": "quickstart", "set": TINY + list(extra),
                      "axes": {"data.frac_train": list(fracs)}, "seeds": list(seeds)})


# ---------------------------------------------------------------- spec parsing

def test_range_logrange_and_lists():
    assert axis_values("a", {"range": [0.2, 0.8, 0.1]}) == (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # b included, no float noise
    assert axis_values("a", {"range": [100, 400, 100]}) == (100, 200, 300, 400)
    assert axis_values("a", {"logrange": [1e-4, 1e-1, 4]}) == (1e-4, 1e-3, 1e-2, 1e-1)
    assert axis_values("a", {"logrange": [10, 1000, 3]}) == (10, 100, 1000)
    assert axis_values("a", [1, 2]) == (1, 2)
    with pytest.raises(ConfigError, match="range"):
        axis_values("a", {"range": [1, 2]})
    with pytest.raises(ConfigError, match="empty"):
        axis_values("a", {"range": [1, 2, -1]})
    assert parse_grid(["optim.lr=logrange:1e-3:1e-1:3", "train.seed=0,1"]) == {
        "optim.lr": (1e-3, 1e-2, 1e-1), "train.seed": (0, 1)}


def test_product_zip_and_seeds():
    base = {"base": "quickstart", "name": "s", "axes": {"optim.lr": [1e-3, 2e-3], "optim": {"weight_decay": [0.1, 1.0]}}}
    prod = expand(load_spec({**base, "seeds": 2}))
    assert len(prod) == 2 * 2 * 2
    assert prod[1].train.seed == 1 and prod[0].optim.lr == prod[1].optim.lr  # seeds innermost
    zipped = expand(load_spec({**base, "mode": "zip", "seeds": [7]}))
    assert [(c.optim.lr, c.optim.weight_decay, c.train.seed) for c in zipped] == [(1e-3, 0.1, 7), (2e-3, 1.0, 7)]
    partial = expand(load_spec({**base, "zip": [["optim.lr", "optim.weight_decay"]],
                                "axes": {**base["axes"], "data.frac_train": [0.3, 0.4]}}))
    assert len(partial) == 4 and {(c.optim.lr, c.optim.weight_decay) for c in partial} == {(1e-3, 0.1), (2e-3, 1.0)}
    assert prod[0].name == "s-lr=0.001-weight_decay=0.1-seed=0"


def test_spec_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"'optim\.lrr' is not a config field.*optim\.lr"):
        load_spec({"base": "quickstart", "axes": {"optim.lrr": [1e-3]}})
    with pytest.raises(ConfigError, match=r"data\.frac_train=1\.5"):
        expand(load_spec({"base": "quickstart", "axes": {"data.frac_train": [0.5, 1.5]}}))
    with pytest.raises(ConfigError, match="equal length"):
        load_spec({"base": "quickstart", "mode": "zip", "axes": {"optim.lr": [1, 2], "data.p": [3]}})
    with pytest.raises(ConfigError, match="unknown sweep key"):
        load_spec({"base": "quickstart", "axis": {}})
    with pytest.raises(ConfigError, match="neither"):
        load_spec("no-such-sweep")


def test_presets_resolve_and_grid_on_a_run_preset():
    spec = load_spec("mlp-fraction")
    cfgs = expand(spec)
    assert spec.name == "mlp-fraction" and len(cfgs) == 9 * 2
    assert all(c.train.early_stop for c in cfgs)
    from groklab.sweep.spec import list_sweep_presets

    for name in list_sweep_presets():  # every shipped sweep preset expands to valid configs
        assert expand(load_spec(name)), name
    tf = expand(load_spec("transformer-fraction"))
    assert sorted({c.data.frac_train for c in tf}) == [0.4, 0.5, 0.6, 0.7] and tf[0].train.loss == "ce64"
    spec = load_spec("quickstart", grid=parse_grid(["data.frac_train=0.3,0.5"]), seeds=2)
    assert spec.name == "quickstart-frac_train" and len(expand(spec)) == 4


# ---------------------------------------------------------------- planner

def test_planner_packs_compatible_and_splits_incompatible():
    base = load_config("quickstart", TINY)
    mk = lambda **kw: with_overrides(base, kw)  # noqa: E731
    cfgs = [mk(**{"train.seed": s, "data.frac_train": f}) for s in range(5) for f in (0.3, 0.5)]  # compatible
    cfgs += [mk(**{"model.d_hidden": 64, "train.seed": s}) for s in range(3)]                    # other shape
    groups = pack_groups(cfgs, pack=4)
    assert sorted(len(g) for g in groups) == [3, 3, 3, 4]  # 10 → 4+3+3 (balanced, not 4+4+2), 3 → 3
    for g in groups:
        assert len({pack_signature(c) for c in g}) == 1 and len(g) <= 4
    assert len(pack_groups(cfgs, pack=1)) == 13
    assert len(pack_groups(cfgs, pack=100)) == 2
    with pytest.raises(ConfigError):
        pack_groups(cfgs, pack=0)

    plan = plan_sweep("p", cfgs + cfgs[:2], None, resources=CPU2)  # defaults on CPU: 13 runs, 2 workers
    assert plan.pack == 7 and plan.workers == 2 and plan.threads == 1 and plan.duplicates == 2
    assert sorted(len(g) for g in plan.groups) == [3, 5, 5] and all(c.train.threads == 1 for g in plan.groups
                                                                     for c in g.cfgs)
    # dealt, not cut: each group of the 10 compatible runs holds both fractions
    assert all({c.data.frac_train for c in g.cfgs} == {0.3, 0.5} for g in plan.groups if len(g) == 5)
    assert plan_sweep("p", cfgs, None, resources=CPU2, workers=1).threads == 1  # the config's own setting


def test_run_identity_and_gpu_pack_estimate(tmp_path):
    a = load_config("quickstart", TINY)
    b = with_overrides(a, {"name": "other", "train.threads": "auto", "train.device": "cpu"})
    assert run_key(a) == run_key(b) != run_key(with_overrides(a, {"optim.lr": 2e-3}))
    assert default_pack(a, CPU2) == 1
    # CPU: a multiple of the workers' count of groups, at most 8 members each
    assert [default_pack(a, CPU2, n, 2) for n in (0, 2, 3, 16, 17, 40)] == [1, 1, 2, 8, 5, 7]
    big, small = Resources(16, 1, 80 * 2**30), Resources(16, 1, 2 * 2**30)
    assert default_pack(a, big) > default_pack(a, small) >= 1
    assert member_bytes(load_config("power2022-add97"))[0] > member_bytes(load_config("quickstart"))[0]
    # 256 nanda2023 members (full batch) fit an 80 GB card; on 8 GB free, far fewer
    assert default_pack(load_config("nanda2023"), big) == 256 > default_pack(load_config("nanda2023"),
                                                                            Resources(16, 1, 8 * 2**30)) > 8
    # A task whose data is missing cannot be sized: one member per group, whose runs then fail at
    # start with the data error, stored `failed` as on a CPU (seen on an H100: the planner raised).
    missing = load_config("omnigrok-mnist", [f"data.data_dir={tmp_path / 'no-data'}"])
    assert default_pack(missing, big) == 1


def test_cpu_packs_full_batch_runs_only_with_their_own_fraction():
    """On a CPU packing must not change a result: a full-batch member beside a larger training set
    is padded to it (other rounding), so those runs pack by fraction there; minibatch runs do not."""
    base = load_config("quickstart", TINY)
    runs = lambda batch: [with_overrides(base, {"train.batch_size": batch, "data.frac_train": f,  # noqa: E731
                                                "train.seed": s}) for f in (0.3, 0.5) for s in (0, 1)]
    assert len(pack_groups(runs("full"), pack=8, exact=True)) == 2
    assert all(len({c.data.frac_train for c in g}) == 1 for g in pack_groups(runs("full"), pack=8, exact=True))
    assert len(pack_groups(runs("full"), pack=8)) == 1       # a GPU's planner: within float rounding anyway
    assert len(pack_groups(runs(64), pack=8, exact=True)) == 1
    plan = plan_sweep("f", runs("full"), None, resources=CPU2)
    assert sorted(len(g) for g in plan.groups) == [2, 2]


def test_cpu_packs_runs_whose_set_fits_one_batch_by_fraction_and_members_equal_solo():
    """A minibatch run whose training set (or an ungrokking phase's subset) is no larger than its
    batch takes the whole set each step, as a full-batch run does: the CPU planner packs it only
    with its own fraction, and every member of the planned groups equals its solo run bitwise."""
    base = load_config("quickstart", TINY + [CPU, "train.batch_size=128"])  # p = 23: 529 examples
    runs = [with_overrides(base, {"data.frac_train": f, "train.seed": s}) for f in (0.2, 0.22, 0.5, 0.6) for s in (0, 1)]
    assert [takes_whole_set(c) for c in runs] == [True] * 4 + [False] * 4     # 106 and 116 ≤ 128 < 264
    groups = pack_groups(runs, pack=8, exact=True)
    assert sorted({c.data.frac_train for c in g} for g in groups) == [{0.2}, {0.22}, {0.5, 0.6}]
    assert len(pack_groups(runs, pack=8)) == 1
    for g in groups:
        for cfg, member in zip(g, train(list(g), progress=False)):
            (solo,) = train([cfg], progress=False)
            assert member.metrics[MEMBER_COLS].equals(solo.metrics[MEMBER_COLS]), cfg.data.frac_train
    # an ungrokking phase that keeps 3 % of 6 586 examples (198 ≤ 512) takes its whole subset
    ungrok = load_config("ungrok-mlp")
    assert takes_whole_set(ungrok) and not takes_whole_set(with_overrides(ungrok, {"train.phases": []}))


# ---------------------------------------------------------------- execution, resume, failures

def test_rerun_skips_finished_runs_without_duplicates(tmp_path):
    store = Store(tmp_path / "runs")
    first = run_sweep(tiny_spec(), store=store, workers=1)
    assert first.plan.n_new == 2 and not first.failed
    rows = store.list(sweep="t")
    assert [r["status"] for r in rows] == ["finished", "finished"]
    second = run_sweep(tiny_spec(), store=store, workers=1)
    assert len(second.plan.done) == 2 and second.plan.groups == [] and second.outcomes == []
    third = run_sweep(tiny_spec(fracs=(0.3, 0.5, 0.7)), store=store, workers=1)  # a grown sweep trains the new point
    assert third.plan.n_new == 1 and len(store.list(sweep="t")) == 3


def test_a_sweep_reuses_a_finished_run_of_a_point_stored_outside_it(tmp_path):
    """A point that a plain run (or another sweep) already trained, with the same config, is not
    trained again: the sweep records the run as its own and every reader of the sweep sees it."""
    store = Store(tmp_path / "runs")
    spec = tiny_spec()
    point = expand(spec)[0]
    (solo,) = train(point, store=store, progress=False)  # `groklab run` of the 0.3 point
    report = run_sweep(spec, store=store, workers=1)
    assert [r["id"] for r in report.plan.reused] == [solo.run_id] and report.plan.n_new == 1
    assert len(report.plan.done) == 1 and "1 of them stored outside the sweep, reused" in report.plan.describe()
    rows = store.list(sweep="t")
    assert [r["id"] for r in rows][0] == solo.run_id and len(rows) == 2
    assert [r["sweep"] for r in rows] == ["t", "t"] and [r["trained_in"] for r in rows] == [None, "t"]
    assert store.get(solo.run_id)["sweep"] is None  # the run itself is unchanged
    assert sorted(runs_table(store, "t")["data.frac_train"]) == [0.3, 0.5]
    from groklab.report.data import collect_runs
    from groklab.report.export import runs_table as export_table
    exported = export_table(collect_runs(store, sweep="t"))  # `groklab export --sweep t`'s runs file
    assert list(exported["sweep"]) == ["t", "t"] and list(exported["trained_in"].fillna("-")) == ["-", "t"]
    again = run_sweep(spec, store=store, workers=1)  # recorded: the next plan finds it in the sweep
    assert again.plan.groups == [] and again.plan.reused == [] and len(again.plan.done) == 2
    # another sweep reuses both; --no-reuse trains its own
    assert len(run_sweep(tiny_spec("u"), store=store, workers=1).plan.reused) == 2
    fresh = run_sweep(tiny_spec("v"), store=store, workers=1, reuse=False)
    assert fresh.plan.reused == [] and fresh.plan.n_new == 2 and len(store.list()) == 4
    # the retrained runs equal the reused ones (what a reuse relies on: same config, same numbers)
    by_frac = lambda name: {r["config"]["data"]["frac_train"]: r["summary"]["val_loss"]  # noqa: E731
                            for r in store.list(sweep=name)}
    assert by_frac("v") == by_frac("t")
    # a different config (one more step) is not reused
    other = run_sweep(tiny_spec("w", fracs=(0.3,), extra=["train.steps=61"]), store=store, workers=1)
    assert other.plan.reused == [] and other.plan.n_new == 1


def test_sweeps_planned_together_train_a_shared_point_once(tmp_path):
    """Two sweeps of one pass (a `reproduce --all`: claims sharing a config under different names)
    with a point in common: the first trains it, the second counts it once it has finished; with
    `reuse=False` each trains its own."""
    store = Store(tmp_path / "runs")
    a, b = tiny_spec("a", fracs=(0.3, 0.5)), tiny_spec("b", fracs=(0.5, 0.7))
    ra, rb = run_sweeps([a, b], store=store, workers=1)
    assert rb.plan.shared and [s for _, s in rb.plan.shared] == ["a"] and rb.plan.n_new == 1
    assert "1 trained by a in this pass (counted here)" in rb.plan.describe()
    assert len(store.list()) == 3 and sum(len(o.group) for o in ra.outcomes + rb.outcomes) == 3
    rows = store.list(sweep="b")
    assert sorted(r["config"]["data"]["frac_train"] for r in rows) == [0.5, 0.7]
    assert {r["config"]["data"]["frac_train"]: r["trained_in"] for r in rows} == {0.5: "a", 0.7: "b"}
    assert run_sweeps([a, b], store=store, workers=1)[1].plan.groups == []  # recorded: both complete
    fresh = run_sweeps([tiny_spec("c", fracs=(0.9,)), tiny_spec("d", fracs=(0.9,))], store=store, workers=1,
                       reuse=False)
    assert [r.plan.n_new for r in fresh] == [1, 1] and fresh[1].plan.shared == []


def test_a_sweep_with_hooks_does_not_reuse_a_run_trained_without_them(tmp_path):
    store = Store(tmp_path / "runs")
    spec = replace(tiny_spec(fracs=(0.3,)), hooks=(("correct_logit", "{}"),))
    train(expand(spec)[0], store=store, progress=False)
    plan = plan_sweep("t", expand(spec), store, workers=1, hooks=spec.hooks)
    assert plan.reused == [] and plan.n_new == 1


@PROCESSES
def test_sweeps_of_one_run_each_train_at_once_on_two_workers(tmp_path):
    """A claim's arms are sweeps of one run each. Executed together, two workers train both at
    once; planned one by one, each sweep had one group, so one worker, and they ran in turn."""
    store = Store(tmp_path / "runs")
    long = ["train.steps=3000", "train.eval_every=500", CPU]
    a, b = (tiny_spec(name, fracs=(f,), extra=long) for name, f in (("a", 0.3), ("b", 0.5)))
    ra, rb = run_sweeps([a, b], store=store, workers=2)
    assert (ra.plan.workers, rb.plan.workers, ra.plan.threads) == (2, 2, 1)
    assert [len(r.outcomes) for r in (ra, rb)] == [1, 1] and not ra.failed + rb.failed
    (x,), (y,) = store.list(sweep="a"), store.list(sweep="b")  # each under its own sweep name
    assert x["status"] == y["status"] == "finished"
    # at the same time: each began (its rows are made as it starts) before the other ended
    assert x["created"] < y["updated"] and y["created"] < x["updated"], (x, y)
    # and with the numbers each sweep gives alone
    alone = run_sweep(a, store=Store(tmp_path / "alone"), workers=1).outcomes[0].summaries[0]
    same = lambda s: {k: v for k, v in s.items() if k not in ("wall_seconds", "steps_per_second")}  # noqa: E731
    assert same(alone) == same(ra.outcomes[0].summaries[0])


def test_sweeps_sharing_a_name_train_their_common_runs_once(tmp_path):
    store = Store(tmp_path / "runs")
    one, two = run_sweeps([tiny_spec(fracs=(0.3,)), tiny_spec(fracs=(0.3, 0.5))], store=store, workers=1)
    assert one is two and one.plan.n_runs == 2 and len(store.list(sweep="t")) == 2


def test_a_sweep_with_hooks_trains_every_group_with_them_and_a_resumed_group_gets_them_back(tmp_path, monkeypatch):
    """`SweepSpec.hooks` (how `reproduce` trains a protocol's runs): every run logs the hook's metric,
    and a group stopped half-way resumes with the hook it started with."""
    import dataclasses

    hook = (("correct_logit", "{}"),)
    spec = dataclasses.replace(tiny_spec(fracs=(0.3, 0.5), extra=["train.checkpoint_every=20", CPU]), hooks=hook)
    store = Store(tmp_path / "runs")
    ctrl_c_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, store=store, workers=1)
    monkeypatch.undo()
    again = run_sweep(spec, store=store, workers=1)
    assert again.plan.n_resume >= 1 and not again.failed
    for row in store.list(sweep="t"):
        m = store.metrics(row["id"])
        assert row["status"] == "finished" and m["correct_logit"].notna().all(), row["id"]
        assert m["step"].max() == row["summary"]["steps"]                 # logged past the interruption
    plain = run_sweep(tiny_spec(fracs=(0.3,), extra=[CPU]), store=Store(tmp_path / "plain"), workers=1)
    assert "correct_logit" not in Store(tmp_path / "plain").metrics(plain.outcomes[0].run_ids[0]).columns
    with pytest.raises(ConfigError, match=r"hooks: 'logit' is not a recorded hook; valid: snapshot, correct_logit"):
        dataclasses.replace(spec, hooks=(("logit", "{}"),))
    with pytest.raises(ConfigError, match=r"run_names='x' must be one of 'sweep', 'base'"):
        dataclasses.replace(spec, run_names="x")


def test_interrupted_group_resumes_to_the_same_result(tmp_path, monkeypatch):
    spec = tiny_spec(fracs=(0.4,), extra=["train.checkpoint_every=20", CPU])
    ref = run_sweep(spec, store=Store(tmp_path / "ref"), workers=1).outcomes[0].summaries[0]

    store = Store(tmp_path / "runs")
    ctrl_c_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, store=store, workers=1)
    (row,) = store.list(sweep="t")
    assert row["status"] == "stopped" and store.paths.checkpoint(row["group_id"]).exists()
    monkeypatch.undo()
    again = run_sweep(spec, store=store, workers=1)
    assert again.plan.n_resume == 1 and again.plan.n_new == 0
    (after,) = store.list(sweep="t")
    assert after["id"] == row["id"] and after["status"] == "finished"
    assert after["summary"]["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-4)
    assert after["summary"]["val_acc"] == pytest.approx(ref["val_acc"], abs=1e-6)
    assert store.metrics(after["id"])["step"].is_unique


def test_a_group_another_live_process_trains_is_left_to_it(tmp_path, monkeypatch):
    """A second sweep (or `groklab reproduce`) on the same store must not resume a group another
    process is training: it would train it twice and truncate its metrics under it."""
    import subprocess

    spec = tiny_spec(fracs=(0.4,), extra=["train.checkpoint_every=20"])
    store = Store(tmp_path / "runs")
    ctrl_c_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, store=store, workers=1)
    monkeypatch.undo()
    (row,) = store.list(sweep="t")
    n_metrics = len(store.metrics(row["id"]))
    proc = subprocess.Popen(["sleep", "30"])  # stands in for the process training the group
    try:
        store.conn.execute("UPDATE runs SET status='running', owner_pid=?, owner_start=NULL", (proc.pid,))
        busy = run_sweep(spec, store=store, workers=1)
        assert busy.plan.groups == [] and [r["id"] for r in busy.plan.busy] == [row["id"]]
        assert "1 training in another process" in busy.plan.describe()
        after = store.get(row["id"])
        assert after["status"] == "running" and after["owner_pid"] == proc.pid
        assert len(store.metrics(row["id"])) == n_metrics  # nothing truncated, nothing trained
    finally:
        proc.kill()
        proc.wait()
    again = run_sweep(spec, store=store, workers=1)  # its owner gone, the group is lost: resumed
    assert again.plan.n_resume == 1 and not again.plan.busy
    assert store.get(row["id"])["status"] == "finished"


@PROCESSES
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_stops_workers_and_leaves_runs_resumable(tmp_path, stop):
    """Ctrl-C reaches the whole process group; SIGTERM (`timeout`, a scheduler) only the driver,
    which stops its workers. Run as `python -m groklab.cli`, whose stop was once recorded in a second
    copy of the module and reported as an interrupt (exit 130) instead of SIGTERM's 143."""
    import sys

    root = tmp_path / "runs"
    # CPU workers: this tests the process pool (a GPU machine would run one in-process worker);
    # one run per group, so two groups run and the third waits.
    sets = [a for s in TINY + ["train.steps=1500", "train.checkpoint_every=50", "train.device=cpu"]
            for a in ("--set", s)]
    cmd = [sys.executable, "-m", "groklab.cli", "sweep", "quickstart", "--grid", "data.frac_train=0.3,0.5,0.7",
           "--name", "cc", "--store", str(root), "--workers", "2", "--pack", "1", *sets]
    # Like a terminal: Ctrl-C reaches the whole process group (driver and workers).
    store = Store(root)

    def past_a_checkpoint():
        rows = store.list(sweep="cc") if store.exists() else []
        return len(rows) == 2 and all(store.metrics(r["id"])["step"].max() > 100 for r in rows)

    code, err, left = stop_command(cmd, past_a_checkpoint, stop, wait_s=60)
    assert code == STOPS[stop], err[-2000:]
    assert "resumable" in err and (stop == "ctrl-c" or "terminated (SIGTERM)" in err)
    rows = store.list(sweep="cc")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"stopped"}
    assert not left, left  # no orphans: workers (and multiprocessing's resource tracker) are gone
    spec = load_spec("quickstart", grid={"data.frac_train": (0.3, 0.5, 0.7)}, name="cc",
                     overrides=TINY + ["train.steps=1500", "train.checkpoint_every=50", "train.device=cpu"])
    plan = plan_sweep("cc", expand(spec), store, resources=CPU2, pack=1)  # (resuming itself is tested above)
    assert plan.n_resume == 2 and plan.n_new == 1
    assert all(store.paths.checkpoint(r["group_id"]).exists() for r in rows)


def test_failed_group_is_reported_and_retried(tmp_path, monkeypatch):
    import groklab.train as gt

    store = Store(tmp_path / "runs")
    real = gt.train
    monkeypatch.setattr(gt, "train", lambda cfgs, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    report = run_sweep(tiny_spec(fracs=(0.4,)), store=store, workers=1)
    assert len(report.failed) == 1 and "boom" in report.failed[0].error
    (row,) = store.list(sweep="t")
    assert row["status"] == "failed" and "boom" in row["summary"]["error"]
    monkeypatch.setattr(gt, "train", real)
    report = run_sweep(tiny_spec(fracs=(0.4,)), store=store, workers=1)
    assert report.plan.n_resume == 1 and not report.failed
    assert [(r["id"], r["status"]) for r in store.list(sweep="t")] == [(row["id"], "finished")]


@PROCESSES
def test_ray_matches_local_and_reports_failures(tmp_path):
    ray = pytest.importorskip("ray")
    spec = tiny_spec(fracs=(0.3, 0.6), seeds=(0, 1), extra=[CPU])
    local_store, ray_store = Store(tmp_path / "local"), Store(tmp_path / "ray")
    run_sweep(spec, store=local_store, workers=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_sweep(spec, store=ray_store, backend="ray")
        assert not report.failed and report.plan.threads == 1
        # A device no machine here has: the worker's run fails (on a CUDA machine too).
        bad = run_sweep(tiny_spec(name="bad", fracs=(0.4,), extra=["train.device=cuda:99"]), store=ray_store,
                        backend="ray", max_retries=1)
    finally:
        ray.shutdown()
    by_name = {r["name"]: r for r in local_store.list(sweep="t")}
    rows = ray_store.list(sweep="t")
    assert len(rows) == 4
    for r in rows:
        ref = by_name[r["name"]]
        assert r["status"] == "finished"
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert r["summary"][key] == pytest.approx(ref["summary"][key], rel=1e-4, abs=1e-6)
        a, b = ray_store.metrics(r["id"]), local_store.metrics(ref["id"])
        assert list(a["step"]) == list(b["step"])
        assert ray_store.paths.checkpoint(r["group_id"]).exists()  # the driver stored the weights too
    assert len(bad.failed) == 1 and bad.failed[0].error
    assert [r["status"] for r in ray_store.list(sweep="bad")] == ["failed"]


def test_a_ray_task_resumed_from_its_own_store_keeps_the_hooks_its_folder_records(tmp_path, monkeypatch):
    """A Ray task training into a store of its own (`--storage`) is stopped part-way; the driver's
    copy of the group folder has no `hooks.json` yet (copied back when the group ends), so the
    retried task is sent no hooks: it takes them from its own store's folder, snapshots the rest
    of the run, and sends every snapshot and `hooks.json` back with the checkpoint. (The task
    function called here directly, as a Ray worker calls it.)"""
    from groklab.protocols.hooks import HOOKS_FILE, SnapshotHook, hook_specs
    from groklab.sweep.backends import _ray_train

    cfg = load_config("quickstart", [*TINY, "train.steps=400", "train.device=cpu"])
    root, gid = str(tmp_path / "task"), "0123456789ab"
    specs = hook_specs([SnapshotHook(Store(root), points=8)])
    ctrl_c_at(monkeypatch, 100)
    with pytest.raises(KeyboardInterrupt):
        _ray_train(root, "t", [cfg], gid, True, specs)
    monkeypatch.undo()
    assert Store(root).group(gid)[0]["status"] == "stopped"
    out = _ray_train(root, "t", [cfg], gid, True, ())                # a retry: no hooks from the driver
    assert out["runs"][0]["status"] == "finished" and out["checkpoint"]
    steps = sorted(int(name[len("snapshots/step-"):-len(".safetensors")]) for name in out["files"] if name.startswith("snapshots/"))
    assert steps[0] == 0 and steps[-1] == 400 and any(s > 100 for s in steps[:-1]), steps
    assert json.loads(out["files"][HOOKS_FILE]) == {"snapshot": {"points": 8}}
    assert not any(name.startswith("checkpoint") for name in out["files"])


# ---------------------------------------------------------------- runs table and CLI

def test_runs_table(tmp_path):
    store = Store(tmp_path / "runs")
    run_sweep(tiny_spec(fracs=(0.3, 0.5), seeds=(0, 1)), store=store, workers=1)
    table = runs_table(store, "t")
    assert len(table) == 4
    assert table.attrs["swept"] == ["data.frac_train", "train.seed"]
    assert sorted(table["data.frac_train"].unique()) == [0.3, 0.5]
    assert set(table["n_train"]) == {round(0.3 * 23 * 23), round(0.5 * 23 * 23)}
    for col in ("t_train99", "t_val99", "final_val_acc", "final_train_acc", "steps", "generalized"):
        assert col in table
    assert (table["steps"] == 60).all()
    assert "optim.lr" in runs_table(store, "t", ["optim.lr"])
    with pytest.raises(ConfigError, match="no runs"):
        runs_table(store, "nope")
    store.update_runs({int(table["run_id"][0]): ("stopped", {})})
    assert len(runs_table(store, "t")) == 3 and runs_table(store, "t").attrs["excluded"] == 1


def test_cli_sweep_end_to_end(tmp_path, capsys):
    from groklab.cli import main

    root = str(tmp_path / "runs")
    grid = ["sweep", "quickstart", "--grid", "data.frac_train=0.3,0.6", "--name", "e2e", "--store", root,
            *[a for s in TINY + ["train.device=cpu"] for a in ("--set", s)]]  # the CPU planner: 2 workers
    assert main(grid + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "2 to train" in out and "frac_train=0.6" in out
    assert main(grid + ["--json"]) == 0  # two spawn workers, one thread each
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["workers"] == 2 and [t["status"] for t in report["trained"]] == ["finished", "finished"]
    assert main(grid) == 0
    assert "2 done (skipped)" in capsys.readouterr().out
    # another sweep of the same points reuses them; --no-reuse trains them again
    other = [a if a != "e2e" else "e2e-again" for a in grid]
    assert main(other + ["--dry-run", "--no-reuse"]) == 0 and "2 to train" in capsys.readouterr().out
    assert main(other + ["--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["done"] == 2 and sorted(again["reused"]) == sorted(t["run_id"] for t in report["trained"]) and again["trained"] == []
    assert main(["ls", "--store", root, "--sweep", "e2e-again"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("finished*") == 2 and "*: 2 run(s) trained outside sweep e2e-again" in listed
    assert main(["ls", "--store", root, "--sweep", "e2e-again", "--json"]) == 0
    assert {r["trained_in"] for r in json.loads(capsys.readouterr().out)} == {"e2e"}
    png = tmp_path / "eff.png"
    assert main(["analyze", "e2e", "--store", root, "--kind", "efficiency", "-o", str(png), "--json"]) == 0
    eff = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 0 and [r["data.frac_train"] for r in eff["table"]] == [0.3, 0.6]
    assert main(["analyze", "e2e", "--store", root, "--kind", "critical"]) == 0
    assert "D_crit" in capsys.readouterr().out
    assert main(["sweep", "quickstart", "--grid", "optim.lrr=1e-3", "--store", root]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main(["analyze", "e2e", "--store", root, "--kind", "phase"]) == 2


def test_analyze_compares_several_sweeps_as_one_curve_each(tmp_path, capsys):
    """`analyze A B` draws A's and B's data-efficiency curves in one figure: here two stored sweeps
    (known histories) where B generalizes at both fractions and A only at the larger one."""
    from groklab.cli import main
    from groklab.config import config_json

    store = Store(tmp_path / "runs")
    val99 = {("a", 0.4): None, ("a", 0.6): 300, ("b", 0.4): 200, ("b", 0.6): 100}
    for (sweep, frac), step in val99.items():
        cfg = load_config("quickstart", [f"data.frac_train={frac}", "train.steps=400"])
        (rid,) = store.create_runs([config_json(cfg)], [f"{sweep}-{frac}"], f"g-{sweep}-{frac}", {}, sweep)
        store.log_metrics([(rid, t, k, v) for t in range(0, 401, 100) for k, v in
                           (("train_acc", 1.0), ("val_acc", 1.0 if step is not None and t >= step else 0.1))])
        store.update_runs({rid: ("finished", {"steps": 400})})
    root = ["--store", str(store.paths.root)]
    png = tmp_path / "both.png"
    assert main(["analyze", "a", "b", "-o", str(png), "--json", *root]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sweep"] == ["a", "b"] and out["runs"] == 4 and png.stat().st_size > 0
    curves = {(r["sweep"], r["data.frac_train"]): (r["median"], r["median_is_lower_bound"]) for r in out["table"]}
    assert curves == {("a", 0.4): (400, True), ("a", 0.6): (300, False), ("b", 0.4): (200, False),
                      ("b", 0.6): (100, False)}
    assert main(["analyze", "a", "b", *root]) == 0
    text = capsys.readouterr().out
    assert "> 400" in text and text.count("\n") == 5  # a header and one line per (sweep, fraction)
    for bad in (["--kind", "critical"], ["--by", "optim.lr"]):
        assert main(["analyze", "a", "b", *bad, *root]) == 2
        assert "compared as data-efficiency curves, one per sweep" in capsys.readouterr().err


def test_backends_share_one_executor_interface(tmp_path):
    """A backend is a registered executor factory: submit(group) -> Job, completed(jobs) -> outcomes.
    An unknown name lists the registered ones."""
    from groklab.sweep.backends import BACKENDS, InProcessExecutor

    with pytest.raises(ConfigError, match=r"--backend='slurm' is not a known backend; choose one of: local, ray"):
        BACKENDS.get("slurm")
    submitted = []

    class Counting(InProcessExecutor):
        def submit(self, group):
            submitted.append(group)
            return super().submit(group)

    BACKENDS.register("counting")(Counting)
    try:
        # pack=1: two groups on any device (a GPU's planner would pack both runs into one)
        report = run_sweep(tiny_spec(), store=Store(tmp_path / "runs"), backend="counting", workers=1, pack=1)
    finally:
        BACKENDS.remove("counting")
    assert len(submitted) == 2 and not report.failed
    assert [s for o in report.outcomes for s in o.statuses] == ["finished", "finished"]


def test_a_group_outcome_reads_as_one_progress_line():
    """What `reproduce` and the protocol commands print as each group ends."""
    from groklab.sweep import Group, GroupOutcome

    group = Group(tuple(expand(tiny_spec(fracs=(0.3, 0.5)))), sweep="t")
    assert GroupOutcome(group, statuses=["finished", "diverged"], seconds=12.4).line() == "  t: 2 run(s) trained (12 s)"
    failed = GroupOutcome(group, error="Traceback ...\nValueError: no data at /x", seconds=1)
    assert failed.line() == "  t: 2 run(s) did not finish: ValueError: no data at /x (1 s)"
