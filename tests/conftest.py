"""Shared fixtures: tiny, fast configs (one thread: tests share 2 cores)."""
from __future__ import annotations

import pytest
import torch

from groklab import load_config

torch.set_num_threads(1)

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


@pytest.fixture
def store(tmp_path):
    from groklab.store import Store
    return Store(tmp_path / "runs")
