import json
import math
import shutil

import pytest
import torch

from groklab import load_config, with_overrides
from groklab.config import ConfigError
from groklab.train import check_ensemble, train
from groklab.train.schedule import eval_steps, lr_factor

from conftest import CPU, MEMBER_COLS, TINY_GROK, early_stopping_group, tiny


def test_tiny_problem_groks_with_a_delay(tiny_grok_cfg):
    (res,) = train(tiny_grok_cfg, progress=False)
    s = res.summary
    assert s["step_train_99"] is not None and s["step_val_99"] is not None, s
    # Delayed generalization: validation reaches 99 % at least twice as late as training ...
    assert s["step_val_99"] >= 2 * s["step_train_99"], s
    # ... and when training first hit 99 %, validation was still far from it.
    m = res.metrics.set_index("step")
    assert m.loc[s["step_train_99"], "val_acc"] < 0.5
    assert s["val_acc"] >= 0.99


def _assert_same_history(a, b, cols=("train_loss", "val_loss", "train_acc", "val_acc", "param_norm")):
    assert list(a["step"]) == list(b["step"])
    for col in cols:
        torch.testing.assert_close(torch.tensor(a[col].values), torch.tensor(b[col].values), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_ensemble_member_matches_solo_run(model):
    extra = [] if model == "mlp" else ["model.name=transformer", "model.d_model=32", "model.n_heads=2",
                                         "model.d_mlp=64", "model.n_layers=1"]
    base = tiny("quickstart", *extra, CPU, steps=200)
    members = [with_overrides(base, {"train.seed": 0, "optim.weight_decay": 1.0}),
               with_overrides(base, {"train.seed": 3, "optim.weight_decay": 0.3, "optim.lr": 2e-3,
                                     "data.frac_train": 0.6, "data.split_seed": 2})]
    ens = train(members, progress=False)
    solo = train(members[1], progress=False)[0]
    _assert_same_history(ens[1].metrics, solo.metrics)
    assert not ens[0].metrics["train_loss"].equals(ens[1].metrics["train_loss"])


def test_same_config_same_metrics():
    cfg = tiny("quickstart", CPU, steps=120)
    a, b = train(cfg, progress=False)[0], train(cfg, progress=False)[0]
    assert a.metrics[["train_loss", "val_loss"]].equals(b.metrics[["train_loss", "val_loss"]])


def test_incompatible_members_rejected():
    cfg = tiny()
    with pytest.raises(ConfigError, match="differs in model.d_hidden"):
        check_ensemble([cfg, with_overrides(cfg, {"model.d_hidden": 64})])


def test_divergence_stops_member_and_keeps_history():
    base = tiny(steps=100)
    good, bad = base, with_overrides(base, {"optim.lr": 1e6, "train.seed": 1, "optim.weight_decay": 0.0})
    res = train([good, with_overrides(bad, {"optim.name": "adamw"})], progress=False)
    # lr 1e6 with Adam blows the weights up: the member is stopped as diverged, the other trains on.
    assert res[0].status == "finished"
    diverged = res[1]
    if diverged.status == "diverged":
        assert len(diverged.metrics) >= 1 and diverged.metrics["step"].max() < res[0].metrics["step"].max()
    else:  # Adam's normalized step may keep the loss finite; then SGD surely diverges
        (sgd,) = train(with_overrides(bad, {"optim.name": "sgd"}), progress=False)
        assert sgd.status == "diverged" and len(sgd.metrics) >= 1


def test_sgd_divergence():
    cfg = with_overrides(tiny(steps=100), {"optim.name": "sgd", "optim.lr": 1e8})
    (res,) = train(cfg, progress=False)
    assert res.status == "diverged"
    assert not math.isfinite(res.metrics["train_loss"].iloc[-1]) or res.metrics["step"].max() < 100


def test_early_stop_when_val_holds(tiny_grok_cfg):
    cfg = with_overrides(tiny_grok_cfg, {"train.early_stop": True, "train.early_stop_patience": 2})
    (res,) = train(cfg, progress=False)
    assert res.summary["early_stopped"] and res.summary["steps"] < cfg.train.steps
    assert (res.metrics["val_acc"].iloc[-2:] >= 0.99).all()


def test_eval_steps_log_spaced_plus_cadence():
    cfg = load_config("quickstart", ["train.steps=10000", "train.eval_every=1000", "train.eval_log_points=20"])
    steps = eval_steps(cfg.train)
    assert steps[0] == 0 and steps[-1] == 10000
    assert {1, 2, 1000, 5000}.issubset(steps)
    assert len(steps) < 40


def test_lr_schedules():
    from groklab.config import OptimCfg
    warm = OptimCfg(warmup_steps=10)
    assert lr_factor(warm, 0, 100) == pytest.approx(0.1) and lr_factor(warm, 50, 100) == 1.0
    cos = OptimCfg(schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(cos, 0, 100) == 1.0 and lr_factor(cos, 100, 100) == pytest.approx(0.1)
    step = OptimCfg(schedule="step", step_every=10, step_gamma=0.5)
    assert lr_factor(step, 25, 100) == 0.25


def test_minibatch_and_full_batch_both_train():
    full = with_overrides(tiny(steps=150), {"train.batch_size": "full", "optim.lr": 3e-3})
    (res,) = train(full, progress=False)
    assert res.metrics["train_loss"].iloc[-1] < res.metrics["train_loss"].iloc[0]


def test_error_mid_run_marks_failed_and_resume_finishes(tmp_path):
    from groklab.api import resume
    from groklab.store import Store

    store = Store(tmp_path / "runs")

    def boom(step, state):
        if step >= 40:
            raise RuntimeError("disk on fire")
    cfg = with_overrides(tiny(steps=80), {"train.checkpoint_every": 20})
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(cfg, store=store, progress=False, hooks=[boom])
    assert store.list()[0]["status"] == "failed"
    (rec,) = resume(1, store)
    assert rec.status == "finished" and rec.summary["steps"] == 80


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_step_trains_like_the_eager_step():
    # train.compile fuses the step's forward and loss with torch.compile (inductor's C++ backend on
    # the CPU): the same run within float rounding, and the compiled frame really ran — compiled
    # once: dropout's cached position table made dynamo compile again at the second step, which on
    # a GPU falls inside the CUDA-graph capture.
    from torch._dynamo.utils import counters
    cfg = tiny("quickstart", CPU, "model.dropout=0.1", steps=40)
    counters.clear()
    compiled = train(with_overrides(cfg, {"train.compile": True}), progress=False)[0].metrics
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    eager = train(cfg, progress=False)[0].metrics
    cols = ["train_loss", "val_loss", "param_norm"]
    torch.testing.assert_close(torch.tensor(compiled[cols].values), torch.tensor(eager[cols].values),
                               rtol=1e-4, atol=1e-5)


def test_nothing_compiles_inside_a_graph_capture():
    """A compile inside a CUDA-graph capture breaks it (and the CUDA generator after it); the
    capture runs under a stance where a recompile raises, naming the guard, before compiling."""
    from groklab.train.step import TrainStep
    step = TrainStep.__new__(TrainStep)
    double = torch.compile(lambda x: x * 2, dynamic=False, backend="eager")  # dynamo's guards, no C++ needed
    double(torch.ones(3))
    step.compiled = True
    with pytest.raises(RuntimeError, match="recompile"):
        with step._no_compiling():
            double(torch.ones(5))
    with step._no_compiling():
        assert double(torch.ones(3)).sum() == 6  # what was compiled before still runs
    step.compiled = False
    with step._no_compiling():
        double(torch.ones(7))  # eager steps set no stance


def test_checkpoints_of_every_dtype_read_back_exactly(tmp_path):
    """A checkpoint holds float, integer, bool, empty and 0-dim tensors (the digest reads each one's
    bytes as a view): safetensors' own reader and groklab's checked reader return them exactly."""
    from safetensors import safe_open

    from groklab.train.checkpoint import read_tensors, write_tensors
    g = torch.Generator().manual_seed(0)
    tensors = {"params": torch.randn(3, 7, generator=g), "opt.v": torch.rand(3, 7, generator=g).double(),
               "rng.noise": torch.randint(0, 255, (3, 5), dtype=torch.uint8, generator=g),
               "half": torch.randn(4, generator=g).bfloat16(), "step": torch.tensor(12), "empty": torch.zeros(0, 3),
               "flags": torch.tensor([True, False]), "ids": torch.arange(5, dtype=torch.int32),
               "strided": torch.randn(4, 6, generator=g).t()}
    path = tmp_path / "c.safetensors"
    write_tensors(path, tensors, {"meta": "{}"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["meta"] == "{}" and torch.equal(f.get_tensor("params"), tensors["params"])
    read, meta = read_tensors(path)  # its size and SHA-256 checks pass
    assert meta["meta"] == "{}" and read.keys() == tensors.keys()
    assert all(read[k].dtype == v.dtype and torch.equal(read[k], v) for k, v in tensors.items())
    path.write_bytes(path.read_bytes().replace(tensors["ids"].numpy().tobytes(), bytes(20)))
    with pytest.raises(RuntimeError, match="SHA-256"):
        read_tensors(path)


def test_checkpoint_bytes_go_to_disk_from_the_tensors_own_memory(tmp_path, monkeypatch):
    """No copy of the whole file is made before it is written: joining a 263 MB ensemble
    checkpoint into one `bytes` held the GIL for 0.25 s, stalling training beside the background
    writer (benchmarks/bench_sweep.py --only-checkpoint). Each tensor reaches `os.write` as a view
    of its own memory, and the file reads back exactly."""
    import numpy as np

    from groklab.train import checkpoint
    big, small = torch.arange(1 << 18, dtype=torch.float32), torch.ones(3, dtype=torch.float64)
    written, real_write = [], checkpoint.os.write

    def recording_write(fd, data):
        written.append(data)
        return real_write(fd, data)
    monkeypatch.setattr(checkpoint.os, "write", recording_write)
    path = tmp_path / "c.safetensors"
    checkpoint.write_tensors(path, {"big": big, "small": small}, {"meta": "{}"})
    monkeypatch.undo()
    assert any(np.shares_memory(np.asarray(w), big.numpy()) for w in written)
    assert sum(len(memoryview(w).cast("B")) for w in written) == path.stat().st_size
    read, _ = checkpoint.read_tensors(path)
    assert torch.equal(read["big"], big) and torch.equal(read["small"], small)


def _slow_checkpoint_writes(monkeypatch, log: list):
    """Make every checkpoint write take 0.3 s more; log (thread name, steps trained meanwhile)."""
    import threading
    import time

    from groklab.train import checkpoint as ckpt_mod
    from groklab.train import step as step_mod
    steps, real_write, real_step = [0], ckpt_mod._write_all, step_mod.TrainStep._step

    def slow_write(fd, data):
        before = steps[0]
        time.sleep(0.3)
        real_write(fd, data)
        log.append((threading.current_thread().name, steps[0] - before))

    def counted_step(self):
        real_step(self)
        steps[0] += 1
    monkeypatch.setattr(ckpt_mod, "_write_all", slow_write)
    monkeypatch.setattr(step_mod.TrainStep, "_step", counted_step)


def test_checkpoints_are_written_while_training_goes_on(tmp_path, monkeypatch):
    """Intermediate checkpoints are written by the writer thread while the run trains on (a sweep's
    ensemble checkpoint is 263 MB); the last one is on disk before the rows say finished."""
    from groklab.store import Store
    from groklab.train.checkpoint import read_tensors
    log: list = []
    _slow_checkpoint_writes(monkeypatch, log)
    store = Store(tmp_path / "s")
    (res,) = train(tiny("quickstart", CPU, "train.checkpoint_every=20", steps=60), store=store, progress=False)
    assert [name for name, _ in log] == ["groklab-checkpoint", "groklab-checkpoint", "MainThread"], log
    assert all(trained > 0 for _, trained in log[:2]), log  # steps ran during the background writes
    _, meta = read_tensors(store.paths.checkpoint(store.list()[0]["group_id"]))
    assert res.status == "finished" and json.loads(meta["meta"])["step"] == 60


def test_a_checkpoint_in_flight_lands_before_a_stopped_run_returns(tmp_path, monkeypatch):
    """A run stopped while its checkpoint is being written returns only once the file is on disk:
    no write may land after another process has resumed the run."""
    import threading

    from groklab.api import resume
    from groklab.store import Store
    from groklab.train import step as step_mod
    from groklab.train.checkpoint import read_tensors
    log: list = []
    _slow_checkpoint_writes(monkeypatch, log)
    slow_step = step_mod.TrainStep._step

    def stop_at_25(self):
        if int(self.step_t) == 25:  # 5 steps after the step-20 write began; it sleeps 0.3 s
            raise KeyboardInterrupt
        slow_step(self)
    monkeypatch.setattr(step_mod.TrainStep, "_step", stop_at_25)
    store = Store(tmp_path / "s")
    cfg = tiny("quickstart", CPU, "train.checkpoint_every=20", steps=60)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store=store, progress=False)
    assert not [t for t in threading.enumerate() if t.name == "groklab-checkpoint"]
    # one write, on the writer thread, while training went on: 5 steps ran during it when the
    # writer starts at once (it notes its start when its thread first runs, so a busy machine
    # counts fewer; a write on the training thread would count 0)
    assert len(log) == 1 and log[0][0] == "groklab-checkpoint" and 1 <= log[0][1] <= 5, log
    row = store.list()[0]
    _, meta = read_tensors(store.paths.checkpoint(row["group_id"]))
    assert row["status"] == "stopped" and json.loads(meta["meta"])["step"] == 20
    monkeypatch.setattr(step_mod.TrainStep, "_step", slow_step)
    (rec,) = resume(row["id"], store)
    (whole,) = train(cfg, progress=False)
    cols = ["step", *MEMBER_COLS]
    assert rec.status == "finished" and rec.metrics[cols].equals(whole.metrics[cols])


def test_member_states_read_checkpoints_written_before_the_rename():
    """Checkpoints keep each member's threshold steps; older ones name them t_train99 / t_val99."""
    from groklab.train.engine import _Members
    old = [{"status": "running", "t_train99": 40, "t_val99": None, "hold": 0, "early": False}]
    members = _Members.from_json(old)
    assert members.step_train_99 == [40] and members.step_val_99 == [None]
    assert _Members.from_json(members.to_json()).to_json() == members.to_json()


def test_stopped_members_leave_the_batched_model_and_change_nothing(tmp_path, monkeypatch):
    """Early-stopped members leave the ensemble (the rest train at their own count's cost); every
    member's history, and the stored weights of one that left, equal its solo run bitwise. Each
    time members leave, the whole group goes once to a ledger file; the checkpoints after it hold
    the live rows only and name it (they rewrote every member before: 263 MB per checkpoint in a
    sweep's tail); the last checkpoint is whole again and no ledger file stays."""
    from groklab.api import load_weights
    from groklab.store import Store
    from groklab.train import checkpoint
    from groklab.train import step as step_mod

    widths, writes, init, write = [], [], step_mod.TrainStep.__init__, checkpoint.write_tensors

    def spy(self, model, flat, *args, **kwargs):
        widths.append(flat.data.shape[0])
        init(self, model, flat, *args, **kwargs)

    def write_spy(path, tensors, metadata, **kwargs):
        writes.append((path.name, tensors["params"].shape[0], metadata.get("ledger")))
        write(path, tensors, metadata, **kwargs)
    monkeypatch.setattr(step_mod.TrainStep, "__init__", spy)
    monkeypatch.setattr(checkpoint, "write_tensors", write_spy)
    cfgs = early_stopping_group()
    store = Store(tmp_path / "group")
    group = train(cfgs, store=store, progress=False)
    assert [r.summary["early_stopped"] for r in group] == [True, True, False]
    assert widths[0] == 3 and widths[-1] == 1 and widths == sorted(widths, reverse=True), widths
    ledgers = {name: rows for name, rows, _ in writes if ".ledger-" in name}
    assert len(ledgers) == len(set(widths)) - 1, writes                    # once per shrink, ...
    assert set(ledgers.values()) == {3}, writes                             # ... the whole group
    first = next(k for k, w in enumerate(writes) if w[0] in ledgers)
    after = [(rows, ledger) for name, rows, ledger in writes[first + 1:-1] if name not in ledgers]
    assert after and all(rows < 3 and ledger in ledgers for rows, ledger in after), writes
    assert writes[-1] == ("checkpoint.safetensors", 3, None), writes       # the last one is whole
    gid = store.list()[0]["group_id"]
    assert [p.name for p in store.paths.group_dir(gid).iterdir()] == ["checkpoint.safetensors"]
    cols = ["train_loss", "val_loss", "train_acc", "val_acc", "param_norm"]
    for i, cfg in enumerate(cfgs):
        solo_store = Store(tmp_path / f"solo{i}")
        (solo,) = train(cfg, store=solo_store, progress=False)
        assert group[i].metrics[cols].equals(solo.metrics[cols]), i
        mine, theirs = load_weights(group[i].run_id, store), load_weights(solo.run_id, solo_store)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), i


def test_a_reader_follows_a_running_group_to_its_next_ledger(tmp_path, monkeypatch):
    """An analysis that reads the checkpoint of a group still training, just as members leave
    again (the writer puts a new ledger on disk, then a checkpoint naming it, then removes the old
    ledger), reads the new pair instead of failing on the old ledger's file."""
    from groklab.store import Store
    from groklab.train import checkpoint
    from groklab.train.engine import _Run

    run = _Run(early_stopping_group(), Store(tmp_path / "s"), None, None)
    path, read = run.store.paths.checkpoint(run.group), checkpoint.read_tensors
    run.sync_phase(0)
    run.members.status[0] = "finished"
    run.shrink()
    run.checkpoint(100)
    run.writer.wait()
    first = next(path.parent.glob("*.ledger-*"))

    def writer_moves_on(p):
        out = read(p)
        if p == path and run.live == [1, 2]:  # the reader has the checkpoint naming `first` ...
            run.train_step()  # (the group's state changes, and with it the next ledger's name)
            run.members.status[1] = "finished"
            run.shrink()
            run.checkpoint(200)  # ... when the writer replaces both files
            run.writer.wait()
        return out
    monkeypatch.setattr(checkpoint, "read_tensors", writer_moves_on)
    tensors, meta = checkpoint.read_checkpoint(path)
    assert not first.exists() and json.loads(meta["meta"])["step"] == 200 and json.loads(meta["live"]) == [2]
    assert tensors["params"].shape[0] == 3


def test_a_group_killed_after_members_left_resumes_to_the_same_end(tmp_path, monkeypatch):
    """The checkpoint left by the kill holds the one live member and names the ledger with the
    rest: resumed, the group ends as an uninterrupted one; a missing or replaced ledger file is
    refused with a message naming it."""
    from groklab.api import load_weights, resume
    from groklab.store import Store
    from groklab.train import step as step_mod
    from groklab.train.checkpoint import CheckpointError, read_tensors, write_tensors

    cfgs = early_stopping_group()
    whole = train(cfgs, store=Store(tmp_path / "whole"), progress=False)
    store = Store(tmp_path / "killed")
    real = step_mod.TrainStep._step

    def killed_at_900(self):
        if int(self.step_t) == 900:  # after both early members left (they stop near step 500)
            raise KeyboardInterrupt
        real(self)
    monkeypatch.setattr(step_mod.TrainStep, "_step", killed_at_900)
    with pytest.raises(KeyboardInterrupt):
        train(cfgs, store=store, progress=False)
    monkeypatch.setattr(step_mod.TrainStep, "_step", real)
    assert [r["status"] for r in store.list()] == ["finished", "finished", "stopped"]
    ckpt = store.paths.checkpoint(store.list()[0]["group_id"])
    tensors, meta = read_tensors(ckpt)
    (ledger,) = ckpt.parent.glob("checkpoint.ledger-*.safetensors")
    assert tensors["params"].shape[0] == 1 and meta["ledger"] == ledger.name and json.loads(meta["live"]) == [2]
    assert meta["format"] == "groklab-checkpoint-3"  # a reader of format 2 refuses it rather than misread it
    kept = ledger.read_bytes()
    ledger.unlink()
    with pytest.raises(CheckpointError, match=f"keeps the members that left in '{ledger.name}'.*does not exist"):
        resume(1, store)
    write_tensors(ledger, {"params": torch.zeros(3, tensors["params"].shape[1])}, {})  # valid, but not the ledger
    with pytest.raises(CheckpointError, match="which holds other contents"):
        resume(1, store)
    ledger.write_bytes(kept)
    resumed = resume(1, store)
    cols = ["step", "train_loss", "val_loss", "val_acc", "param_norm"]
    for a, b in zip(whole, resumed):
        assert a.status == b.status and a.metrics[cols].equals(b.metrics[cols])
        mine, theirs = load_weights(b.run_id, store), load_weights(a.run_id, Store(tmp_path / "whole"))
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert [p.name for p in ckpt.parent.iterdir()] == ["checkpoint.safetensors"]  # whole again


def test_extending_a_finished_group_equals_training_it_to_the_new_budget(tmp_path):
    """`extend` copies a finished group to a new one with a larger budget: the members that ran to
    the old budget train on exactly as a run given the new budget from the start would (batches,
    dropout and noise are functions of seed and step), the early-stopped ones stay as they ended,
    and the original rows, metrics and checkpoint are left as they were."""
    from groklab.api import extend, load_weights
    from groklab.store import Store

    store = Store(tmp_path / "s")
    short = train(early_stopping_group(), store=store, progress=False)
    assert [r.status for r in short] == ["finished"] * 3 and short[2].summary["steps"] == 1200
    ckpt = store.paths.checkpoint(store.get(1)["group_id"])
    before = ckpt.read_bytes()
    longer = extend(short[2].run_id, 2000, store)
    direct = train([with_overrides(c, {"train.steps": 2000}) for c in early_stopping_group()],
                   store=Store(tmp_path / "direct"), progress=False)
    cols = ["step", *MEMBER_COLS]
    for old, ext in zip(short, longer):
        assert ext.run_id not in (r.run_id for r in short) and ext.config.train.steps == 2000
        assert ext.parent == old.run_id and store.get(old.run_id)["parent"] is None  # the lineage, in the rows
        assert ext.metrics[ext.metrics["step"] <= 1200][cols].equals(old.metrics[cols])  # the history, copied
    for old, ext in zip(short[:2], longer[:2]):  # stopped early: as they ended
        assert ext.metrics[cols].equals(old.metrics[cols]) and ext.summary["step_val_99"] == old.summary["step_val_99"]
    # Trained on: as the member of a group given 2 000 steps from the start. (Its early members
    # stop elsewhere: the log-spaced evaluation steps depend on the budget.)
    ext, ref = longer[2], direct[2]
    tail = ext.metrics[ext.metrics["step"] >= 1200][cols].reset_index(drop=True)
    assert len(tail) > 1 and tail.equals(ref.metrics[ref.metrics["step"] >= 1200][cols].reset_index(drop=True))
    assert ext.status == ref.status and ext.summary["step_val_99"] == ref.summary["step_val_99"]
    mine, theirs = load_weights(ext.run_id, store), load_weights(ref.run_id, Store(tmp_path / "direct"))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert [len(store.metrics(r.run_id)) for r in short] == [len(r.metrics) for r in short]
    assert store.get(3)["status"] == "finished" and store.get(3)["config"]["train"]["steps"] == 1200
    assert ckpt.read_bytes() == before


def test_extending_past_an_early_stop_equals_the_run_trained_without_it(tmp_path):
    """`extend --no-early-stop`: a run that stopped early at S trains on from S with early stop off,
    to the weights and metrics of that config trained without early stop from the start. An
    ensemble member that stopped before its group's last step cannot (the members train in step)."""
    from groklab.api import extend, load_weights
    from groklab.store import Store

    store, ref_store = Store(tmp_path / "s"), Store(tmp_path / "ref")
    cfg = load_config("quickstart", [*TINY_GROK, "data.frac_train=0.6", "train.early_stop=true",
                                     "train.steps=2500", CPU])
    # Two members that stop at the same step: a solo run's case, and an ensemble's whose members
    # all stopped at its last step.
    short, twin = train([cfg, cfg], store=store, progress=False)
    stop = short.summary["steps"]
    assert short.summary["early_stopped"] and stop < 2000 and twin.summary["steps"] == stop
    with pytest.raises(ConfigError, match="--no-early-stop trains an early-stopped run on"):
        extend(short.run_id, 3000, store)
    longer = extend(short.run_id, 3000, store, past_early_stop=True)
    (ref,) = train(with_overrides(cfg, {"train.early_stop": False, "train.steps": 3000}), store=ref_store,
                   progress=False)
    cols = ["step", *MEMBER_COLS]
    after = lambda r: r.metrics[r.metrics["step"] > stop][cols].reset_index(drop=True)  # noqa: E731
    theirs = load_weights(ref.run_id, ref_store)
    for ext, old in zip(longer, (short, twin)):
        assert ext.config == ref.config and ext.parent == old.run_id
        assert ext.status == "finished" and not ext.summary["early_stopped"] and ext.summary["steps"] == 3000
        assert len(after(ext)) > 5 and after(ext).equals(after(ref))
        mine = load_weights(ext.run_id, store)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert store.get(short.run_id)["summary"]["early_stopped"]  # the original as it was
    group = train(early_stopping_group(), store=store, progress=False)  # two stop near 500, one goes to 1 200
    with pytest.raises(ConfigError, match=rf"run {group[0].run_id} stopped early at step \d+, before its group's "
                                          r"last step \(1200\)"):
        extend(group[2].run_id, 2000, store, past_early_stop=True)


def test_extend_refuses_what_would_not_be_the_run_continued(tmp_path):
    from groklab.api import extend
    from groklab.store import Store

    store = Store(tmp_path / "s")
    train(tiny(steps=40), store=store, progress=False)
    with pytest.raises(ConfigError, match=r"steps=40 must be an integer above the run's train.steps \(40\)"):
        extend(1, 40, store)
    train(tiny("quickstart", "optim.schedule=cosine", steps=40), store=store, progress=False)
    with pytest.raises(ConfigError, match="optim.schedule='cosine' decays over train.steps"):
        extend(2, 80, store)
    store.update_runs({1: ("stopped", {})})
    with pytest.raises(ConfigError, match=r"run 1 is stopped: `groklab resume 1` trains it to its budget first"):
        extend(1, 80, store)
    early = [*TINY_GROK, "data.frac_train=0.6", "train.early_stop=true"]  # val 99 % near step 1 500
    train(load_config("quickstart", early), store=store, progress=False)
    assert store.get(3)["summary"]["steps"] < 4000
    with pytest.raises(ConfigError, match="run 3's group ended before its budget of 4000 steps"):
        extend(3, 6000, store)
    assert len(store.list()) == 3  # nothing was created
