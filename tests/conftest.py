"""Shared fixtures: tiny, fast configs (one thread: tests share 2 cores)."""
from __future__ import annotations

import pytest
import torch

from groklab import load_config

torch.set_num_threads(1)

# Bitwise repeatability and member == solo to ~1e-5 are guarantees of the CPU (docs/gpu.md: on CUDA,
# kernels round differently for N members and for 1, and resumed runs agree within rtol 1e-3). A
# test asserting them pins the CPU, so the suite also passes with train.device = auto on a CUDA
# machine; test_cuda.py checks the same properties on CUDA within the documented tolerance.
CPU = "train.device=cpu"

# Tests that start worker processes or a Ray cluster share one xdist worker (scripts/test.sh runs
# `--dist loadgroup`): two of them at once on 2 cores would oversubscribe the cores and stretch
# the kill and Ctrl-C tests' waits.
PROCESSES = pytest.mark.xdist_group("processes")

# A problem that groks in ~2 s on one thread: train 99 % near step 550, val 99 % near 1550 (seed 0).
TINY_GROK = ["data.p=47", "data.frac_train=0.4", "model.d_model=64", "model.d_hidden=128", "optim.lr=3e-3",
             "train.steps=4000", "train.threads=1", "train.batch_size=128", "train.eval_every=50"]


@pytest.fixture
def tiny_grok_cfg():
    return load_config("quickstart", TINY_GROK)


def tiny(preset: str = "quickstart", *extra: str, steps: int = 60):
    """A few-second config on a small modulus."""
    return load_config(preset, ["data.p=23", "train.threads=1", f"train.steps={steps}", "train.eval_every=20",
                                "train.batch_size=64", "train.early_stop=false", *extra])


MEMBER_COLS = ["train_loss", "val_loss", "train_acc", "val_acc", "param_norm"]


def ctrl_c_at(monkeypatch, step: int):
    """Make `groklab.train.train` (which the sweep and Ray workers look up at call time) stop at
    the first evaluation at or after `step` as Ctrl-C would (KeyboardInterrupt inside training:
    the rows `stopped`, the checkpoint kept). Undo with `monkeypatch.undo()`."""
    import groklab.train as gt
    real = gt.train

    def stopping(cfgs, hooks=(), **kw):
        def ctrl_c(at, state):
            if at >= step:
                raise KeyboardInterrupt
        return real(cfgs, hooks=[*hooks, ctrl_c], **kw)

    monkeypatch.setattr(gt, "train", stopping)


def child_context():
    """The multiprocessing context for a child process that trains. Forked children start at once,
    but on a machine with a CUDA device the parent's first backward starts autograd's per-device
    threads, after which a forked child cannot run backward at all (PyTorch refuses: "Unable to
    handle autograd's threading in combination with fork-based multiprocessing"), even on the CPU.
    There they are spawned: a fresh interpreter, the same `sys.path`."""
    import multiprocessing as mp
    return mp.get_context("spawn" if torch.cuda.is_available() else "fork")


def early_stopping_group(**extra):
    """Three members of a tiny grokking problem: two stop early (fractions 0.8, 0.7, near step 500)
    and leave the batched model, one (0.4) trains on to step 1 200; a checkpoint every 100 steps."""
    from groklab import with_overrides
    base = load_config("quickstart", [*TINY_GROK, "train.steps=1200", "train.early_stop=true",
                                      "train.early_stop_patience=2", "train.checkpoint_every=100",
                                      "model.dropout=0.1", CPU,  # bitwise member == solo: a CPU guarantee
                                      *[f"{k}={v}" for k, v in extra.items()]])
    return [with_overrides(base, {"data.frac_train": f, "train.seed": s}) for s, f in [(0, 0.8), (2, 0.7), (1, 0.4)]]


def member_and_solo(base):
    """Train seed 0 and a member differing in seed, fraction and lr as one ensemble, and that second
    member alone: (ensemble results, solo result), for member == solo checks."""
    from groklab import with_overrides
    from groklab.train import train
    members = [with_overrides(base, {"train.seed": 0}),
               with_overrides(base, {"train.seed": 3, "data.frac_train": 0.6, "optim.lr": 2e-3})]
    return train(members, progress=False), train(members[1], progress=False)[0]


@pytest.fixture
def store(tmp_path):
    from groklab.store import Store
    return Store(tmp_path / "runs")


# How a user stops a command, and the exit code it must then end with (128 + the signal).
STOPS = {"ctrl-c": 130, "hangup": 129, "sigterm": 143}


def stop_command(cmd: list[str], ready, stop: str, *, env=None, wait_s: float = 120) -> tuple[int, str, list[str]]:
    """Start `cmd` in a session of its own, as a terminal would (SIGINT as a shell leaves it), wait
    until `ready()` holds (or it exits, or `wait_s`), then stop it: "ctrl-c" and "hangup" (a
    closed terminal) signal its whole process group, "sigterm" (`timeout`, a scheduler) the
    command alone. Returns its exit code, its stderr, and the processes of its group still alive
    10 s after it ended (none, when it took its workers and their helpers with it)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.2)
    if stop == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, {"ctrl-c": signal.SIGINT, "hangup": signal.SIGHUP}[stop])
    _, err = proc.communicate(timeout=wait_s)
    for _ in range(100):
        left = processes_left(proc.pid)
        if not left:
            break
        time.sleep(0.1)
    return proc.returncode, err.decode(errors="replace"), left


def processes_left(group: int) -> list[str]:
    """The live processes (pid, state, command) of process group `group`; zombies do not count."""
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(group)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[1][0] != "Z"]
