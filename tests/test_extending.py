"""docs/extending.md, run as written: a task and a model added from one module each, trained by
the engine, validated at the config boundary (a sweep's dry run included)."""
import re
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from groklab import load_config
from groklab.config import ConfigError
from groklab.data import TASKS
from groklab.models import MODELS, build_model
from groklab.models.mlp import MLP
from groklab.sweep import expand, load_spec
from groklab.train import train

from conftest import CPU

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BASE = ["data.task=parity", "model.name=bag", "model.d_model=16", "model.d_hidden=32", "train.steps=30",
        "train.eval_every=10", "train.batch_size=32", "train.threads=1", "data.frac_train=0.5"]


@pytest.fixture
def extensions():
    """Execute the page's Python blocks in a fresh module; unregister what they added afterwards."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    module = types.ModuleType("doc_extensions")
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), module.__dict__)
    yield module
    TASKS.remove("parity")
    MODELS.remove("bag")


def test_doc_task_and_model_train(extensions):
    cfg = load_config("quickstart", BASE + ["data.options.n_bits=6"])
    assert cfg.data.options == extensions.ParityTask.Options(n_bits=6, k=3)
    assert cfg.model.options.pool == "sum"
    [res] = train(cfg, progress=False)
    assert res.status == "finished" and len(res.metrics) > 1
    assert res.metrics["train_acc"].between(0, 1).all()


def test_doc_extension_ensemble_member_equals_solo(extensions):
    a = load_config("quickstart", BASE + [CPU, "train.seed=0", "model.options.pool=mean"])
    b = load_config("quickstart", BASE + [CPU, "train.seed=5", "optim.lr=2e-3", "model.options.pool=mean"])
    ens = train([a, b], progress=False)
    solo = train(b, progress=False)[0]
    for col in ("train_loss", "val_loss", "param_norm"):
        assert torch.equal(torch.tensor(ens[1].metrics[col].values), torch.tensor(solo.metrics[col].values))


@pytest.mark.parametrize("extra,match", [
    (["data.options.k=9"], r"data.options.k=9 must be at most data.options.n_bits=8"),    # the task's validate
    (["data.options.n_bits=40"], r"data.options.n_bits=40 must be in \[1, 16\]"),         # its Options ranges
    (["data.options.bits=4"], r"unknown field 'data.options.bits'"),                       # unknown option
    (["model.options.pool=max"], r"model.options.pool='max' must be one of 'sum', 'mean'"),
    (["model.name=mlp", "model.options.pool=sum"], r"model.options=.* must be empty"),     # mlp has no options
])
def test_doc_extension_bad_options(extensions, extra, match):
    with pytest.raises(ConfigError, match=match):
        load_config("quickstart", BASE + extra)


def test_sweep_dry_run_rejects_what_a_run_rejects(extensions):
    spec = load_spec("quickstart", grid={"data.options.k": (2, 9)}, overrides=BASE)
    with pytest.raises(ConfigError, match=r"sweep point \(data.options.k=9\).*must be at most"):
        expand(spec)
    rnn = load_spec("quickstart", grid={"model.activation": ("gelu", "tanh")}, overrides=["model.name=rnn"])
    with pytest.raises(ConfigError, match=r"model.activation='gelu' must be one of 'tanh', 'relu'"):
        expand(rnn)


def test_layer_without_reset_raises():
    class Bare(nn.Module):  # owns a parameter but cannot initialize it
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(1, 3))

    cfg = load_config("quickstart", ["data.p=11"])
    task = TASKS.get("modular")().build(cfg.data)
    model = build_model(cfg.model, task, 1)
    assert isinstance(model, MLP)
    model.extra = Bare()
    with pytest.raises(TypeError, match="Bare owns parameters but has no reset"):
        model.reset_parameters([torch.Generator().manual_seed(0)], torch.ones(1))
