"""`groklab merge`: another store's groups copied in whole (rows, metrics, files) under new ids,
the source only read, nothing here overwritten, and what cannot come over left with a reason."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3

import pytest
import torch

from groklab.api import extend, load_run, load_weights, run
from groklab.cli import main
from groklab.config import ConfigError
from groklab.merge import merge
from groklab.store import SCHEMA_VERSION, Store, StoreError, _proc_start

from test_robustness import SCHEMA_1

FAST = ["data.p=23", "train.steps=40", "train.eval_every=10", "train.threads=1", "train.device=cpu"]
SAME = ["name", "status", "config", "summary", "sweep", "created", "updated", "member", "group_id",
        "groklab_version", "torch_version", "git_sha"]


def _digest(root) -> dict:
    """Every file's bytes, the database's included (SQLite's -wal / -shm working files aside: a
    reader may create them, empty of changes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


@pytest.fixture
def source(tmp_path):
    """A store with a two-seed ensemble of a sweep, a solo run, its extension, and a file a hook
    left in the solo run's folder."""
    st = Store(tmp_path / "src")
    run("quickstart", FAST, seeds=[0, 1], store=st, sweep="sw")
    solo = run("quickstart", FAST, store=st)
    (st.paths.group_dir(solo.group) / "snapshots").mkdir()
    (st.paths.group_dir(solo.group) / "snapshots" / "step-40.safetensors").write_bytes(b"snapshot bytes")
    extend(solo.run_id, 60, st)
    st.close()
    return st


def test_merge_copies_groups_whole_under_new_ids_and_twice_adds_nothing(source, tmp_path):
    dst = Store(tmp_path / "dst")
    run("quickstart", FAST, store=dst)  # ids 1.. are taken here
    before = _digest(source.paths.root)
    rep = merge(source.paths.root, dst)
    assert rep.groups == 3 and rep.skipped == {} and sorted(rep.merged) == [1, 2, 3, 4]
    assert sorted(rep.merged.values()) == [2, 3, 4, 5]
    src = Store(source.paths.root, read_only=True)
    for a, b in rep.merged.items():
        theirs, ours = src.get(a), dst.get(b)
        assert {k: theirs[k] for k in SAME} == {k: ours[k] for k in SAME}
        assert src.metrics(a).equals(dst.metrics(b))
        mine, orig = load_weights(b, dst), load_weights(a, src)
        assert mine.keys() == orig.keys() and all(torch.equal(mine[k], orig[k]) for k in orig)
    assert dst.get(rep.merged[4])["parent"] == rep.merged[3]  # the extension names its parent's new id
    solo_group = dst.get(rep.merged[3])["group_id"]
    assert (dst.paths.group_dir(solo_group) / "snapshots" / "step-40.safetensors").read_bytes() == b"snapshot bytes"
    assert load_run(rep.merged[1], dst).sweep == "sw"
    src.close()
    assert _digest(source.paths.root) == before  # the source is only read

    rows, metrics = len(dst.list()), dst.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    again = merge(source.paths.root, dst)
    assert again.groups == 0 and again.merged == {} and set(again.skipped.values()) == {"already in this store"}
    assert len(dst.list()) == rows and dst.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == metrics


def test_merge_by_sweep_takes_only_its_groups_and_a_merged_run_resumes(source, tmp_path):
    dst = Store(tmp_path / "dst")
    rep = merge(source.paths.root, dst, sweep="sw")
    assert rep.groups == 1 and [r["name"] for r in dst.list()] == ["quickstart-s0", "quickstart-s1"]
    with pytest.raises(ConfigError, match=r"sweep 'nope' has no runs in .*; its sweeps: sw"):
        merge(source.paths.root, dst, sweep="nope")
    rep = merge(source.paths.root, dst)  # the rest, the ensemble left as it is
    assert rep.groups == 2 and list(rep.skipped.values()) == ["already in this store"]


def test_merge_leaves_out_what_is_training_or_does_not_verify(source, tmp_path):
    src = Store(source.paths.root)
    ens, solo, ext = (src.group(g) for g in dict.fromkeys(r["group_id"] for r in src.list()))
    ppid = os.getppid()  # a live process other than this one "trains" the ensemble
    src.conn.execute("UPDATE runs SET status='running', owner_pid=?, owner_start=?, owner_host=? WHERE group_id=?",
                     (ppid, _proc_start(ppid), socket.gethostname(), ens[0]["group_id"]))
    ckpt = src.paths.checkpoint(solo[0]["group_id"])
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0x40
    ckpt.write_bytes(bytes(data))
    src.close()
    dst = Store(tmp_path / "dst")
    rep = merge(source.paths.root, dst)
    assert rep.groups == 1 and list(rep.merged) == [ext[0]["id"]]
    assert dst.get(rep.merged[ext[0]["id"]])["parent"] is None  # its parent did not come over
    why = rep.skipped
    assert why[ens[0]["group_id"]].startswith(f"run 1 is training (process {ppid} on ")
    assert why[solo[0]["group_id"]].startswith("its checkpoint does not verify")
    assert not dst.paths.group_dir(solo[0]["group_id"]).exists()  # no folder without rows


def test_a_sweeps_reuse_of_a_run_comes_over_with_it(tmp_path):
    from groklab.sweep import load_spec, run_sweep

    src = Store(tmp_path / "src")
    solo = run("quickstart", FAST, store=src)  # a plain run that the sweep below reuses
    spec = load_spec({"name": "sw", "base": "quickstart", "set": FAST,
                      "axes": {"data.frac_train": [0.4, 0.5]}, "seeds": [0]})
    assert [r["id"] for r in run_sweep(spec, store=src, workers=1).plan.reused] == [solo.run_id]
    src.close()
    dst = Store(tmp_path / "dst")
    run("quickstart", FAST + ["train.seed=3"], store=dst)  # ids differ here
    rep = merge(src.paths.root, dst, sweep="sw")
    assert rep.groups == 2
    rows = dst.list(sweep="sw")
    assert sorted(r["id"] for r in rows) == sorted(rep.merged.values())
    assert {r["id"]: r["trained_in"] for r in rows}[rep.merged[solo.run_id]] is None
    assert merge(src.paths.root, dst).groups == 0 and len(dst.list(sweep="sw")) == 2  # twice: the same


def test_a_failed_insert_leaves_no_folder_behind(source, tmp_path, monkeypatch):
    dst = Store(tmp_path / "dst")

    def fail(*a, **k):
        raise StoreError("disk full")
    monkeypatch.setattr(dst, "add_rows", fail)
    with pytest.raises(StoreError, match="disk full"):
        merge(source.paths.root, dst)
    assert dst.list() == [] and not any((dst.paths.root / "groups").iterdir())


def test_read_only_store_reads_an_old_schema_without_migrating_it(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    conn = sqlite3.connect(root / "groklab.db")
    conn.executescript(SCHEMA_1)
    conn.close()
    ro = Store(root, read_only=True)
    (row,) = ro.list()
    assert row["name"] == "old" and row.get("parent") is None
    assert ro.list(sweep="old") == [] and ro.reused() == []  # no reuse table in schema 1
    with pytest.raises(StoreError, match="read-only"):
        ro.update_runs({1: ("stopped", {})})
    ro.close()
    assert sqlite3.connect(root / "groklab.db").execute("PRAGMA user_version").fetchone()[0] == 1
    dst = Store(tmp_path / "dst")
    rep = merge(root, dst)
    assert rep.groups == 1 and dst.get(rep.merged[1])["owner_pid"] is None
    assert dst.metrics(rep.merged[1])["val_acc"].tolist() == [0.25]
    assert dst.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "none", read_only=True).conn


def test_cli_merge_reports_what_it_did(source, tmp_path, capsys):
    dst = ["--store", str(tmp_path / "dst")]
    assert main(["merge", str(source.paths.root), *dst]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"merged 4 run(s) in 3 group(s) from {source.paths.root} into ") and "(here 1-4)" in out
    assert main(["merge", str(source.paths.root), "--json", *dst]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["groups"] == 0 and rep["merged"] == [] and len(rep["skipped"]) == 3


def test_a_group_that_trained_on_there_is_refreshed_here_and_nothing_further_here_is_overwritten(
        tmp_path, monkeypatch, capsys):
    """A run stopped at step 20 (a device run's timeout, say) comes over stopped; resumed there to
    its end, merging again refreshes it here under the same ids (rows, metrics, checkpoint equal to
    the source's). A group complete here, or further here than there, is left as it is."""
    from conftest import ctrl_c_at
    from groklab.api import resume

    src = Store(tmp_path / "src")
    ctrl_c_at(monkeypatch, 20)
    every = ["train.checkpoint_every=10"]
    with pytest.raises(KeyboardInterrupt):
        run("quickstart", FAST + every, seeds=[0, 1], store=src)
    with pytest.raises(KeyboardInterrupt):
        run("quickstart", FAST + every + ["train.seed=5"], store=src)
    monkeypatch.undo()
    ens, solo = (src.group(g) for g in dict.fromkeys(r["group_id"] for r in src.list()))
    dst = Store(tmp_path / "dst")
    run("quickstart", FAST + ["train.seed=9"], store=dst)  # ids differ here
    first = merge(src.paths.root, dst)
    assert first.groups == 2 and {dst.get(i)["status"] for i in first.merged.values()} == {"stopped"}

    resume(ens[0]["id"], src)                       # trained on there ...
    resume(first.merged[solo[0]["id"]], dst)        # ... and this one here, to its end
    ckpt_before = dst.paths.checkpoint(solo[0]["group_id"]).read_bytes()
    rows_before = dst.get(first.merged[solo[0]["id"]])
    ens_ckpt = dst.paths.checkpoint(ens[0]["group_id"]).read_bytes()

    def fail(*a, **k):
        raise StoreError("disk full")
    monkeypatch.setattr(Store, "replace_runs", fail)  # a refresh that fails leaves the group as it was
    with pytest.raises(StoreError, match="disk full"):
        merge(src.paths.root, dst)
    monkeypatch.undo()
    assert dst.paths.checkpoint(ens[0]["group_id"]).read_bytes() == ens_ckpt
    assert [dst.get(first.merged[r["id"]])["status"] for r in ens] == ["stopped", "stopped"]
    assert main(["merge", str(src.paths.root), "--store", str(dst.paths.root)]) == 0
    out = capsys.readouterr().out
    ours = [first.merged[r["id"]] for r in ens]
    assert f"refreshed 2 run(s) in 1 group(s) that trained on there (here {ours[0]}, {ours[1]})" in out
    assert f"group {solo[0]['group_id']} left out: already in this store (there: stopped at step 20; " \
           f"here: finished at step 40; not overwritten)" in out
    src = Store(src.paths.root, read_only=True)
    for r in ens:
        theirs, mine = src.get(r["id"]), dst.get(first.merged[r["id"]])
        assert mine["status"] == "finished" and {k: theirs[k] for k in SAME} == {k: mine[k] for k in SAME}
        assert src.metrics(r["id"]).equals(dst.metrics(mine["id"])) and dst.metrics(mine["id"])["step"].max() == 40
        w_there, w_here = load_weights(r["id"], src), load_weights(mine["id"], dst)
        assert all(torch.equal(w_there[k], w_here[k]) for k in w_there)
    assert dst.paths.checkpoint(solo[0]["group_id"]).read_bytes() == ckpt_before
    assert dst.get(rows_before["id"]) == rows_before
    assert len(dst.list()) == 4 and not list(dst.paths.group_dir("x").parent.glob(".merge-*"))
    rep = merge(src.paths.root, dst)                # twice: nothing more
    assert rep.refreshed == {} and rep.groups == 0 and set(rep.skipped.values()) == {"already in this store"} | {
        rep.skipped[solo[0]["group_id"]]}
