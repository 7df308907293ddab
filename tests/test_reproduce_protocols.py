"""`groklab reproduce` on protocol claims (mixture, efficiency, Fourier) and on the Ray backend."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from groklab.cli import main
from groklab.registry import ConfigError
from groklab.reproduce import evaluate, get_claim, load_claims, reproduce, validate
from groklab.reproduce.claims import parse_file
from groklab.reproduce.criteria import build_criterion
from groklab.reproduce.evidence import Evidence, ProtocolEvidence
from groklab.reproduce.protocols import ProtocolRun
from groklab.reproduce.verdict import INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, PARTIAL, REPRODUCED

from conftest import PROCESSES, ctrl_c_at
from groklab.store import Store

PROTOCOL_CLAIMS = ("mixture-speed-gap", "efficiency-norm", "fourier-key-frequencies")

# ---------------------------------------------------------------- claim files


def test_protocol_claims_are_wired_and_validate():
    for cid in PROTOCOL_CLAIMS:
        claim = get_claim(cid)
        assert claim.protocol_groups and not claim.sweep_groups
        validate(claim)  # the protocols' base configs build at both sizes
        assert all(c.groups() for c in claim.checks)
    assert not any(type(c).__name__ == "NeedsProtocol" for cl in load_claims() for c in cl.checks)


PROTO = """
study = "literature"
[[claims]]
id = "tiny-proto"
where = "fig. 1"
source = "test"
claim = "a protocol claim"
check = [{ name = "fourier_progress", group = "main" }]
[claims.runs.main]
protocol = "fourier"
params = { source = "quickstart", points = 12 }
set = ["train.early_stop=false"]
[claims.quick]
cpu_minutes = 0.1
[claims.full]
cpu_minutes = 1000
"""


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.replace('protocol = "fourier"', 'protocol = "fourrier"'),
     r"runs\.main\.protocol: protocol='fourrier' is not a known protocol \(did you mean 'fourier'"),
    (lambda t: t.replace("points = 12", "points = 12, spots = 3"), r"protocol 'fourier' has no parameter 'spots'"),
    (lambda t: t.replace("points = 12", 'points = "many"'), r"params\.points='many' must be of type int"),
    (lambda t: t.replace('set = ["train.early_stop=false"]', 'base = "quickstart"'),
     r"a protocol group takes params and set, not base"),
    (lambda t: t.replace("[claims.quick]\n", '[claims.quick]\nruns.main.params = { points = "x" }\n'),
     r"\(quick\)\.params\.points='x' must be of type int"),
    (lambda t: t.replace('protocol = "fourier"\n', 'base = "quickstart"\n'), r"only a protocol group .* takes params"),
    (lambda t: t.replace('name = "fourier_progress", group = "main"', 'name = "delay_ratio", group = "main", min_ratio = 2.0'),
     r"check\[0\]: check 'delay_ratio' reads a group of runs .*; runs\.main is a fourier protocol group"),
    (lambda t: t.replace('name = "fourier_progress"', 'name = "mixture_groks"'),
     r"check 'mixture_groks' reads a mixture protocol group; runs\.main is a fourier protocol group"),
    (lambda t: t.replace('protocol = "fourier"\nparams = { source = "quickstart", points = 12 }\n', 'base = "quickstart"\n'),
     r"check 'fourier_progress' reads a fourier protocol group; runs\.main is a group of runs"),
])
def test_bad_protocol_groups_fail_naming_the_field(edit, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_file(edit(PROTO), "tiny.toml")


def test_bad_protocol_base_fails_validation(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(PROTO.replace('source = "quickstart"', 'source = "quickstrat"'))
    (claim,) = load_claims([path])
    with pytest.raises(ConfigError, match=r"bad\.toml: claim 'tiny-proto', runs\.main \(quick\)"):
        validate(claim)


# ---------------------------------------------------------------- protocol checks on synthetic results

def _mix(train, val, val_acc=1.0, every=100) -> ProtocolRun:
    n = len(train)
    hist = pd.DataFrame({"step": [i * every for i in range(n)], "train_loss": train, "val_loss": val,
                         "val_acc": [val_acc] * n})
    return ProtocolRun((1, 2, 3), {}, hist)


def _ev(runs, name="main") -> Evidence:
    return Evidence({name: ProtocolEvidence(name, "x", len(runs), tuple(runs))})


START = math.log(47)
GROKS = _mix([START, 0.01, 0.01, 0.01, 0.01], [START, 40.0, 20.0, 2.0, 0.1])      # rises, back after train ~0
TOGETHER = _mix([START, 1.0, 0.05, 0.01, 0.01], [START, 1.5, 0.2, 0.1, 0.1])      # never above its start
BACK_TOO_SOON = _mix([START, 2.0, 1.0, 0.5, 0.05], [START, 10.0, 3.0, 1.0, 0.1])  # val back while train 1.0
STILL_HIGH = _mix([START, 0.01, 0.01, 0.01, 0.01], [START, 40.0, 30.0, 20.0, 10.0])
NO_FIT = _mix([START, 3.0, 2.5, 2.0, 1.0], [START, 3.5, 3.0, 2.5, 2.0])


@pytest.mark.parametrize("run, verdict", [
    (GROKS, REPRODUCED),
    (TOGETHER, NOT_REPRODUCED),
    (BACK_TOO_SOON, NOT_REPRODUCED),
    (STILL_HIGH, INCONCLUSIVE),
    (_mix([START, 0.01, 0.01, 0.01, 0.01], [START, 40.0, 20.0, 2.0, 0.1], val_acc=0.6), PARTIAL),
])
def test_mixture_groks(run, verdict):
    out = build_criterion({"name": "mixture_groks", "group": "main"}, "t").evaluate(_ev([run]))
    assert out.verdict == verdict, out.measured
    assert "val loss" in out.measured and out.figures["curves"][0]["val_loss_peak"] == max(run.history["val_loss"])


@pytest.mark.parametrize("run, verdict", [
    (TOGETHER, REPRODUCED),
    (GROKS, NOT_REPRODUCED),
    (NO_FIT, INCONCLUSIVE),
    (_mix([START, 1.0, 0.05, 0.01], [START, START, START, START]), NOT_REPRODUCED),  # val never falls
])
def test_losses_fall_together(run, verdict):
    out = build_criterion({"name": "losses_fall_together", "group": "main"}, "t").evaluate(_ev([run]))
    assert out.verdict == verdict, out.measured


def test_protocol_checks_combine_seeds():
    check = build_criterion({"name": "mixture_groks", "group": "main"}, "t")
    assert check.evaluate(_ev([GROKS, GROKS])).verdict == REPRODUCED
    assert check.evaluate(_ev([GROKS, TOGETHER])).verdict == PARTIAL
    assert check.evaluate(_ev([GROKS, STILL_HIGH])).verdict == INCONCLUSIVE


def _eff(mem, gen, reached=None) -> ProtocolRun:
    ns = [100 * (i + 1) for i in range(len(mem))]
    pts = [{"kind": k, "n_train": n, "param_norm": v, "reached": True if reached is None else reached[i]}
           for k, vals in (("C_mem", mem), ("C_gen", gen)) for i, (n, v) in enumerate(zip(ns, vals))]
    return ProtocolRun((1,), {"points": pts})


@pytest.mark.parametrize("mem, gen, reached, verdict", [
    ([30, 33, 36, 40], [30, 29.5, 30.5, 30], None, REPRODUCED),
    ([30, 33, 32, 40], [30, 29.5, 30.5, 30], None, PARTIAL),          # grows, but not at every size
    ([30, 33, 36, 40], [30, 31, 33, 35], None, PARTIAL),              # C_gen grows too, less than C_mem
    ([30, 29, 28, 27], [30, 30, 30, 30], None, NOT_REPRODUCED),
    ([30, 33, 36, 40], [30, 35, 40, 45], None, NOT_REPRODUCED),       # C_gen grows faster
    ([30, 33, 36, 40], [30, 30, 30, 30], [True, False, False, False], INCONCLUSIVE),
])
def test_norm_grows_with_data(mem, gen, reached, verdict):
    out = build_criterion({"name": "norm_grows_with_data", "group": "main"}, "t").evaluate(_ev([_eff(mem, gen, reached)]))
    assert out.verdict == verdict, out.measured
    figs = out.figures["seeds"][0]
    if verdict != INCONCLUSIVE:
        assert figs["C_mem"]["ratio"] == pytest.approx(mem[-1] / mem[0])
        assert (figs["C_mem"]["slope"] > 0) == (mem[-1] > mem[0])


def _fourier(keys, restricted, val, p=41, every=100) -> ProtocolRun:
    steps = [0, 10, 100, 300, 1000, 3000][:len(restricted)]
    prog = pd.DataFrame({"step": steps, "restricted_loss": restricted, "excluded_loss": [4.0] * len(steps)})
    hist = pd.DataFrame({"step": [i * every for i in range(len(val))], "val_acc": val})
    return ProtocolRun((7,), {"p": p, "key_freqs": keys}, hist, prog)


EARLY_R = [3.7, 3.7, 3.0, 1.0, 0.1, 0.01]        # below ½ ln 41 = 1.86 at step 300
VAL_LATE = [0.0] * 8 + [0.3, 0.8, 1.0]             # val acc >= 0.5 at step 900


@pytest.mark.parametrize("keys, restricted, val, verdict", [
    ([4, 19], EARLY_R, VAL_LATE, REPRODUCED),
    (list(range(1, 10)), EARLY_R, VAL_LATE, PARTIAL),                  # 9 of 20 frequencies: not few
    ([4, 19], [3.7, 3.7, 3.7, 3.6, 3.0, 0.5], VAL_LATE, PARTIAL),      # restricted falls only after the jump
    (list(range(1, 10)), [3.7, 3.7, 3.7, 3.6, 3.0, 0.5], VAL_LATE, NOT_REPRODUCED),
    ([4, 19], EARLY_R, [0.0] * 11, INCONCLUSIVE),
])
def test_fourier_progress(keys, restricted, val, verdict):
    out = build_criterion({"name": "fourier_progress", "group": "main"}, "t").evaluate(
        _ev([_fourier(keys, restricted, val)]))
    assert out.verdict == verdict, out.measured
    assert out.figures["seeds"][0]["n_keys"] == len(keys)


# ---------------------------------------------------------------- protocol claims from the store


def test_protocol_claims_without_runs_are_not_run_and_write_nothing(tmp_path):
    from groklab.store import Store

    store = Store(tmp_path / "runs")
    for cid in PROTOCOL_CLAIMS:
        result = evaluate(get_claim(cid), "quick", store)
        assert result.verdict == NOT_RUN and result.runs == (), result.measured
    assert not (tmp_path / "runs").exists()


def test_protocol_claim_end_to_end_then_reuses_the_store(tmp_path, store):
    """The Fourier protocol on the tiny grokking MLP (its quick problem): trained once, then read."""
    path = tmp_path / "tiny.toml"
    path.write_text(PROTO)
    (claim,) = load_claims([path])
    first = reproduce(claim, "quick", store)
    assert first.verdict in (REPRODUCED, PARTIAL, NOT_REPRODUCED), first.measured  # it generalized: decidable
    assert first.new_runs == 1 and len(first.runs) == 1
    (row,) = store.list()
    assert row["status"] == "finished" and row["config"]["train"]["early_stop"] is False
    figs = first.outcome.figures["seeds"][0]
    assert f"{figs['n_keys']} key frequencies of 23" in first.measured
    again = reproduce(claim, "quick", store)
    assert again.new_runs == 0 and again.runs == first.runs and again.outcome == first.outcome
    assert evaluate(claim, "quick", store).outcome == first.outcome
    assert evaluate(claim, "full", store).verdict == NOT_RUN          # the full size's runs are other runs


SHORT = ("train.steps=1500", "train.device=cpu")


def _tiny_proto_and_its_run(tmp_path, store, overrides):
    """The tiny Fourier claim, and the config of the run its protocol asks for (`MissingRun`)."""
    from groklab.protocols.components import MissingRun
    from groklab.reproduce import _protocol_calls

    path = tmp_path / "tiny.toml"
    path.write_text(PROTO)
    (claim,) = load_claims([path])
    (call,) = _protocol_calls(claim, "main", "quick", store, overrides)
    with pytest.raises(MissingRun) as missing:
        call(False)
    return claim, missing.value.cfg


def test_a_finished_run_the_protocol_refuses_is_trained_again_as_a_sweep_group(tmp_path, store):
    """A finished run of the Fourier protocol's config trained without its snapshot hook (as
    `groklab run` would) is refused by the protocol; `reproduce` trains the run it needs as a sweep
    group with the hook (before: the protocol trained it in this process, outside the workers)."""
    from groklab.train import train

    claim, cfg = _tiny_proto_and_its_run(tmp_path, store, SHORT)
    (plain,) = train(cfg, store=store, progress=False)  # no hook: no snapshots
    plans = []
    result = reproduce(claim, "quick", store, overrides=SHORT, workers=2, on_group=lambda g, plan: plans.append(plan))
    assert [(p.sweep, p.n_new) for p in plans] == [("claim-tiny-proto-quick-main", 1)]
    rows = store.list()
    assert len(rows) == 2 and result.new_runs == 1
    (mine,) = [r for r in rows if r["id"] != plain.run_id]
    assert mine["sweep"] == "claim-tiny-proto-quick-main" and result.runs == (mine["id"],)
    assert f"{result.outcome.figures['seeds'][0]['n_keys']} key frequencies of 23" in result.measured


def test_a_protocol_run_another_process_is_training_is_not_trained_twice(tmp_path, store, capsys):
    """A run of the Fourier protocol's config that another live process is training (a second
    `reproduce` on the same store): the claim reads `not run` naming it, and `groklab fourier`
    exits 2 with one line — where before each trained a second copy in its own process."""
    import subprocess

    from groklab.train.engine import create_group

    claim, cfg = _tiny_proto_and_its_run(tmp_path, store, SHORT)
    gid, (run_id,) = create_group(store, [cfg], "elsewhere")
    snapshots = store.paths.group_dir(gid) / "snapshots"                # its first snapshot is written
    snapshots.mkdir(parents=True)
    (snapshots / "step-00000000.safetensors").write_bytes(b"")
    proc = subprocess.Popen(["sleep", "60"])                             # stands in for the process training it
    try:
        store.conn.execute("UPDATE runs SET status='running', owner_pid=?, owner_start=NULL", (proc.pid,))
        result = reproduce(claim, "quick", store, overrides=SHORT, workers=1)
        assert result.verdict == NOT_RUN and f"run {run_id} (quickstart) is training in another process" in result.measured
        assert main(["fourier", "quickstart", "--quick", "--points", "12", "-q", "--store", str(store.paths.root),
                     *[a for kv in ("train.early_stop=false", *SHORT) for a in ("--set", kv)]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is training in another process" in err[0], err
        assert [r["id"] for r in store.list()] == [run_id]                # nothing trained beside it
    finally:
        proc.kill()
        proc.wait()


def test_a_component_that_misses_its_budget_makes_the_claim_inconclusive(tmp_path, store):
    text = (PROTO.replace('check = [{ name = "fourier_progress", group = "main" }]',
                          'check = [{ name = "mixture_groks", group = "main" }]')
            .replace('protocol = "fourier"', 'protocol = "mixture"')
            .replace('params = { source = "quickstart", points = 12 }', 'params = { arch = "mlp" }')
            .replace('set = ["train.early_stop=false"]', 'set = ["train.steps=20"]'))
    path = tmp_path / "mix.toml"
    path.write_text(text)
    (claim,) = load_claims([path])
    result = reproduce(claim, "quick", store)
    assert result.verdict == INCONCLUSIVE and "C_gen run" in result.measured and "< 0.99" in result.measured
    assert len(store.list()) == 1                                     # nothing trained past the failed C_gen


EFF = """
study = "mystery"
[[claims]]
id = "tiny-eff"
where = "fig. 6"
claim = "model efficiency on the quick MLP, shortened"
check = [{ name = "norm_grows_with_data", group = "main" }]
[claims.runs.main]
protocol = "efficiency"
params = { arch = "mlp", fractions = [0.4, 0.6] }
set = ["train.steps=1000", "train.device=cpu"]
[claims.quick]
cpu_minutes = 0.5
[claims.full]
cpu_minutes = 1000
"""


def _overlap(rows_a: list[dict], rows_b: list[dict]) -> bool:
    """Two sets of runs trained at the same time: each began before the other ended."""
    return min(r["created"] for r in rows_a) < max(r["updated"] for r in rows_b) and \
        min(r["created"] for r in rows_b) < max(r["updated"] for r in rows_a)


def test_a_protocols_runs_train_as_sweep_groups_on_both_workers_with_the_sequential_figures(tmp_path, store):
    """The efficiency protocol's four independent runs train as sweep groups on two workers at once
    (with the hook that logs the correct-class logit), and read exactly as the protocol trained
    one after another in this process reads them."""
    from groklab.protocols.efficiency import run_efficiency
    from groklab.store import Store

    path = tmp_path / "eff.toml"
    path.write_text(EFF)
    (claim,) = load_claims([path])
    plans = []
    result = reproduce(claim, "quick", store, workers=2, on_group=lambda g, plan: plans.append(plan))
    assert result.new_runs == 4 and len(result.runs) == 4
    assert [p.sweep for p in plans] == ["claim-tiny-eff-quick-main"] and plans[0].workers == 2
    rows = store.list()
    assert {r["sweep"] for r in rows} == {"claim-tiny-eff-quick-main"} and all(r["status"] == "finished" for r in rows)
    groups = sorted({r["group_id"] for r in rows})
    assert len(groups) == 2 and _overlap(*[[r for r in rows if r["group_id"] == g] for g in groups])
    args = dict(quick=True, overrides=["train.steps=1000", "train.device=cpu", "train.seed=0"])
    ref = run_efficiency("mlp", (0.4, 0.6), store=Store(tmp_path / "ref"), **args)
    got = run_efficiency("mlp", (0.4, 0.6), store=store, train_missing=False, **args)  # read back, as the verdict is
    assert sorted(p.run_id for p in got) == sorted(result.runs)
    for a, b in zip(got, ref):
        for key in ("kind", "frac_train", "step", "param_norm", "correct_logit", "train_loss", "val_acc", "reached"):
            assert getattr(a, key) == getattr(b, key), (b.kind, b.frac_train, key)
    again = reproduce(claim, "quick", store, workers=2)
    assert again.new_runs == 0 and again.outcome == result.outcome and len(store.list()) == 4


def test_an_interrupted_protocol_stage_resumes_its_groups_on_the_workers(tmp_path, store, monkeypatch):
    """Ctrl-C while the efficiency protocol's four runs train as one sweep group leaves them
    `stopped`. Asked again, `reproduce` resumes that group from its checkpoint on the workers (the
    same rows, their hook restored), where the protocol alone would have trained four new runs one
    after another in this process (it resumes only solo runs). The figures equal an uninterrupted
    reproduction's."""
    path = tmp_path / "eff.toml"
    path.write_text(EFF)
    (claim,) = load_claims([path])
    ref = reproduce(claim, "quick", Store(tmp_path / "ref"), workers=2)
    ctrl_c_at(monkeypatch, 400)
    with pytest.raises(KeyboardInterrupt):
        reproduce(claim, "quick", store, workers=1)
    monkeypatch.undo()
    before = store.list()
    assert len(before) == 4 and {r["status"] for r in before} == {"stopped"} and len({r["group_id"] for r in before}) == 1
    plans = []
    again = reproduce(claim, "quick", store, workers=2, on_group=lambda g, plan: plans.append(plan))
    assert [(p.n_resume, p.n_new, len(p.groups)) for p in plans] == [(4, 0, 1)]  # the stopped group, resumed
    after = store.list()
    assert [r["id"] for r in after] == [r["id"] for r in before] and {r["status"] for r in after} == {"finished"}
    assert again.verdict == ref.verdict and again.outcome.figures == ref.outcome.figures


MIX = """
study = "mystery"
[[claims]]
id = "tiny-mix"
where = "fig. 5"
claim = "the mixture model with and without a speed gap"
check = [{ name = "mixture_groks", group = "fast", train_low = 0.1, min_rise = 0.1, level = 0.99 },
         { name = "losses_fall_together", group = "equal", train_low = 0.1, min_rise = 0.1 }]
[claims.runs.fast]
protocol = "mixture"
params = { arch = "mlp", w_mem2 = 10.0, w_gen2 = 1.0 }
set = ["train.device=cpu"]
[claims.runs.equal]
protocol = "mixture"
params = { arch = "mlp", w_mem2 = 1.0, w_gen2 = 1.0 }
set = ["train.device=cpu"]
[claims.quick]
cpu_minutes = 1
[claims.full]
cpu_minutes = 1000
"""


def test_two_mixtures_train_their_shared_components_once_then_both_mixtures_at_once(tmp_path, store):
    """The mixture protocol's runs build on each other (C_gen, the C_mem probe, C_mem, the mixture):
    trained stage by stage as sweep groups, the two groups' common components once, under the first
    group's sweep, and the two mixtures at the same time on two workers."""
    path = tmp_path / "mix.toml"
    path.write_text(MIX)
    (claim,) = load_claims([path])
    result = reproduce(claim, "quick", store, workers=2)
    assert result.verdict == REPRODUCED, result.measured
    rows = store.list()
    assert result.new_runs == len(rows) == 5 and all(r["status"] == "finished" for r in rows)
    mixes = [r for r in rows if r["config"]["model"]["name"] == "mixture"]
    assert [r["sweep"] for r in rows if r not in mixes] == ["claim-tiny-mix-quick-fast"] * 3
    assert sorted(r["sweep"] for r in mixes) == ["claim-tiny-mix-quick-equal", "claim-tiny-mix-quick-fast"]
    assert [r["name"] for r in rows if r not in mixes] == ["quickstart-Cgen", "quickstart-Cmem-probe",
                                                           "quickstart-Cmem-fit"]  # their roles' names
    assert sorted(r["name"] for r in mixes) == ["mixture-1-1", "mixture-10-1"]
    assert _overlap([mixes[0]], [mixes[1]])
    again = reproduce(claim, "quick", store, workers=2)
    assert again.new_runs == 0 and again.outcome == result.outcome and len(store.list()) == 5


def test_cli_bad_override_on_a_protocol_claim_exits_2(tmp_path, capsys):
    fresh = tmp_path / "fresh"
    assert main(["reproduce", "mixture-speed-gap", "--set", "optim.lr=-1", "--store", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and err.count("\n") == 1
    assert not (fresh / "groklab.db").exists()


# ---------------------------------------------------------------- the Ray backend


@PROCESSES
def test_ray_backend_gives_the_local_verdict(tmp_path, capsys):
    """`groklab reproduce --backend ray` on the smallest claim (one tiny MLP run) on a local Ray
    cluster started here: the same verdict, measured text and figures as the local backend."""
    ray = pytest.importorskip("ray")
    claim = "mystery-mlp-groks"
    assert min(c.size("quick").cpu_minutes for c in load_claims() if c.runs) == get_claim(claim).size("quick").cpu_minutes
    assert main(["reproduce", claim, "--quick", "--json", "--workers", "1", "--store", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["reproduce", claim, "--quick", "--json", "--backend", "ray",
                     "--store", str(tmp_path / "ray")]) == 0
        remote = json.loads(capsys.readouterr().out)
    finally:
        ray.shutdown()
    assert local["verdict"] in (REPRODUCED, PARTIAL, NOT_REPRODUCED, INCONCLUSIVE)
    assert local["new_runs"] == remote["new_runs"] == 1
    for key in ("verdict", "measured", "figures", "runs"):
        assert remote[key] == local[key], key
    from groklab.store import Store
    (row,) = Store(tmp_path / "ray").list()
    assert row["status"] == "finished" and row["sweep"] == "claim-tiny-mlp-quick"


@PROCESSES
def test_on_ray_a_protocols_runs_train_as_ray_tasks_and_their_snapshots_come_back(tmp_path, store):
    """The Fourier protocol's run (it needs log-spaced weight snapshots) trained as a sweep group on
    a local Ray cluster started here, with `storage`: the task trains in a store of its own and
    sends its snapshots and `hooks.json` back with the metrics (before, on Ray the protocol trained
    in this process). The verdict and figures read from the driver's store equal the local ones."""
    ray = pytest.importorskip("ray")
    from groklab.protocols.hooks import HOOKS_FILE, list_snapshots

    path = tmp_path / "tiny.toml"
    path.write_text(PROTO)
    (claim,) = load_claims([path])
    local = reproduce(claim, "quick", store, overrides=SHORT, workers=1)
    remote_store, shared = Store(tmp_path / "ray"), tmp_path / "shared"
    plans = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = reproduce(claim, "quick", remote_store, overrides=SHORT, backend="ray", storage=shared,
                           on_group=lambda g, plan: plans.append(plan))
    finally:
        ray.shutdown()
    assert [p.sweep for p in plans] == ["claim-tiny-proto-quick-main"] and plans[0].n_new == 1  # a Ray task's group
    (row,) = remote_store.list()                                      # the protocol trained none of its own
    assert row["status"] == "finished" and remote.new_runs == 1 and remote.runs == (row["id"],)
    task_store = Store(shared / row["group_id"])                      # where the task trained
    assert [r["status"] for r in task_store.list()] == ["finished"]
    here, there = remote_store.paths.group_dir(row["group_id"]), task_store.paths.group_dir(row["group_id"])
    steps = [s for s, _ in list_snapshots(remote_store, row["group_id"])]
    assert len(steps) >= 10 and steps == [s for s, _ in list_snapshots(task_store, row["group_id"])]
    for name in (HOOKS_FILE, f"snapshots/step-{steps[-1]:08d}.safetensors"):
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
    assert remote.verdict == local.verdict and remote.measured == local.measured
    assert remote.outcome.figures == local.outcome.figures
