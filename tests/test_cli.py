import json
import subprocess
import sys

import pytest

from groklab.cli import main
from groklab.store import Store

FAST = ["--set", "data.p=23", "--set", "train.steps=40", "--set", "train.threads=1", "--set", "train.batch_size=64"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "groklab.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, fragment", [
    (["run", "quickstart", "--set", "data.frac_train=2"], "data.frac_train=2.0 must be in (0, 1)"),
    (["run", "quickstart", "--set", "model.nme=mlp"], "unknown field 'model.nme'"),
    (["run", "quickstrat"], "did you mean 'quickstart'"),
    (["run", "quickstart", "--set", "steps"], "must look like section.field=value"),
    (["run", "quickstart", "--seeds", "x"], "--seeds='x' must be a count"),
    (["run", "quickstart", "--set", "data.op=x/y", "--set", "data.p=12"], "data.p=12 must be prime"),
    (["show", "7"], "run 7 is not in the store"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, args, fragment):
    proc = _cli(*args, *(["--store", str(tmp_path / "runs")] if args[0] in ("run", "show") else []))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "runs" / "groklab.db").exists() or Store(tmp_path / "runs").list() == []


def test_python_dash_m_groklab_is_the_command(tmp_path):
    """`python -m groklab` (no console script on PATH, a venv not activated) is `groklab`."""
    proc = subprocess.run([sys.executable, "-m", "groklab", "ls", "--store", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no store at" in proc.stderr and proc.stderr.startswith("groklab: error:")


def test_run_json_ls_show_plot(tmp_path, capsys):
    store = ["--store", str(tmp_path / "runs")]
    assert main(["run", "quickstart", "--json", "-q", *FAST, *store]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"run_id", "status", "steps", "train_acc", "val_acc", "train_loss", "val_loss",
                        "step_train_99", "step_val_99", "wall_seconds", "steps_per_second"}
    assert out["run_id"] == 1 and out["status"] == "finished" and out["steps"] == 40
    assert out["step_val_99"] is None  # never reached in 40 steps: null, not a number

    assert main(["run", "quickstart", "--json", "-q", "--seeds", "0,5", *FAST, *store]) == 0
    ens = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in ens] == [2, 3]

    assert main(["ls", "--json", *store]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [1, 2, 3]
    assert main(["ls", *store]) == 0
    assert "quickstart-s5" in capsys.readouterr().out

    assert main(["show", "3", "--json", *store]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["train"]["seed"] == 5 and shown["member"] == 1

    assert main(["show", "1", "--table", "--every", "10", *store]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["step", "train_acc", "val_acc", "weight_norm"] and table[1].split()[0] == "0"

    for ext in ("png", "svg"):
        path = tmp_path / f"curve.{ext}"
        assert main(["plot", "1", "-o", str(path), *store]) == 0
        assert path.stat().st_size > 5000


def test_extend_then_show_and_ls_name_the_run_it_continues(tmp_path, capsys):
    store = ["--store", str(tmp_path / "runs")]
    assert main(["run", "quickstart", "--json", "-q", *FAST, *store]) == 0
    capsys.readouterr()
    assert main(["extend", "1", "--steps", "60", "--json", "-q", *store]) == 0
    ext = json.loads(capsys.readouterr().out)
    assert ext["run_id"] == 2 and ext["steps"] == 60
    assert main(["show", "2", *store]) == 0
    assert "extends run 1 (its metrics and checkpoint, trained on to 60 steps)" in capsys.readouterr().out
    assert main(["show", "1", *store]) == 0
    assert "extends run" not in capsys.readouterr().out
    assert main(["ls", "--json", *store]) == 0
    assert [(r["run_id"], r["parent"]) for r in json.loads(capsys.readouterr().out)] == [(1, None), (2, 1)]
    assert main(["extend", "2", "--steps", "80", "--no-early-stop", "--json", "-q", *store]) == 0  # early stop off
    from groklab.store import Store
    assert json.loads(capsys.readouterr().out)["steps"] == 80
    assert Store(tmp_path / "runs").get(3)["config"]["train"]["early_stop"] is False


def test_show_names_the_lapses_and_spikes_after_the_fit(tmp_path, capsys):
    """`show` reads what happened after the fit from the stored history: here a run that fitted at
    step 10, lost it twice (the second time over two evaluations) and whose loss spiked once after
    falling to 1e-6."""
    from groklab.store import Store

    store = Store(tmp_path / "runs")
    (run,) = store.create_runs([json.dumps({})], ["spiky"], "g1", {})
    acc = [0.1, 1.0, 1.0, 0.4, 1.0, 0.9, 0.7, 1.0]
    loss = [4.0, 1e-6, 1e-6, 2.5, 1e-6, 0.2, 0.8, 1e-7]
    store.log_metrics([(run, 10 * i, k, v) for i, (a, l) in enumerate(zip(acc, loss))
                       for k, v in (("train_acc", a), ("train_loss", l), ("val_acc", 0.0))])
    store.update_runs({run: ("finished", {"steps": 70})})
    assert main(["show", str(run), "--store", str(store.paths.root)]) == 0
    out = capsys.readouterr().out
    assert "fit_lapses             2: train acc back below 99 % at 30 (train acc 0.400, loss 2.5), " \
           "50 (train acc 0.700, loss 0.8)" in out
    assert "loss_spikes            2 (train loss back to" in out
    assert main(["show", str(run), "--json", "--store", str(store.paths.root)]) == 0
    after = json.loads(capsys.readouterr().out)["after_fit"]
    assert after == {"fit_lapses": [{"step": 30, "lowest_train_acc": 0.4, "highest_train_loss": 2.5},
                                    {"step": 50, "lowest_train_acc": 0.7, "highest_train_loss": 0.8}],
                     "loss_spikes": 2}


def test_presets_lists_descriptions(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "power2022-add97" in out and "nanda2023" in out and "quickstart" in out


def test_interventions_listed(capsys):
    assert main(["interventions"]) == 0
    out = capsys.readouterr().out
    assert "weight decay to init" in out and "Lee et al. 2024" in out and "optim.update_noise" in out
